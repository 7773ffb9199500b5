"""Escalation levels: a one-person step that waits past its window goes to the approver's
manager, then to a named group, through the ledger with an audit event and a mail, once per
level; segregation of duties and delegates hold at every level."""
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from app.admin.groups import create_group
from app.admin.reporting_lines import set_manager
from app.approvals.escalation import escalate_waiting_steps, escalation_window
from app.approvals.services import approve_step, named_approver_id
from app.audit.models import AuditEvent
from app.errors import Conflict, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import ApprovalStep, Membership, WorkItem
from app.outbox.models import OutboxMessage
from app.policy import evaluation
from app.policy.versions import clean_steps
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import DATABASE, SYSTEM, actor
from tests.policy.conftest import make_policy  # noqa: F401 (the fixture)

CHAIN = 'approver >= 0, escalate after 2 days to manager then group "Treasury"'


@pytest.fixture
def org(make_tenant, make_user):
    tenant = make_tenant()
    people = {
        "author": make_user("author@x.test", [tenant], roles=("admin",), limit="0"),
        "checker": make_user("checker@x.test", [tenant], roles=("admin",), limit="0"),
        "requester": make_user("rita@x.test", [tenant], roles=("requester",), name="Rita"),
        "anna": make_user("anna@x.test", [tenant], roles=("approver",), name="Anna"),
        "mia": make_user("mia@x.test", [tenant], roles=("manager",), name="Mia",
                         limit="1000000"),
        "tom": make_user("tom@x.test", [tenant], roles=("approver",), name="Tom"),
    }
    create_group(SYSTEM, tenant, name="Treasury", member_ids=[people["tom"].id])
    set_manager(actor(people["author"]), tenant, people["anna"].id, people["mia"].id)
    commit()
    return tenant, people


def _routed(org, make_policy, make_item, steps=CHAIN, amount="500.00"):  # noqa: F811
    tenant, people = org
    make_policy(tenant, people["author"], people["checker"],
                [("Escalating", "amount > 0", "steps", steps)])
    item = make_item(tenant, amount=amount, requester=people["requester"])
    evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [item.id])
    commit()
    db.session.expire_all()
    return db.session.get(WorkItem, item.id)


def _sweep(days: float) -> int:
    total, last = 0, 0
    while last is not None:
        escalated, last = escalate_waiting_steps(SYSTEM, utcnow() + timedelta(days=days), last)
        total += escalated
        commit()
    db.session.expire_all()
    return total


def _holder(item_id):
    db.session.expire_all()
    return named_approver_id(db.session.get(WorkItem, item_id).steps[0])


def _events(item_id, action="approval.step_escalated"):
    return db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == item_id, AuditEvent.action == action)
        .order_by(AuditEvent.seq)).all()


def test_a_waiting_step_escalates_to_the_approvers_manager_then_to_the_group_and_stays(
        org, make_policy, make_item):
    tenant, people = org
    item = _routed(org, make_policy, make_item)
    assert _holder(item.id) == people["anna"].id
    assert _sweep(days=1) == 0  # inside its window
    assert _sweep(days=2.1) == 1
    assert _holder(item.id) == people["mia"].id
    assert _sweep(days=2.1) == 0  # a re-run changes nothing: the next window starts now
    assert _sweep(days=4.2) == 1
    assert _holder(item.id) == people["tom"].id
    assert _sweep(days=30) == 0  # the last level keeps it
    events = _events(item.id)
    assert [(e.data["level"], e.data["from_approver_id"], e.data["approver_id"], e.actor_type)
            for e in events] == [(1, people["anna"].id, people["mia"].id, "system"),
                                 (2, people["mia"].id, people["tom"].id, "system")]
    assert events[1].data["group"] == "Treasury"
    mails = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "approval.step_assigned")).all()
    assert [m.payload["approver_id"] for m in mails if m.payload.get("escalated")] == [
        people["mia"].id, people["tom"].id]
    step = db.session.get(WorkItem, item.id).steps[0]
    assert step.escalation_level == 2 and step.escalates_at is None
    from app.api.schemas import item_json

    [shown] = item_json(db.session.get(WorkItem, item.id), [])["steps"]
    assert shown["escalation_level"] == 2
    assert shown["description"].endswith(
        "— waiting on Tom; escalated after 2 days to Tom (level 2 of 2)")


