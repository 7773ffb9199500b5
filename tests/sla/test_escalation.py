"""SLA escalation through the real sweep, a real RQ worker and a real SMTP server: a breach
raises the priority, optionally reassigns, and mails the tenant's managers; at risk mails
them; running everything twice changes and sends nothing more."""
from datetime import timedelta

from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.extensions import db
from app.models import WorkItem
from app.sla.calendar import calendar_for
from app.sla.jobs import refresh_sla_states
from app.sla.notifications import mail_managers
from app.types import utcnow
from app.unit_of_work import commit
from app.work.services import claim_item
from tests.conftest import actor
from tests.sla.conftest import run_worker


def _events(action):
    return db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == action))


def _team(make_tenant, make_user):
    north = make_tenant()
    other = make_tenant("contoso", "EUR", "Europe/Berlin", "DE")
    return {
        "tenant": north,
        "managers": [make_user("max@x.test", [north], roles=("manager",), name="Max Manager"),
                     make_user("mia@x.test", [north, other], roles=("manager",), name="Mia")],
        "elsewhere": make_user("otto@x.test", [other], roles=("manager",), name="Otto"),
        "analysts": [make_user("ana@x.test", [north], roles=("analyst",), name="Ana"),
                     make_user("ben@x.test", [north], roles=("analyst",), name="Ben")],
    }


def _overdue(item):
    item.sla_due_at = utcnow() - timedelta(minutes=5)
    commit()


def test_a_breach_raises_priority_and_mails_the_tenants_managers_once(
        inbox, relaying, make_tenant, make_user, make_item):
    team = _team(make_tenant, make_user)
    item = make_item(team["tenant"], kind="billing_exception")
    _overdue(item)
    assert refresh_sla_states() == {"breached": 1}
    db.session.expire_all()
    assert (item.sla_state, item.priority) == ("breached", "high")  # one step up from normal
    assert _events("item.sla_escalated") == 1
    run_worker(relaying)
    assert sorted(m["To"].addresses[0].addr_spec for m in inbox.messages) == [
        "max@x.test", "mia@x.test"]  # the managers of this tenant, not of another
    mail = inbox.messages[0]
    assert "SLA breached" in mail["Subject"] and "priority is now high" in inbox.text(mail)

    # Twice: the sweep finds nothing new, the worker has nothing to send.
    assert refresh_sla_states() == {}
    run_worker(relaying)
    db.session.expire_all()
    assert item.priority == "high" and _events("item.sla_escalated") == 1
    assert len(inbox.messages) == 2
    # Even a repeated delivery of the same notice sends nothing more.
    assert mail_managers(item.id, "breached") == 0


def test_at_risk_mails_the_managers_without_raising_the_priority(
        inbox, relaying, make_tenant, make_user, make_item):
    team = _team(make_tenant, make_user)
    item = make_item(team["tenant"], kind="settlement_dispute")
    # An eighth of its 24-hour target left: past the at-risk share, not yet due.
    item.sla_due_at = calendar_for(team["tenant"]).add(utcnow(), timedelta(hours=3))
    commit()
    assert refresh_sla_states() == {"at_risk": 1}
    db.session.expire_all()
    assert (item.sla_state, item.priority) == ("at_risk", "normal")
    run_worker(relaying)
    assert len(inbox.messages) == 2 and all("SLA at risk" in m["Subject"]
                                            for m in inbox.messages)
    assert refresh_sla_states() == {}
    run_worker(relaying)
    assert len(inbox.messages) == 2


def test_reassigning_on_breach_is_off_unless_the_tenant_turns_it_on(
        make_tenant, make_user, make_item):
    team = _team(make_tenant, make_user)
    ana, ben = team["analysts"]
    busy = [make_item(team["tenant"], kind="billing_exception") for _ in range(3)]
    for other in busy[1:]:
        claim_item(actor(ben), other.id)  # ben has two open items
    claim_item(actor(ana), busy[0].id)
    commit()
    late = make_item(team["tenant"], kind="billing_exception")
    claim_item(actor(ana), late.id)
    commit()
    _overdue(late)
    refresh_sla_states()
    db.session.expire_all()
    assert late.assignee_id == ana.id  # off by default: the work stays where it is

    team["tenant"].sla_reassign_on_breach = True
    later = make_item(team["tenant"], kind="billing_exception")
    claim_item(actor(ben), later.id)
    commit()
    _overdue(later)
    assert refresh_sla_states() == {"breached": 1}
    db.session.expire_all()
    # The least-loaded colleague who works billing exceptions (the managers have none open).
    assert later.assignee_id == team["managers"][0].id
    assert later.priority == "high"
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "item.sla_escalated", AuditEvent.item_id == later.id)).one()
    assert event.data["previous_assignee_id"] == ben.id
    assert event.data["assignee_id"] == team["managers"][0].id
    assert refresh_sla_states() == {}
    db.session.expire_all()
    assert db.session.get(WorkItem, later.id).assignee_id == team["managers"][0].id
