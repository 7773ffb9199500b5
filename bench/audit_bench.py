"""Measure the audit trail: `audit verify`'s rate on a large chain, and decision throughput
with the hash chain against the same decisions without it, in the same run. Called by
scripts/bench.sh on a throwaway PostgreSQL database (DATABASE_URL); see bench/README.md.

    python bench/audit_bench.py --events 1000000 --decisions 400 --writers 1,4

The database must be migrated and hold nothing but what this script writes.
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text  # noqa: E402

from app import create_app  # noqa: E402
from app.actors import Actor  # noqa: E402
from app.types import jsonable  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import Membership, MembershipRole, Role, Tenant, User  # noqa: E402
from app.unit_of_work import commit  # noqa: E402

USER_AGENT = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.5 Safari/605.1.15")


def make_app():
    return create_app({"OUTBOX_RELAY_ON_COMMIT": False})


# --- 1. a large chain ----------------------------------------------------------------------

def generate_events(total: int, tenants: int = 3, progress=print) -> dict:
    """`total` events over `tenants` chains, hashed by the same code that seeds the demo
    (app.demo.seed.Chain, which calls event_hash) and loaded with COPY. Each item's life is
    what the app writes: created, claimed, a comment on some, decided with IP and agent."""
    from app.demo.seed import BulkWriter, Chain

    people = [User(email=f"bench{i}@cleardesk.bench", name=f"Bench {i}") for i in range(4)]
    db.session.add_all(people)
    rows = [Tenant(slug=f"bench-{i}", name=f"Bench {i}", currency="USD", timezone="UTC",
                   calendar_country="US") for i in range(tenants)]
    db.session.add_all(rows)
    db.session.flush()
    writer = BulkWriter(batch=50000)
    chains = [Chain(t.id, t.id, writer) for t in rows]
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    requester, approver, analyst, _ = people
    written = 0
    item_id = 0
    while written < total:
        for chain in chains:
            item_id += 1
            when = start + timedelta(seconds=item_id * 7, microseconds=(item_id * 7919) % 10**6)
            amount = Decimal(1000 + item_id % 90000) / 100
            life = [
                (requester, "item.created", dict(to_state="pending", data={
                    "kind": "approval", "subtype": "discount", "amount": amount,
                    "currency": "USD", "external_ref": f"SF-{item_id:08d}",
                    "source_system": "salesforce"})),
                (approver, "item.claimed", dict(data={"assignee_id": approver.id})),
            ]
            if item_id % 3 == 0:
                life.append((analyst, "item.commented", dict(
                    comment=f"Checked against contract {item_id}; the discount matches "
                            "the renewal terms agreed in Q3.", data={})))
            life.append((approver, "item.approve", dict(
                from_state="pending", to_state="approved", comment=None,
                data={"step": 1, "amount": amount, "policy_version": None,
                      "ip": f"10.0.{item_id % 250}.{item_id % 199}",
                      "user_agent": USER_AGENT})))
            for offset, (actor, action, kwargs) in enumerate(life):
                if written >= total:
                    break
                chain.append(when + timedelta(minutes=offset * 13), actor, action,
                             item_id=item_id, **kwargs)
                written += 1
        if written % 100000 < len(chains) * 4:
            progress(f"  {written:,} / {total:,} events")
    for chain in chains:
        chain.close()
    db.session.execute(text(
        "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), "
        "(SELECT MAX(id) FROM audit_events))")) if writer.postgres else None
    commit()
    db.session.execute(text("ANALYZE audit_events")) if writer.postgres else None
    commit()
    return {"events": written, "chains": tenants}


def time_verify() -> dict:
    from app.audit.services import verify_all

    started = time.perf_counter()
    reports = verify_all()
    seconds = time.perf_counter() - started
    events = sum(r.events for r in reports)
    broken = [r.problem for r in reports if not r.ok]
    if broken:
        raise SystemExit(f"audit verify found the bench chain broken: {broken}")
    return {"events": events, "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds)}


# --- 2. decisions with and without the chain ----------------------------------------------

_private_seq = itertools.count(1)


def unchained_record_event(actor, action, *, tenant_id, item_id=None, from_state=None,
                           to_state=None, comment=None, on_behalf_of_id=None, data=None):
    """record_event without the chain, for comparison only: the same event row and the same
    JSON work, but no head row (neither its lock nor its two updates) and no hash. Each
    process writes into a private chain id so sequence numbers never collide."""
    payload = dict(data or {})
    if actor.ip:
        payload.setdefault("ip", actor.ip)
    if actor.user_agent:
        payload.setdefault("user_agent", actor.user_agent[:300])
    fields = {
        "chain_id": -os.getpid(), "seq": next(_private_seq), "tenant_id": tenant_id,
        "occurred_at": datetime.now(UTC), "actor_type": actor.type.value,
        "actor_id": actor.user_id, "actor_label": actor.label or actor.type.value,
        "on_behalf_of_id": on_behalf_of_id, "action": action, "item_id": item_id,
        "from_state": from_state, "to_state": to_state, "comment": comment,
        "data": jsonable(payload), "prev_hash": "", "hash": "",
    }
    db.session.execute(_UNCHAINED_INSERT, {**fields, "data": json.dumps(fields["data"])})
    return fields


# The chained path's statement (app.audit.services._LINK_ONE) without its head CTE: the same
# row written the same way, so the comparison measures the chain and nothing else.
_UNCHAINED_INSERT = text("""
INSERT INTO audit_events (chain_id, seq, tenant_id, occurred_at, actor_type, actor_id,
                          actor_label, on_behalf_of_id, action, item_id, from_state, to_state,
                          comment, data, prev_hash, hash)
