"""Measure the "assigned to you" mail: a policy batch assigning many billing exceptions to a few
analysts, then the outbox handler mailing each analyst one digest, against the ceiling of the
same number of plain one-line mails through the same send path and SMTP server, in the same
run. Also times one mail per item (what a digest saves). Called by scripts/bench.sh on a
throwaway PostgreSQL database (DATABASE_URL); see bench/README.md.

    python bench/notify_bench.py --items 1000 --analysts 5

The database must be migrated and hold nothing but what this script writes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiosmtpd.controller import Controller  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from app import create_app  # noqa: E402
from app.actors import Actor  # noqa: E402
from app.admin.people import grant_membership  # noqa: E402
from app.extensions import db  # noqa: E402
from app.mail.sending import send_mail  # noqa: E402
from app.models import Tenant, User, WorkItem  # noqa: E402
from app.outbox.models import OutboxMessage  # noqa: E402
from app.policy import evaluation, versions  # noqa: E402
from app.unit_of_work import commit  # noqa: E402
from app.work.services import create_items  # noqa: E402

SYSTEM = Actor.system("bench")


class Sink:
    """An SMTP server that counts what it receives."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        with self._lock:
            self.count += 1
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(analysts: int) -> tuple[Tenant, list[User]]:
    tenant = Tenant(slug="bench", name="Bench", currency="USD", timezone="America/New_York",
                    calendar_country="US")
    db.session.add(tenant)
    db.session.flush()
    people = {}
    for email, roles in (("author@bench", ("admin",)), ("checker@bench", ("admin",)),
                         *((f"analyst{n}@bench", ("analyst",)) for n in range(analysts))):
        user = User(email=email, name=email.split("@")[0].title())
        db.session.add(user)
        db.session.flush()
        grant_membership(SYSTEM, user=user, tenant=tenant, roles=list(roles),
                         approval_limit="0")
        people[email] = user
    commit()
    author = Actor.for_user(people["author@bench"])
    draft = versions.create_draft(author, tenant.id)
    versions.save_rule(author, tenant.id, draft.id, rule_id=None, name="Tax failures",
                       kind="billing_exception", condition='subtype == "tax_validation_failed"',
                       outcome="assign", assign_role="analyst")
    versions.save_settings(author, tenant.id, draft.id, max_auto_amount="",
                           daily_auto_count="", daily_auto_amount="", qa_sample_pct="0",
                           qa_role="manager", fallback_steps_text="approver >= amount",
                           risk={"base": 0})
    versions.submit_version(author, tenant.id, draft.id)
    commit()
    versions.activate_version(Actor.for_user(people["checker@bench"]), tenant.id, draft.id)
    commit()
    return tenant, [u for e, u in people.items() if e.startswith("analyst")]


def plain_mails(tenant: Tenant, recipients: list[User], count: int, tag: str) -> float:
    """Seconds to send `count` one-line mails (round robin over `recipients`), each logged and
    committed on its own, as the digest handler does."""
    started = time.perf_counter()
    for n in range(count):
        send_mail(tenant=tenant, recipient=recipients[n % len(recipients)],
                  subject=f"Bench {tag} {n}", text="Hello.", html="<p>Hello.</p>",
                  kind="bench", notice_key=f"bench-{tag}:{n}")
        commit()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--analysts", type=int, default=5)
    parser.add_argument("--output",
                        default=str(Path(__file__).parent / "results" / "notify-latest.json"))
    args = parser.parse_args()
    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    app = create_app({"OUTBOX_RELAY_ON_COMMIT": False, "SMTP_HOST": "127.0.0.1",
                      "SMTP_PORT": port, "APP_BASE_URL": "http://cleardesk.bench"})
    try:
        with app.app_context():
            if db.engine.dialect.name != "postgresql":
                print("the notify bench needs PostgreSQL (DATABASE_URL)", file=sys.stderr)
                return 2
            tenant, analysts = setup(args.analysts)
            ids, _ = create_items(SYSTEM, tenant.id, [
                {"kind": "billing_exception", "subtype": "tax_validation_failed",
                 "title": f"Tax check {n}", "external_ref": f"TX-{n}", "source_system": "bench",
                 "counterparty": f"Customer {n % 97}", "amount": f"{100 + n % 900}.00",
                 "amount_at_risk": f"{50 + n % 400}.00"} for n in range(args.items)])
            commit()
            started = time.perf_counter()
            decided = evaluation.evaluate_items(evaluation.policy_actor(tenant.id), ids)
            commit()
            batch_seconds = time.perf_counter() - started
            assigned = db.session.scalar(select(func.count()).select_from(WorkItem).where(
                WorkItem.id.in_(ids), WorkItem.assignee_id.is_not(None)))
            [message] = db.session.scalars(select(OutboxMessage).where(
                OutboxMessage.topic == "work.assigned")).all()
            ceiling = plain_mails(tenant, analysts, len(analysts), "ceiling")
            from app.exceptions.notifications import mail_assignment_notices

            started = time.perf_counter()
            sent = mail_assignment_notices(message)
            digest_seconds = time.perf_counter() - started
            per_item = plain_mails(tenant, analysts, args.items, "per-item")
            received = sink.count
    finally:
        controller.stop()
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "items": args.items, "analysts": args.analysts,
        "policy_batch": {"seconds": round(batch_seconds, 3), "assigned": assigned,
                         "outcomes": dict(decided), "work_assigned_messages": 1},
        "digest_mails": sent, "digest_seconds": round(digest_seconds, 3),
        "ceiling_plain_mails": args.analysts, "ceiling_seconds": round(ceiling, 3),
        "ratio_to_ceiling": round(ceiling / digest_seconds, 3),
        "one_mail_per_item_seconds": round(per_item, 3),
        "digest_vs_one_mail_per_item": round(per_item / digest_seconds, 1),
        "smtp_received": received,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = assigned == args.items and sent == args.analysts
    print(f"notify: {args.items:,} items assigned by one policy batch in {batch_seconds:.2f} s; "
          f"{sent} digest mails in {digest_seconds:.2f} s = {ceiling / digest_seconds:.2f} of "
          f"the same number of plain mails ({ceiling:.2f} s); one mail per item would take "
          f"{per_item:.2f} s — {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