def test_the_escalated_approver_decides_and_the_one_before_may_not(org, make_policy, make_item):
    tenant, people = org
    item = _routed(org, make_policy, make_item)
    _sweep(days=2.1)
    with pytest.raises(PermissionDenied):
        approve_step(actor(people["anna"]), item.id)
    db.session.rollback()
    approve_step(actor(people["mia"]), item.id)
    commit()
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "approved"
    assert _sweep(days=30) == 0


def test_the_new_approver_is_mailed_that_the_step_is_theirs(
        relaying, inbox, org, make_policy, make_item):
    from tests.approvals.conftest import run_worker

    tenant, people = org
    _routed(org, make_policy, make_item)
    run_worker(relaying)
    assert len(inbox.to("anna@x.test")) == 1 and inbox.to("mia@x.test") == []
    _sweep(days=2.1)
    run_worker(relaying)
    [mail] = inbox.to("mia@x.test")
    assert mail["Subject"].startswith("Escalated: Approval needed")
    assert "waited past its policy's window" in inbox.text(mail) and inbox.link(mail)


def test_a_manager_who_approved_an_earlier_step_is_skipped_to_the_next_level(
        org, make_policy, make_item):
    tenant, people = org
    steps = "manager >= 0\n" + CHAIN
    item = _routed(org, make_policy, make_item, steps)
    approve_step(actor(people["mia"]), item.id)
    commit()
    db.session.expire_all()
    item = db.session.get(WorkItem, item.id)
    assert named_approver_id(item.steps[1]) == people["anna"].id
    assert _sweep(days=2.1) == 1
    assert named_approver_id(db.session.get(WorkItem, item.id).steps[1]) == people["tom"].id
    [event] = _events(item.id)
    assert event.data["skipped"] == [{"level": 1, "to": "manager", "user_id": people["mia"].id,
                                      "why": "approved an earlier step"}]


def test_the_requester_is_never_an_escalation_level(org, make_policy, make_item, make_user):
    tenant, people = org
    rex = make_user("rex@x.test", [tenant], roles=("requester", "approver"), name="Rex")
    create_group(SYSTEM, tenant, name="Requesters", member_ids=[rex.id])
    set_manager(actor(people["author"]), tenant, people["anna"].id, rex.id)
    commit()
    make_policy(tenant, people["author"], people["checker"], [(
        "Escalating", "amount > 0", "steps",
        'approver >= 0, escalate after 1 day to manager then group "Requesters"')])
    item = make_item(tenant, amount="500.00", requester=rex)
    evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [item.id])
    commit()
    assert _sweep(days=1.1) == 0
    assert _holder(item.id) == people["anna"].id
    [event] = _events(item.id, "approval.escalation_exhausted")
    assert [s["why"] for s in event.data["skipped"]] == [
        "requested the item", "no member of it may decide the step"]
    assert _sweep(days=5) == 0 and len(_events(item.id, "approval.escalation_exhausted")) == 1


def test_an_away_managers_delegate_decides_the_escalated_step(
        org, make_policy, make_item, make_user):
    from app.admin.delegation import set_delegation

    tenant, people = org
    dan = make_user("dan@x.test", [tenant], roles=("manager",), name="Dan", limit="1000000")
    set_delegation(actor(people["author"]), tenant.id, people["mia"].id, delegate_id=dan.id,
                   first_day=date.today() - timedelta(days=1),
                   last_day=date.today() + timedelta(days=10))
    commit()
    item = _routed(org, make_policy, make_item)
    _sweep(days=2.1)
    assert _holder(item.id) == people["mia"].id
    approve_step(actor(dan), item.id)
    commit()
    db.session.expire_all()
    item = db.session.get(WorkItem, item.id)
    assert item.state == "approved"
    assert item.steps[0].on_behalf_of_id == people["mia"].id