VALUES (CAST(:chain_id AS integer), CAST(:seq AS bigint), CAST(:tenant_id AS integer),
        CAST(:occurred_at AS timestamptz), CAST(:actor_type AS varchar),
        CAST(:actor_id AS integer), CAST(:actor_label AS varchar),
        CAST(:on_behalf_of_id AS integer), CAST(:action AS varchar), CAST(:item_id AS bigint),
        CAST(:from_state AS varchar), CAST(:to_state AS varchar), CAST(:comment AS text),
        CAST(:data AS json), CAST(:prev_hash AS varchar), CAST(:hash AS varchar))
""")


def _use_chain(chained: bool) -> None:
    """Point the write path at record_event or at the unchained variant (bench only)."""
    from app.approvals import services as approvals
    from app.audit import services as audit
    from app.work import services as work

    chosen = audit.record_event if chained else unchained_record_event
    work.record_event = chosen
    approvals.record_event = chosen


def prepare_decisions(count: int) -> tuple[int, int, list[int]]:
    """A tenant, a requester and an approver, and `count` pending one-step approvals."""
    from app.auth.services import create_user
    from app.work.services import create_item

    system = Actor.system("bench")
    tenant = Tenant(slug="bench-decisions", name="Bench Decisions", currency="USD",
                    timezone="UTC", calendar_country="US")
    db.session.add(tenant)
    db.session.flush()
    approver = create_user(system, email="approver@decisions.bench", name="Bench Approver",
                           password="bench-password-long-enough")
    db.session.add(Membership(user=approver, tenant=tenant, approval_limit=Decimal("1000000"),
                              roles=[MembershipRole(role=Role.APPROVER.value)]))
    commit()
    ids = []
    for n in range(count):
        item, _ = create_item(system, tenant_id=tenant.id, kind="approval", subtype="discount",
                              title=f"Bench discount {n}", external_ref=f"BENCH-{n:07d}",
                              source_system="bench", counterparty="Acme Labs",
                              amount=f"{100 + n % 4000}.00")
        ids.append(item.id)
        if n % 500 == 499:
            commit()
    commit()
    return tenant.id, approver.id, ids


def _block_variant(block: int) -> bool:
    """Chain or not for this block, in the order A B B A A B B A ..., so neither variant
    always goes first or always follows the other."""
    return block % 4 in (0, 3)


def _decide_blocks(approver_id: int, item_ids: list[int], blocks: int, barrier, results) -> None:
    """One writer process: approve its items one transaction each, as the browser does, in
    blocks that alternate between the chain and none. Every writer starts and ends each block
    together (the barrier), so the variants share the machine's conditions block by block."""
    from app.approvals.services import approve_step

    app = make_app()
    with app.app_context():
        user = db.session.get(User, approver_id)
        actor = Actor.for_user(user, ip="10.0.0.7", user_agent=USER_AGENT)
        per_block = len(item_ids) // blocks
        times = {True: 0.0, False: 0.0}
        decided = {True: 0, False: 0}
        for block in range(blocks):
            chained = _block_variant(block)
            _use_chain(chained)
            chunk = item_ids[block * per_block:(block + 1) * per_block]
            barrier.wait()
            started = time.perf_counter()
            for item_id in chunk:
                approve_step(actor, item_id)
                commit()
            barrier.wait()  # the block lasts until its slowest writer is done
            times[chained] += time.perf_counter() - started
            decided[chained] += len(chunk)
        db.session.remove()
        db.engine.dispose()
    results.put((decided, times))


