"""Measure administration at scale, each against a ceiling measured in the same run: the People
page of a tenant with many members against the signed-in /ping, SLA due times in a calendar
with many closures against the same calendar without them, and deactivating someone who holds
many claims and open steps. Called by scripts/bench.sh (BENCH_PARTS=admin) on a throwaway
PostgreSQL database (DATABASE_URL); see bench/README.md.

    python bench/admin_bench.py --members 1000 --closures 60 --held 300

The database must be migrated and hold nothing but what this script writes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select  # noqa: E402

from app import create_app  # noqa: E402
from app.actors import Actor  # noqa: E402
from app.admin.models import TenantClosure  # noqa: E402
from app.admin.deactivation import deactivate_user  # noqa: E402
from app.auth.passwords import hash_password  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import Membership, MembershipRole, Tenant, User, WorkItem  # noqa: E402
from app.work.calendar import calendar_for, closure_days  # noqa: E402
from app.work.sla_clock import sla_due_at  # noqa: E402
from app.unit_of_work import commit  # noqa: E402
from app.work.services import create_item  # noqa: E402

PASSWORD = "bench-password-long-enough"
SYSTEM = Actor.system("bench")


def make_app():
    return create_app({"OUTBOX_RELAY_ON_COMMIT": False})


def build(members: int, closures: int, held: int) -> dict:
    password_hash = hash_password(PASSWORD)
    tenant = Tenant(slug="bench-admin", name="Bench Admin", currency="USD",
                    timezone="America/New_York", calendar_country="US")
    plain = Tenant(slug="bench-plain", name="Bench Plain", currency="USD",
                   timezone="America/New_York", calendar_country="US")
    db.session.add_all([tenant, plain])
    db.session.flush()
    people = []
    for i in range(members):
        user = User(email=f"member{i}@admin.bench", name=f"Member {i:05d}",
                    password_hash=password_hash)
        role = "admin" if i < 2 else ("approver" if i % 3 else "requester")
        user.memberships.append(Membership(tenant=tenant, approval_limit=50000,
                                           roles=[MembershipRole(role=role)]))
        if i < 2:
            user.memberships.append(Membership(tenant=plain, approval_limit=0,
                                               roles=[MembershipRole(role="admin")]))
        people.append(user)
    db.session.add_all(people)
    db.session.flush()
    start = date(2026, 1, 5)
    for n in range(closures):  # one closure every ~6 days over the next year
        first = start + timedelta(days=6 * n)
        db.session.add(TenantClosure(tenant_id=tenant.id, first_day=first,
                                     last_day=first + timedelta(days=n % 3), reason=f"c{n}"))
    tenant.calendar_revision = "bench0001"
    commit()

    # Someone who holds `held` open steps (routed to them) and `held` claimed exceptions.
    holder = people[2]
    requester = next(p for p in people if "requester" in p.roles_in(tenant.id))
    for i in range(held):
        create_item(SYSTEM, tenant_id=tenant.id, kind="approval", subtype="discount",
                    title=f"Held {i}", external_ref=f"H-{i}", source_system="bench",
                    counterparty="Acme", amount="100.00", requester_id=requester.id)
        exception, _ = create_item(SYSTEM, tenant_id=tenant.id, kind="billing_exception",
                                   subtype="payment_failed", title=f"Claimed {i}",
                                   external_ref=f"C-{i}", source_system="bench",
                                   counterparty="Acme", amount="50.00")
        exception.assignee_id = holder.id
        if i % 100 == 0:
            commit()
    commit()
    # Route every open step to the holder, as if they had been the least loaded approver.
    from app.models import ApprovalAssignment

    db.session.execute(ApprovalAssignment.__table__.update().values(approver_id=holder.id))
    commit()
    return {"tenant_id": tenant.id, "plain_id": plain.id, "admin": people[0].email,
            "admin_id": people[0].id, "holder_id": holder.id}


def timed(fn, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered), 3),
            "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1], 3), "n": len(ordered)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--closures", type=int, default=60)
    parser.add_argument("--held", type=int, default=300)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--dues", type=int, default=20000)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "admin.json"))
    args = parser.parse_args(argv)

    app = make_app()
    report: dict = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "members": args.members, "closures": args.closures, "held": args.held,
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with app.app_context():
        print(f"  building {args.members} members, {args.closures} closures, {args.held} held "
              "steps and claims", file=sys.stderr)
        world = build(args.members, args.closures, args.held)

    # 1. The People page against the cheapest signed-in request, same client, same process.
    # No app context is held around the requests: each gets its own, as under gunicorn, so
    # the signed-in user is loaded from the database every time.
    import re

    client = app.test_client()
    page = client.get("/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text).group(1)
    client.post("/login", data={"email": world["admin"], "password": PASSWORD,
                                "csrf_token": token})

    def get(path):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)

    for path in ("/ping", "/admin/t/bench-admin/people"):
        get(path)  # warm
    ceiling = summary(timed(lambda: get("/ping"), args.requests))
    people = summary(timed(lambda: get("/admin/t/bench-admin/people"), args.requests))
    report["people_page"] = {"ceiling_ping": ceiling, "people": people,
                             "ratio_p50": round(people["p50_ms"] / ceiling["p50_ms"], 1)}

    # 2. SLA due times with and without closures (the calendar is cached per revision).
    with app.app_context():
        tenant = db.session.get(Tenant, world["tenant_id"])
        plain = db.session.get(Tenant, world["plain_id"])
        starts = [datetime(2026, 1, 5, 13, 0, tzinfo=UTC) + timedelta(minutes=97 * i)
                  for i in range(args.dues)]
        # What a process pays once per change of closures: reading them.
        cold = timed(lambda: closure_days(tenant.id, tenant.calendar_revision), 1)

        def dues(t):
            for moment in starts:
                sla_due_at(t, "approval", "normal", moment)

        without = timed(lambda: dues(plain), 3)
        with_closures = timed(lambda: dues(tenant), 3)
        days_closed = len(calendar_for(tenant).closures)
    per_due_plain = statistics.median(without) / args.dues * 1000
    per_due_closed = statistics.median(with_closures) / args.dues * 1000
    report["sla_due"] = {"dues": args.dues, "closed_days": days_closed,
                         "us_per_due_without_closures": round(per_due_plain, 2),
                         "us_per_due_with_closures": round(per_due_closed, 2),
                         "ratio": round(per_due_closed / per_due_plain, 2),
                         "first_calendar_load_ms": round(cold[0], 2)}

    # 3. Deactivating someone with many claims and open steps: one unit of work.
    with app.app_context():
        admin = db.session.get(User, world["admin_id"])
        tenant = db.session.get(Tenant, world["tenant_id"])
        started = time.perf_counter()
        deactivate_user(Actor.for_user(admin), tenant, world["holder_id"])
        commit()
        seconds = time.perf_counter() - started
        still_held = db.session.scalar(select(WorkItem.id).where(
            WorkItem.assignee_id == world["holder_id"]).limit(1))
        assert still_held is None, "claims were left with a deactivated person"
    report["deactivate"] = {"claims": args.held, "open_steps": args.held,
                            "seconds": round(seconds, 2),
                            "ms_per_held_thing": round(seconds * 1000 / (2 * args.held), 2)}

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    pp = report["people_page"]
    print(f"\nPeople page, {args.members} members: p50 {pp['people']['p50_ms']} ms "
          f"(ceiling /ping {pp['ceiling_ping']['p50_ms']} ms; {pp['ratio_p50']}x)")
    sd = report["sla_due"]
    print(f"SLA due: {sd['us_per_due_with_closures']} us with {sd['closed_days']} closed days, "
          f"{sd['us_per_due_without_closures']} us without ({sd['ratio']}x); first load of "
          f"the closures {sd['first_calendar_load_ms']} ms")
    dd = report["deactivate"]
    print(f"Deactivate with {dd['claims']} claims and {dd['open_steps']} open steps: "
          f"{dd['seconds']} s ({dd['ms_per_held_thing']} ms each)")
    print(f"Written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