def test_the_window_counts_calendar_time_or_the_tenants_working_time(org):
    tenant, _people = org  # New York, 09:00-17:00, Monday to Friday, US holidays
    friday_4pm = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
    assert escalation_window(tenant, "2 days", friday_4pm) == friday_4pm + timedelta(days=2)
    assert escalation_window(tenant, "3 hours", friday_4pm) == friday_4pm + timedelta(hours=3)
    # One working hour on Friday, one on Monday morning.
    assert escalation_window(tenant, "2 business hours", friday_4pm) == datetime(
        2026, 12, 7, 15, 0, tzinfo=UTC)
    # A working day is the day's working hours: Friday's last hour and seven on Monday.
    assert escalation_window(tenant, "1 business day", friday_4pm) == datetime(
        2026, 12, 7, 21, 0, tzinfo=UTC)


def test_the_sla_sweep_escalates_a_step_whose_window_has_passed(org, make_policy, make_item):
    from app.sla.jobs import refresh_sla_states

    tenant, people = org
    item = _routed(org, make_policy, make_item)
    step = db.session.get(WorkItem, item.id).steps[0]
    step.escalates_at = utcnow() - timedelta(minutes=1)
    commit()
    assert refresh_sla_states().get("escalated_steps") == 1
    assert _holder(item.id) == people["mia"].id
    assert refresh_sla_states().get("escalated_steps") is None


def test_escalation_reads_back_in_the_steps_syntax_and_refuses_what_cannot_escalate():
    from app.policy.forms import step_line

    [step] = clean_steps('owner budget_holder_email else approver >= 100, escalate after '
                         '16 business hours to manager then manager then group "Treasury"',
                         groups={"treasury"})
    assert step["escalate_after"] == "16 business hours"
    assert step["escalate_to"] == [{"to": "manager"}, {"to": "manager"},
                                   {"to": "group", "group": "Treasury"}]
    assert step_line(step) == ('owner budget_holder_email else approver >= 100.00, escalate '
                               'after 16 business hours to manager then manager then group '
                               '"Treasury"')
    for text, why in [
            ('2 of group "Treasury", escalate after 1 day to manager', "only a one-person step"),
            ("approver, escalate after 0 days to manager", "escalate after 1 to 90 days"),
            ("approver, escalate after 2 days to the boss", "escalate to manager, or to group"),
            ('approver, escalate after 2 days to group "Nobody"', "no approver group named")]:
        with pytest.raises(ValidationFailed) as refused:
            clean_steps(text, groups={"treasury"})
        assert why in refused.value.fields["steps"], text


postgres_only = pytest.mark.skipif(
    DATABASE != "postgresql",
    reason="SQLite runs one writer at a time: the race is PostgreSQL's")


@postgres_only
def test_an_escalation_and_a_decision_at_once_have_one_outcome(
        app, org, make_policy, make_item):
    import threading

    tenant, people = org
    outcomes = []
    for _ in range(4):
        item = _routed(org, make_policy, make_item)
        barrier = threading.Barrier(2, timeout=20)
        results = {}

        def decide(item_id=item.id):
            with app.app_context():
                try:
                    from app.models import User

                    anna = db.session.get(User, people["anna"].id)
                    barrier.wait()
                    approve_step(actor(anna), item_id)
                    commit()
                    results["decision"] = "ok"
                except (Conflict, PermissionDenied) as refused:
                    db.session.rollback()
                    results["decision"] = refused
                finally:
                    db.session.remove()

        def sweep(barrier=barrier):
            with app.app_context():
                try:
                    barrier.wait()
                    results["escalated"], _ = escalate_waiting_steps(
                        SYSTEM, utcnow() + timedelta(days=3))
                    commit()
                finally:
                    db.session.remove()

        threads = [threading.Thread(target=decide), threading.Thread(target=sweep)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        db.session.expire_all()
        item = db.session.get(WorkItem, item.id)
        escalations = len(_events(item.id))
        if results["decision"] == "ok":
            assert item.state == "approved" and escalations == 0, results
        else:
            assert item.state == "pending" and escalations == 1, results
            assert named_approver_id(item.steps[0]) == people["mia"].id
        outcomes.append(item.state)
        # The next round's item is the only one the sweep may find.
        for step in db.session.scalars(select(ApprovalStep).where(ApprovalStep.state == "open")):
            step.escalates_at = None
        commit()
