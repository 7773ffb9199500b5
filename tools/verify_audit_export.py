#!/usr/bin/env python3
"""Check a Cleardesk audit export on its own: every event's hash, and every link to the event
before it. Python 3.9+ and its standard library only; nothing else from Cleardesk is needed.

    python3 verify_audit_export.py audit-northwind-12.jsonl
    python3 verify_audit_export.py audit-northwind-12.csv --expect 4200:9f86d0...

Exit status: 0 when the file is intact, 1 naming the first event that is not, 2 when the file
cannot be read as an export.

How an event's hash is made: take the fields below with the values the file holds, encode
them as JSON with the keys sorted, no spaces (separators "," and ":") and non-ASCII characters
kept as they are (UTF-8), and take the SHA-256 of those bytes, in hexadecimal. `prev_hash` is
the hash of the event before in the tenant's chain (64 zeros before the first one), so a
changed, removed, added or moved event breaks either its own hash or the next link.

In CSV files a cell `\\N` is a missing value, a cell that starts with `'` has that one `'`
removed (it guards texts that start with = + - @ ' \\ and spreadsheets' formulas), the id
columns are integers and `data` is JSON.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys

HASHED_FIELDS = (
    "chain_id", "seq", "tenant_id", "occurred_at", "actor_type", "actor_id", "actor_label",
    "on_behalf_of_id", "action", "item_id", "from_state", "to_state", "comment", "data",
    "prev_hash",
)
INTEGER_FIELDS = {"chain_id", "seq", "tenant_id", "actor_id", "on_behalf_of_id", "item_id"}
GENESIS_HASH = "0" * 64
MOVED_WINDOW = 2000  # how far a moved event's original position is looked for

csv.field_size_limit(1 << 30)


class NotAnExport(Exception):
    pass


def event_hash(event: dict) -> str:
    payload = {name: event[name] for name in HASHED_FIELDS}
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _csv_value(name: str, cell: str):
    if cell == "\\N":
        return None
    if cell.startswith("'"):
        cell = cell[1:]
    if name in INTEGER_FIELDS:
        return int(cell)
    if name == "data":
        return json.loads(cell)
    return cell


def read_events(path: str):
    """Yield (line number, event dict); the JSON Lines header comes back as (0, header)."""
    with open(path, encoding="utf-8", newline="") as f:
        first = f.read(1)
        f.seek(0)
        if first == "{":
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise NotAnExport(f"line {number} is not JSON: {error}") from None
                if "cleardesk_audit_export" in record:
                    yield 0, record["cleardesk_audit_export"]
                    continue
                yield number, record
        else:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not set(HASHED_FIELDS) | {"hash"} <= set(header):
                raise NotAnExport("the CSV header does not have the exported columns")
            for number, row in enumerate(reader, 2):
                if len(row) != len(header):
                    raise NotAnExport(f"line {number} has {len(row)} cells, not {len(header)}")
                try:
                    yield number, {name: _csv_value(name, cell)
                                   for name, cell in zip(header, row)}
                except ValueError as error:
                    raise NotAnExport(f"line {number}: {error}") from None


def _moved_from(event: dict) -> int | None:
    """The sequence number the event was hashed with, if it was moved (renumbered)."""
    probe = dict(event)
    for candidate in range(max(1, event["seq"] - MOVED_WINDOW), event["seq"] + MOVED_WINDOW + 1):
        if candidate != event["seq"]:
            probe["seq"] = candidate
            if event_hash(probe) == event["hash"]:
                return candidate
    return None


def _explain_link(event: dict, content_ok: bool) -> str:
    seq = event["seq"]
    if content_ok:
        return f"event #{seq} does not link to event #{seq - 1}: an event before it was replaced"
    original = _moved_from(event)
    if original is None:
        return (f"event #{seq} does not link to event #{seq - 1} and does not match its hash: "
                "it was forged or edited")
    if original == seq - 1:
        return f"event #{seq} was #{original}: an event was inserted before it"
    return f"event #{seq} was #{original}: events were reordered or renumbered"


def verify(path: str, expected: dict[int, str]) -> tuple[bool, str]:
    """Walk the file's events in order; name the first one that is not intact."""
    header = None
    anchor = None
    chain = None
    count = 0
    first_seq = last_seq = None
    first_prev = prev_hash = None
    seen_expected = set()
    for number, event in read_events(path):
        if number == 0:
            header = event
            anchor = header.get("anchor")
            continue
        missing = [name for name in (*HASHED_FIELDS, "hash") if name not in event]
        if missing:
            raise NotAnExport(f"line {number} lacks {', '.join(missing)}")
        seq = event["seq"]
        if chain is None:
            chain, first_seq, first_prev = event["chain_id"], seq, event["prev_hash"]
            if seq == 1 and event["prev_hash"] != GENESIS_HASH:
                return False, "event #1 does not start the chain: its previous hash is not zeros"
        elif event["chain_id"] != chain:
            return False, f"line {number} belongs to chain {event['chain_id']}, not {chain}"
        elif seq <= last_seq:
            return False, (f"event #{seq} (line {number}) comes after #{last_seq}: events were "
                           "reordered or an event was inserted")
        elif seq > last_seq + 1:
            return False, f"event #{last_seq + 1} is missing: deleted"
        content_ok = event_hash(event) == event["hash"]
        if prev_hash is not None and event["prev_hash"] != prev_hash:
            return False, _explain_link(event, content_ok)
        if not content_ok:
            original = _moved_from(event)
            if original is not None:
                return False, (f"event #{seq} was #{original}: events were reordered "
                               "or renumbered")
            return False, f"event #{seq} was edited: its content no longer matches its hash"
        if seq in expected:
            if expected[seq] != event["hash"]:
                return False, (f"event #{seq} does not have the hash you expected: the chain "
                               "was rewritten since you recorded it")
            seen_expected.add(seq)
        if anchor and seq == anchor["seq"] and anchor["hash"] != event["hash"]:
            return False, (f"event #{seq} does not have the hash anchored at "
                           f"{anchor.get('anchored_at')}: the chain was rewritten")
        prev_hash = event["hash"]
        last_seq = seq
        count += 1
    if header is not None and header.get("events") is not None and header["events"] != count:
        return False, (f"the file holds {count} events but its header says "
                       f"{header['events']}: events were cut off or added")
    unseen = sorted(set(expected) - seen_expected)
    if unseen:
        held = f"#{first_seq}-#{last_seq}" if count else "no events"
        return False, (f"event #{unseen[0]} is not in this file (it holds {held}), so its "
                       "hash could not be compared")
    if count == 0:
        return True, "OK: no events in this file"
    start = ("from the start of the chain" if first_seq == 1 else
             f"from #{first_seq}, whose previous hash {first_prev} you can compare with "
             "the last hash of an earlier export")
    anchored = (f"; matches the anchor #{anchor['seq']} of {anchor.get('anchored_at')}"
                if anchor and first_seq <= anchor["seq"] <= last_seq else "")
    return True, (f"OK: {count} events of chain {chain}, #{first_seq} to #{last_seq}, {start}"
                  f"{anchored}; last hash {prev_hash}")


def _expectation(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError("use SEQ:HASH, e.g. 4200:9f86d081884c7d65…")
    return int(seq), digest.lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="an export: .jsonl (JSON Lines) or .csv")
    parser.add_argument("--expect", type=_expectation, action="append", default=[],
                        metavar="SEQ:HASH",
                        help="a hash you recorded earlier (an anchor shown on the audit page, "
                             "or the last hash of an earlier export); repeatable")
    args = parser.parse_args(argv)
    try:
        ok, message = verify(args.file, dict(args.expect))
    except (OSError, NotAnExport, UnicodeDecodeError) as error:
        print(f"cannot check {args.file}: {error}", file=sys.stderr)
        return 2
    print(message if ok else f"BROKEN: {message}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