def measure_decisions(approver_id: int, item_ids: list[int], writers: list[int],
                      blocks: int, progress=print) -> list[dict]:
    """For each number of concurrent writers, decide the same kind of items in alternating
    blocks with and without the chain, and compare the two variants' rates. Pairing block by
    block (rather than run after run) keeps the drift of a shared machine out of the ratio."""
    share = len(item_ids) // len(writers)
    pool_items = iter(item_ids)
    ctx = multiprocessing.get_context("spawn")
    results = []
    for n_writers in writers:
        chunk = [next(pool_items) for _ in range(share)]
        barrier, queue = ctx.Barrier(n_writers), ctx.Queue()
        processes = [ctx.Process(target=_decide_blocks,
                                 args=(approver_id, chunk[i::n_writers], blocks, barrier, queue))
                     for i in range(n_writers)]
        for process in processes:
            process.start()
        done = [queue.get() for _ in processes]
        for process in processes:
            process.join()
            if process.exitcode:
                raise SystemExit(f"a deciding process failed ({process.exitcode})")
        # Every writer timed the same barrier-to-barrier blocks; take the first one's clock.
        times = done[0][1]
        rate = {v: sum(d[0][v] for d in done) / times[v] for v in (True, False)}
        progress(f"  {n_writers} writer(s): chain {rate[True]:.1f}/s, "
                 f"no chain {rate[False]:.1f}/s over {blocks} alternating blocks")
        results.append({
            "writers": n_writers, "decisions": sum(sum(d[0].values()) for d in done),
            "blocks": blocks,
            "with_chain_per_s": round(rate[True], 1), "without_chain_per_s": round(rate[False], 1),
            "chain_cost_pct": round((1 - rate[True] / rate[False]) * 100, 1),
        })
    return results


# --- the run -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=2400,
                        help="decisions in all (split over writers, blocks, chain/no chain)")
    parser.add_argument("--writers", default="1,4", help="concurrent deciding processes")
    parser.add_argument("--blocks", type=int, default=20,
                        help="alternating blocks, half with the chain, half without")
    parser.add_argument("--parts", default="verify,decisions")
    parser.add_argument("--output",
                        default=str(Path(__file__).parent / "results" / "audit-latest.json"))
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    writers = [int(w) for w in args.writers.split(",") if w]
    if not (0 < args.events <= 20_000_000 and 0 < args.decisions <= 100_000):
        parser.error("keep it bounded: up to 20M events and 100,000 decisions")

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()}}
    app = make_app()
    with app.app_context():
        report["database"] = db.engine.dialect.name
        if db.session.scalar(select(func.count()).select_from(Tenant)):
            parser.error("the database must be empty (migrated, nothing else)")
        if "verify" in parts:
            say(f"generating {args.events:,} chained events")
            started = time.perf_counter()
            report["generated"] = generate_events(args.events, progress=say)
            report["generated"]["seconds"] = round(time.perf_counter() - started, 1)
            say("audit verify")
            report["verify"] = time_verify()
            say(f"  {report['verify']['events']:,} events in {report['verify']['seconds']}s")
        if "decisions" in parts:
            say(f"preparing {args.decisions:,} approvals")
            _tenant_id, approver_id, item_ids = prepare_decisions(args.decisions)
            db.session.remove()
            db.engine.dispose()
            report["decisions"] = measure_decisions(approver_id, item_ids, writers,
                                                    args.blocks, progress=say)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"\nWritten to {output}")
    return 0


def print_report(report: dict) -> None:
    print()
    if "verify" in report:
        v = report["verify"]
        print(f"audit verify: {v['events']:,} events in {v['seconds']:.2f}s = "
              f"{v['events_per_s']:,} events/s on {report['database']} "
              f"(goal >= 50,000/s; generated in {report['generated']['seconds']}s)")
    if "decisions" in report:
        print(f"\n{'writers':>7} {'with chain/s':>13} {'without/s':>10} {'chain cost':>11}")
        for d in report["decisions"]:
            print(f"{d['writers']:>7} {d['with_chain_per_s']:>13.1f} "
                  f"{d['without_chain_per_s']:>10.1f} {d['chain_cost_pct']:>10.1f}%")
        print("(alternating blocks, every writer in the same variant at once; "
              "goal: the chain costs at most 10%)")


if __name__ == "__main__":
    sys.exit(main())
