"""Measure the policy worker: decisions per second over newly arrived items, one worker, against
plain single-row INSERT commits per second on the same database in the same run (the
ceiling). Called by scripts/bench.sh on a throwaway PostgreSQL database (DATABASE_URL) and
Redis (REDIS_URL); see bench/README.md.

    python bench/policy_bench.py --items 100000

The database must be migrated and hold nothing but what this script writes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text  # noqa: E402

from app import create_app  # noqa: E402
from app.actors import Actor  # noqa: E402
from app.admin.people import grant_membership  # noqa: E402
from app.audit.models import AuditEvent  # noqa: E402
from app.extensions import db  # noqa: E402
from app.heap import settle_start_up_objects  # noqa: E402
from app.models import Tenant, User, WorkItem  # noqa: E402
from app.policy import versions  # noqa: E402
from app.policy.models import PolicyDecision  # noqa: E402
from app.unit_of_work import commit  # noqa: E402

SYSTEM = Actor.system("bench")
# What the worker must keep (issue #13: it was 3,155/s and 0.89 before the ledger).
GOAL_RATE, GOAL_RATIO = 3000, 0.8
RULES = [
    ("Large deals", "amount > 20000", "steps", "approver >= 10000\nmanager >= amount"),
    ("Small deals", 'amount <= 2500 and region != "LATAM" and discount_pct <= 30',
     "auto_approve", ""),
    ("Reseller credits", 'partner_type == "reseller" and amount <= 5000', "auto_approve", ""),
]


def setup_policy() -> Tenant:
    tenant = Tenant(slug="bench", name="Bench", currency="USD", timezone="America/New_York",
                    calendar_country="US")
    db.session.add(tenant)
    db.session.flush()
    people = {}
    for email, roles, limit in (("author@bench", ("admin",), "0"),
                                ("checker@bench", ("admin",), "0"),
                                ("approver@bench", ("approver",), "50000"),
                                ("approver2@bench", ("approver",), "50000"),
                                ("manager@bench", ("manager",), "10000000")):
        user = User(email=email, name=email.split("@")[0].title())
        db.session.add(user)
        db.session.flush()
        grant_membership(SYSTEM, user=user, tenant=tenant, roles=list(roles),
                         approval_limit=limit)
        people[email] = user
    commit()
    author = Actor.for_user(people["author@bench"])
    draft = versions.create_draft(author, tenant.id)
    for name, condition, outcome, steps in RULES:
        versions.save_rule(author, tenant.id, draft.id, rule_id=None, name=name,
                           condition=condition, outcome=outcome, steps_text=steps)
    versions.save_settings(author, tenant.id, draft.id, max_auto_amount="5000",
                           daily_auto_count="", daily_auto_amount="", qa_sample_pct="2",
                           qa_role="manager", fallback_steps_text="approver >= amount",
                           risk={"base": "5", "per_10k": "10", "per_discount_pct": "1",
                                 "max_auto_risk": "70"})
    versions.submit_version(author, tenant.id, draft.id)
    commit()
    versions.activate_version(Actor.for_user(people["checker@bench"]), tenant.id, draft.id)
    commit()
    return tenant


def arrive(tenant: Tenant, count: int) -> None:
    """`count` approvals that have just arrived under the policy (item rows and their
    undecided receipts, as create_item leaves them), loaded with COPY."""
    from app.demo.seed import BulkWriter

    rng = random.Random(7)
    writer = BulkWriter(batch=20000)
    now = datetime.now(UTC)
    start = (db.session.scalar(select(func.max(WorkItem.id))) or 0) + 1
    for item_id in range(start, start + count):
        # Newly arrived routine work: mostly small, a long tail of large items.
        amount = Decimal(str(round(100 * (60000 / 100) ** (rng.random() ** 1.6), 2)))
        writer.add(WorkItem.__table__, dict(
            id=item_id, tenant_id=tenant.id, kind="approval", subtype="discount",
            title=f"Bench approval {item_id}", external_ref=f"B-{item_id}",
            source_system="bench", counterparty=f"Customer {item_id % 500}",
            region=rng.choice(["NA", "EMEA", "APAC", "LATAM"]), product_line="Core Platform",
            partner_type=rng.choice(["reseller", "referral", None]), amount=amount,
            currency="USD", priority="normal", risk_score=None, state="pending",
            requester_id=None, assignee_id=None, created_at=now, claimed_at=None,
            first_action_at=None, resolved_at=None, sla_due_at=now + timedelta(hours=8),
            sla_state="on_track", sla_paused_at=None, policy_version=None,
            details={"discount_pct": str(rng.randint(0, 40))}, amount_at_risk=None,
            claimed_amount=None, calculated_amount=None, adjustment_amount=None,
            resolution_code=None, last_actor_id=None, last_action_at=now, version=1))
        writer.add(PolicyDecision.__table__, dict(item_id=item_id, tenant_id=tenant.id,
                                                  arrived_at=now))
    writer.flush()
    db.session.execute(text("SELECT setval(pg_get_serial_sequence('work_items', 'id'), "
                            "(SELECT MAX(id) FROM work_items))"))
    commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE work_items"))
        conn.execute(text("VACUUM ANALYZE policy_decisions"))


def insert_ceiling(seconds: float) -> float:
    """Plain single-row INSERT commits per second on the same database, one connection."""
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial PRIMARY KEY, "
                       "payload text NOT NULL)")
        raw.commit()
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            cursor.execute("INSERT INTO bench_ceiling (payload) VALUES (%s)", ("x" * 64,))
            raw.commit()
            n += 1
        elapsed = time.perf_counter() - started
        cursor.execute("DROP TABLE bench_ceiling")
        raw.commit()
        return n / elapsed
    finally:
        raw.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--ceiling-seconds", type=float, default=5.0)
    parser.add_argument("--relay", action=argparse.BooleanOptionalAction, default=True,
                        help="hand each commit's outbox messages to RQ, as a worker does")
    parser.add_argument("--output",
                        default=str(Path(__file__).parent / "results" / "policy-latest.json"))
    args = parser.parse_args()
    app = create_app({"OUTBOX_RELAY_ON_COMMIT": args.relay,
                      "POLICY_SWEEP_SECONDS": 10**6})
    settle_start_up_objects()  # as a worker started from wsgi.py does
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            print("the policy bench needs PostgreSQL (DATABASE_URL)", file=sys.stderr)
            return 2
        tenant = setup_policy()
        print(f"arriving {args.items:,} items …", flush=True)
        arrive(tenant, args.items)
        ceiling_before = insert_ceiling(args.ceiling_seconds)
        from app.policy.jobs import sweep_undecided

        events_before = db.session.scalar(select(func.count()).select_from(AuditEvent))
        started = time.perf_counter()
        decided = sweep_undecided(batch=args.batch)
        elapsed = time.perf_counter() - started
        ceiling_after = insert_ceiling(args.ceiling_seconds)
        outcomes = dict(db.session.execute(select(PolicyDecision.outcome, func.count())
                                           .group_by(PolicyDecision.outcome)).all())
        events = db.session.scalar(select(func.count()).select_from(AuditEvent)) - events_before
        from app.audit.services import verify_chain

        report_chain = verify_chain(tenant.id)
        ceiling = (ceiling_before + ceiling_after) / 2
        rate = decided / elapsed
        report = {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "items": args.items, "batch": args.batch, "relay_to_rq": args.relay,
            "decided": decided, "seconds": round(elapsed, 2),
            "decisions_per_second": round(rate),
            "insert_commits_per_second": round(ceiling),
            "ceiling_before_after": [round(ceiling_before), round(ceiling_after)],
            "ratio_to_ceiling": round(rate / ceiling, 3),
            "outcomes": outcomes, "audit_events_written": events,
            "audit_chain_ok": report_chain.ok,
            "goal": {"ratio": GOAL_RATIO, "decisions_per_second": GOAL_RATE},
        }
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        met = (rate >= GOAL_RATE and rate / ceiling >= GOAL_RATIO and report_chain.ok
               and decided == args.items)
        print(f"policy: {rate:,.0f} decisions/s, {rate / ceiling:.2f} of {ceiling:,.0f} "
              f"single-row INSERT commits/s — {'goal met' if met else 'GOAL NOT MET'}")
        return 0 if report_chain.ok and decided == args.items else 1


if __name__ == "__main__":
    sys.exit(main())
