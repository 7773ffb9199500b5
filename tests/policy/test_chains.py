"""Approval chains the policy creates at arrival: step N+1 opens when step N is approved, each
step needs its role and limit, nobody approves two steps of one item, and a delegate decides
for someone out of office, recorded "on behalf of"."""
from datetime import timedelta

import pytest

from app.approvals.services import approve_step
from app.errors import PermissionDenied, SegregationOfDuties
from app.extensions import db
from app.models import Membership, WorkItem
from app.policy import evaluation
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import actor

THREE_STEPS = ("Big deals", "amount > 10000", "steps",
               "approver >= 1000\nmanager >= amount\nmanager >= amount")


def _routed(tenant, make_item, amount="20000.00", requester=None):
    item = make_item(tenant, amount=amount, requester=requester, details={"discount_pct": "5"})
    evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [item.id])
    commit()
    db.session.expire_all()
    return db.session.get(WorkItem, item.id)


def test_a_three_step_chain_refuses_one_person_approving_two_steps(
        admins, make_policy, make_item, make_user):
    tenant, author, checker = admins
    both = make_user("both@example.com", [tenant], roles=("approver", "manager"), limit="50000")
    second = make_user("m2@example.com", [tenant], roles=("manager",), limit="50000")
    third = make_user("m3@example.com", [tenant], roles=("manager",), limit="50000")
    low = make_user("low@example.com", [tenant], roles=("manager",), limit="5000")
    make_policy(tenant, author, checker, [THREE_STEPS])
    item = _routed(tenant, make_item)
    assert [(s.role, s.state) for s in item.steps] == [
        ("approver", "open"), ("manager", "waiting"), ("manager", "waiting")]

    approve_step(actor(both), item.id)
    commit()
    with pytest.raises(SegregationOfDuties, match="You approved step 1"):
        approve_step(actor(both), item.id)
    db.session.rollback()
    with pytest.raises(PermissionDenied, match="approval limit"):
        approve_step(actor(low), item.id)
    db.session.rollback()
    approve_step(actor(second), item.id)
    commit()
    with pytest.raises(SegregationOfDuties):
        approve_step(actor(second), item.id)
    db.session.rollback()
    approve_step(actor(third), item.id)
    commit()
    item = db.session.get(WorkItem, item.id)
    assert item.state == "approved"
    assert [s.decided_by_id for s in item.steps] == [both.id, second.id, third.id]


def test_the_requester_never_approves_their_own_item(admins, make_policy, make_item, make_user):
    tenant, author, checker = admins
    requester = make_user("req@example.com", [tenant], roles=("requester", "approver"),
                          limit="50000")
    make_policy(tenant, author, checker, [THREE_STEPS])
    item = _routed(tenant, make_item, requester=requester)
    with pytest.raises(SegregationOfDuties, match="You requested this item"):
        approve_step(actor(requester), item.id)


def test_a_step_routed_to_someone_away_is_decided_by_their_delegate_on_their_behalf(
        admins, make_policy, make_item, make_user):
    from app.models import ApprovalAssignment

    tenant, author, checker = admins
    away = make_user("away@example.com", [tenant], roles=("approver",), limit="50000")
    delegate = make_user("delegate@example.com", [tenant], roles=("approver",), limit="50000")
    membership = db.session.scalars(db.select(Membership).where(
        Membership.user_id == away.id)).one()
    today = utcnow().date()
    membership.delegate_id = delegate.id
    membership.delegate_from, membership.delegate_until = today - timedelta(days=1), today
    commit()
    make_policy(tenant, author, checker, [THREE_STEPS])
    item = _routed(tenant, make_item)
    assert db.session.get(ApprovalAssignment, item.steps[0].id).approver_id == away.id

    approve_step(actor(delegate), item.id)
    commit()
    item = db.session.get(WorkItem, item.id)
    step = item.steps[0]
    assert (step.decided_by_id, step.on_behalf_of_id) == (delegate.id, away.id)
    from app.audit.models import AuditEvent

    event = db.session.scalars(db.select(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "approval.step_approved")).one()
    assert event.on_behalf_of_id == away.id and event.actor_id == delegate.id
