"""How exported audit events are written: every hashed field exactly as it was hashed, so
tools/verify_audit_export.py can recompute each hash and link from the file alone.

CSV cells are strings, so two conventions keep them exact: a missing value (SQL NULL) is
written `\\N`, and a text that starts with one of `= + - @ ' \\`, a tab or a carriage return
gets one leading `'` (which also stops spreadsheets from running it as a formula). A reader
drops that one `'` and turns `\\N` back into nothing. Integers are plain numbers; `data` is the
event's canonical JSON.
"""
from __future__ import annotations

import json

from sqlalchemy import DateTime, Text, cast, func, select, type_coerce

from app.audit.chain import HASHED_FIELDS
from app.audit.models import AuditEvent

FORMAT_VERSION = 1
COLUMNS = (*HASHED_FIELDS, "hash")
INTEGER_COLUMNS = frozenset({"chain_id", "seq", "tenant_id", "actor_id", "on_behalf_of_id",
                             "item_id"})
NULL = "\\N"
_NEEDS_QUOTE = ("=", "+", "-", "@", "'", "\\", "\t", "\r")

canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False).encode


def event_columns(dialect: str) -> list:
    """The columns of an export row, as the verifier reads them too: the time as a naive UTC
    datetime, the data as its stored JSON text."""
    table = AuditEvent.__table__.c
    columns = []
    for name in COLUMNS:
        column = table[name]
        if name == "occurred_at":
            column = type_coerce(func.timezone("UTC", column) if dialect == "postgresql"
                                 else column, DateTime())
        elif name == "data":
            column = cast(column, Text)
        columns.append(column)
    return columns


def events_query(dialect: str, chain_id: int, starts_at=None, ends_before=None):
    table = AuditEvent.__table__.c
    query = select(*event_columns(dialect)).where(table.chain_id == chain_id)
    if starts_at is not None:
        query = query.where(table.occurred_at >= starts_at)
    if ends_before is not None:
        query = query.where(table.occurred_at < ends_before)
    return query.order_by(table.seq)


def record_of(row) -> dict:
    """One event as the plain values that were hashed (plus its hash)."""
    record = dict(zip(COLUMNS, row))
    record["occurred_at"] = record["occurred_at"].isoformat() + "+00:00"
    record["data"] = json.loads(record["data"])
    return record


def jsonl_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def jsonl_header(meta: dict) -> str:
    return json.dumps({"cleardesk_audit_export": {"version": FORMAT_VERSION, **meta}},
                      ensure_ascii=False, separators=(",", ":")) + "\n"


def csv_cell(name: str, value) -> str | int:
    if value is None:
        return NULL
    if name == "data":
        return canonical_json(value)
    if name in INTEGER_COLUMNS:
        return value
    if value.startswith(_NEEDS_QUOTE):
        return "'" + value
    return value


def csv_row(record: dict) -> list:
    return [csv_cell(name, record[name]) for name in COLUMNS]
