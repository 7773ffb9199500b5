"""SLA escalation through the real sweep, a real RQ worker and a real SMTP server: a breach
raises the priority, optionally reassigns, and is reported to the tenant's managers; at risk
is reported to them; each manager gets one digest mail per sweep listing the items, with
links; running everything twice changes and sends nothing more."""
import re
from datetime import timedelta

from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.extensions import db
from app.models import WorkItem
from app.work.calendar import calendar_for
from app.sla.jobs import refresh_sla_states
from app.outbox.models import OutboxMessage
from app.sla.models import SlaNotice
from app.sla.notifications import mail_sla_digest
from app.types import utcnow
from app.unit_of_work import commit
from app.work.services import claim_item
from tests.conftest import actor, arrange
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
    arrange(item, sla_due_at=utcnow() - timedelta(minutes=5))


def _recipients(inbox):
    return sorted(m["To"].addresses[0].addr_spec for m in inbox.messages)


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
    assert _recipients(inbox) == ["max@x.test", "mia@x.test"]  # this tenant's, not another's
    mail = inbox.messages[0]
    assert "SLA digest: 1 breached" in mail["Subject"]
    assert "http://cleardesk.test/items/%d" % item.id in inbox.text(mail)
    assert "priority high" in inbox.text(mail)

    # Twice: the sweep finds nothing new, the worker has nothing to send.
    assert refresh_sla_states() == {}
    run_worker(relaying)
    db.session.expire_all()
    assert item.priority == "high" and _events("item.sla_escalated") == 1
    assert len(inbox.messages) == 2
    # Even a repeated delivery of the same digest sends nothing more.
    message = db.session.scalars(select(OutboxMessage)
                                 .where(OutboxMessage.topic == "sla.digest")).one()
    assert mail_sla_digest(message) == 0


def test_one_digest_per_manager_per_sweep_lists_every_item_with_its_link(
        inbox, relaying, make_tenant, make_user, make_item):
    """Five items breach and two turn at risk in one sweep, in two tenants: each manager gets
    one mail listing the items of the tenants they manage (Mia manages both), every item
    once, with its link; a later sweep reports only what is new, in a new digest."""
    team = _team(make_tenant, make_user)
    north = team["tenant"]
    contoso = team["elsewhere"].memberships[0].tenant
    late = [make_item(north, kind="billing_exception") for _ in range(3)]
    late += [make_item(contoso, kind="approval") for _ in range(2)]
    for item in late:
        arrange(item, sla_due_at=utcnow() - timedelta(minutes=5))
    risky = [make_item(north, kind="settlement_dispute") for _ in range(2)]
    for item in risky:
        arrange(item, sla_due_at=calendar_for(north).add(utcnow(), timedelta(hours=3)))
    assert refresh_sla_states() == {"breached": 5, "at_risk": 2}
    run_worker(relaying)
    assert _recipients(inbox) == ["max@x.test", "mia@x.test", "otto@x.test"]
    by_recipient = {m["To"].addresses[0].addr_spec: m for m in inbox.messages}
    links = lambda mail: _links(inbox, mail)  # noqa: E731
    assert links(by_recipient["max@x.test"]) == {i.id for i in late[:3] + risky}
    assert links(by_recipient["otto@x.test"]) == {i.id for i in late[3:]}
    mia = by_recipient["mia@x.test"]
    assert links(mia) == {i.id for i in late + risky}
    assert mia["Subject"] == "SLA digest: 5 breached, 2 at risk (2 tenants)"
    html = inbox.html(mia)
    assert all(f"http://cleardesk.test/items/{i.id}" in html for i in late + risky)
    assert by_recipient["max@x.test"]["Subject"].endswith(f"({north.display_name})")
    # Each item escalated once: one notice per item and level, all in the one digest.
    notices = db.session.scalars(select(SlaNotice)).all()
    assert sorted((n.item_id, n.level) for n in notices) == sorted(
        [(i.id, "breached") for i in late] + [(i.id, "at_risk") for i in risky])
    assert len({n.digest_message_id for n in notices}) == 1

    # Later, one more breach: a new digest with that item alone.
    again = make_item(north, kind="billing_exception")
    _overdue(again)
    assert refresh_sla_states() == {"breached": 1}
    run_worker(relaying)
    new = inbox.messages[3:]
    assert sorted(m["To"].addresses[0].addr_spec for m in new) == ["max@x.test", "mia@x.test"]
    assert all(links(m) == {again.id} for m in new)
    assert refresh_sla_states() == {}
    run_worker(relaying)
    assert len(inbox.messages) == 5


def _links(inbox, mail) -> set[int]:
    return {int(n) for n in re.findall(r"/items/(\d+)", inbox.text(mail))}


def _digests():
    return db.session.scalars(select(OutboxMessage).where(OutboxMessage.topic == "sla.digest")
                              .order_by(OutboxMessage.id)).all()


def test_a_digest_leaves_out_items_decided_before_it_was_sent(
        inbox, make_tenant, make_user, make_item):
    """The sweep reported two items; one was resolved before the digest went: the digest
    lists only the other. With nothing left to report, nobody gets a mail."""
    team = _team(make_tenant, make_user)
    first, second = [make_item(team["tenant"], kind="billing_exception") for _ in range(2)]
    for item in (first, second):
        arrange(item, sla_due_at=utcnow() - timedelta(minutes=5))
    assert refresh_sla_states() == {"breached": 2}
    arrange(db.session.get(WorkItem, first.id), state="resolved")
    assert mail_sla_digest(_digests()[0]) == 2
    assert [_links(inbox, m) for m in inbox.messages] == [{second.id}, {second.id}]

    third = make_item(team["tenant"], kind="billing_exception")
    _overdue(third)
    assert refresh_sla_states() == {"breached": 1}
    arrange(db.session.get(WorkItem, third.id), state="resolved")
    assert mail_sla_digest(_digests()[1]) == 0
    assert len(inbox.messages) == 2


def test_at_risk_mails_the_managers_without_raising_the_priority(
        inbox, relaying, make_tenant, make_user, make_item):
    team = _team(make_tenant, make_user)
    item = make_item(team["tenant"], kind="settlement_dispute")
    # An eighth of its 24-hour target left: past the at-risk share, not yet due.
    arrange(item, sla_due_at=calendar_for(team["tenant"]).add(utcnow(), timedelta(hours=3)))
    assert refresh_sla_states() == {"at_risk": 1}
    db.session.expire_all()
    assert (item.sla_state, item.priority) == ("at_risk", "normal")
    run_worker(relaying)
    assert len(inbox.messages) == 2 and all("SLA digest: 1 at risk" in m["Subject"]
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
    # The colleague who now holds it is told, with why.
    [notice] = [n for m in db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "work.assigned")) for n in m.payload["notices"]]
    assert (notice["item_id"], notice["assignee_id"]) == (later.id, team["managers"][0].id)
    assert "breached its SLA" in notice["reason"]
    assert refresh_sla_states() == {}
    db.session.expire_all()
    assert db.session.get(WorkItem, later.id).assignee_id == team["managers"][0].id
