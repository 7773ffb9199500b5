"""Periodic approval mail through a real SMTP server: one reminder per step before its SLA is
at risk, one digest per approver and day; and the admins' page of what was sent."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.approvals.jobs import send_daily_digests, send_sla_reminders
from app.approvals.models import ApprovalLinkToken
from app.extensions import db
from app.mail.models import SentMail
from app.unit_of_work import commit
from tests.conftest import arrange


# A Tuesday, 10:00 in New York: an approval's target is 8 business hours (09:00-17:00).
NOW = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)


def _due_in(item, business_hours: float) -> None:
    """Set the item due this many business hours after NOW (negative: overdue)."""
    from app.work.calendar import calendar_for

    if business_hours >= 0:
        arrange(item, sla_due_at=calendar_for(item.tenant).add(NOW,
                                                               timedelta(hours=business_hours)))
    else:
        arrange(item, sla_due_at=NOW + timedelta(hours=business_hours))


def test_one_reminder_per_step_once_half_the_sla_is_gone(inbox, team, make_item):
    fresh = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    late = make_item(team["tenant"], amount="200.00", requester=team["requester"])
    _due_in(fresh, 7)
    _due_in(late, 3)
    assert send_sla_reminders(now=NOW) == 1
    assert send_sla_reminders(now=NOW) == 0  # idempotent: the step has had its reminder
    assert send_sla_reminders(now=NOW + timedelta(minutes=30)) == 0
    [message] = inbox.messages
    assert message["Subject"].startswith("Reminder: ") and "USD 200.00" in message["Subject"]
    assert "SLA is running out" in inbox.text(message)
    link = inbox.link(message)
    [row] = db.session.scalars(select(ApprovalLinkToken)).all()
    assert row.purpose == "reminder" and row.item_id == late.id
    assert link.rsplit("/", 1)[1] not in db.session.scalars(select(SentMail.text_body)).one()


def test_no_reminder_for_a_decided_or_overdue_step(inbox, team, make_item):
    from app.approvals.services import approve_step
    from tests.conftest import actor

    decided = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    overdue = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    _due_in(decided, 3)
    _due_in(overdue, -1)
    approve_step(actor(team["approver"]), decided.id)
    commit()
    assert send_sla_reminders(now=NOW) == 0
    assert inbox.messages == []


def test_the_daily_digest_goes_once_per_approver_and_day(inbox, team, make_item):
    make_item(team["tenant"], amount="100.00", requester=team["requester"])
    make_item(team["tenant"], amount="250.00", requester=team["requester"])
    early = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)  # 07:00 in New York: before the hour
    assert send_daily_digests(now=early) == 0
    morning = datetime(2026, 3, 10, 13, 0, tzinfo=UTC)  # 09:00 in New York
    assert send_daily_digests(now=morning) == 1
    assert send_daily_digests(now=morning + timedelta(hours=3)) == 0
    [message] = inbox.to("ann@x.test")
    assert "2 approvals waiting for you" in message["Subject"]
    text = inbox.text(message)
    assert "USD 100.00" in text and "USD 250.00" in text
    assert send_daily_digests(now=morning + timedelta(days=1)) == 1


def test_admins_read_what_was_sent_with_tokens_redacted(inbox, team, make_item, make_user,
                                                        auth, client):
    make_user("admin@x.test", [team["tenant"]], roles=("admin",))
    late = make_item(team["tenant"], amount="200.00", requester=team["requester"])
    _due_in(late, 2)
    send_sla_reminders(now=NOW)
    token = inbox.link(inbox.messages[0]).rsplit("/", 1)[1]
    auth.login("admin@x.test")
    page = client.get("/admin/mail/")
    assert page.status_code == 200
    assert "ann@x.test" in page.text and "Reminder: Approval needed" in page.text
    assert "[link token redacted]" in page.text and token not in page.text
    auth.login("ann@x.test")
    assert client.get("/admin/mail/").status_code == 403
