"""Evaluating arrived items under the tenant's policy: auto-approval, chains, guard rails,
decision receipts and exactly-once decisions (no worker here: see test_jobs.py)."""
from decimal import Decimal

from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.audit.services import verify_all
from app.extensions import db
from app.models import ApprovalAssignment, WorkItem
from app.policy import evaluation, versions
from app.policy.jobs import sweep_undecided
from app.policy.models import PolicyDecision
from app.unit_of_work import commit
from tests.conftest import actor

SMALL_AUTO = ("Small discounts", "amount <= 1000 and discount_pct <= 10", "auto_approve", "")
BIG_CHAIN = ("Large deals", "amount > 50000", "steps",
             "approver >= 10000\nmanager >= amount\nmanager >= amount")


def _item(make_item, tenant, amount="500.00", discount="5"):
    return make_item(tenant, amount=amount, details={"discount_pct": discount})


def _evaluate(tenant, *items):
    counts = evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [i.id for i in items])
    commit()
    db.session.expire_all()
    return counts


def _events(item, action):
    return db.session.scalars(select(AuditEvent).where(AuditEvent.item_id == item.id,
                                                       AuditEvent.action == action)).all()


def test_an_item_arriving_under_a_policy_waits_for_evaluation_with_no_steps(
        admins, make_policy, make_item):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [SMALL_AUTO])
    item = _item(make_item, tenant)
    assert item.state == "pending" and item.steps == []
    receipt = db.session.get(PolicyDecision, item.id)
    assert receipt is not None and receipt.decided_at is None


def test_a_matching_auto_approve_rule_approves_as_the_policy_with_version_rule_and_inputs(
        admins, make_policy, make_item):
    tenant, author, checker = admins
    policy = make_policy(tenant, author, checker, [SMALL_AUTO])
    item = _item(make_item, tenant)
    assert _evaluate(tenant, item) == {"auto_approved": 1, "skipped": 0}
    item = db.session.get(WorkItem, item.id)
    assert item.state == "approved" and item.policy_version == policy.version
    assert item.resolved_at is not None and item.sla_state == "met"
    [event] = _events(item, "item.approve")
    assert event.actor_type == "policy" and event.actor_label == "policy"
    assert event.data["policy_version"] == policy.version and event.data["rule"] == 1
    assert event.data["rule_name"] == "Small discounts"
    receipt = db.session.get(PolicyDecision, item.id)
    assert receipt.outcome == "auto_approved" and receipt.rule_name == "Small discounts"
    assert receipt.inputs["amount"] == "500.00" and receipt.inputs["discount_pct"] == "5"
    assert all(r.ok for r in verify_all())


def test_a_steps_rule_creates_the_chain_and_routes_its_first_step(
        admins, make_policy, make_item, make_user):
    tenant, author, checker = admins
    approver = make_user("a@example.com", [tenant], roles=("approver",), limit="20000")
    make_policy(tenant, author, checker, [SMALL_AUTO, BIG_CHAIN])
    item = _item(make_item, tenant, amount="60000.00", discount="20")
    assert _evaluate(tenant, item)["routed"] == 1
    item = db.session.get(WorkItem, item.id)
    assert item.state == "pending"
    assert [(s.position, s.role, s.min_limit, s.state) for s in item.steps] == [
        (1, "approver", Decimal("10000.00"), "open"),
        (2, "manager", Decimal("60000.00"), "waiting"),
        (3, "manager", Decimal("60000.00"), "waiting")]
    assignment = db.session.get(ApprovalAssignment, item.steps[0].id)
    assert assignment.approver_id == approver.id
    [event] = _events(item, "policy.routed")
    assert event.data["rule_name"] == "Large deals" and event.data["approver_id"] == approver.id


def test_no_matching_rule_takes_the_fallback_chain(admins, make_policy, make_item):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [SMALL_AUTO])
    item = _item(make_item, tenant, amount="5000.00")
    assert _evaluate(tenant, item)["routed"] == 1
    receipt = db.session.get(PolicyDecision, item.id)
    assert receipt.rule_position is None and receipt.steps == [
        {"role": "approver", "min_limit": "5000.00"}]


def test_evaluating_twice_decides_once(admins, make_policy, make_item):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [SMALL_AUTO])
    item = _item(make_item, tenant)
    _evaluate(tenant, item)
    assert _evaluate(tenant, item) == {}
    assert len(_events(item, "item.approve")) == 1


def test_the_daily_budget_stops_auto_approval_at_its_cap_and_routes_the_rest(
        admins, make_policy, make_item):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [SMALL_AUTO], daily_auto_count="2",
                daily_auto_amount="10000")
    items = [_item(make_item, tenant) for _ in range(3)]
    assert _evaluate(tenant, *items[:2])["auto_approved"] == 2
    assert _evaluate(tenant, items[2]) == {"held": 1, "skipped": 0}
    receipt = db.session.get(PolicyDecision, items[2].id)
    assert receipt.held_by == "daily_auto_count"
    assert db.session.get(WorkItem, items[2].id).steps[0].state == "open"


def test_the_daily_amount_budget_holds_what_would_exceed_it(admins, make_policy, make_item):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [SMALL_AUTO], daily_auto_amount="900")
    first, second = _item(make_item, tenant), _item(make_item, tenant)
    assert _evaluate(tenant, first, second) == {"auto_approved": 1, "held": 1, "skipped": 0}
    assert db.session.get(PolicyDecision, second.id).held_by == "daily_auto_amount"


def test_the_kill_switch_stops_auto_approval_at_once(admins, make_policy, make_item):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [SMALL_AUTO])
    item = _item(make_item, tenant)
    versions.set_kill_switch(actor(author), tenant.id, True, "Fraud alert")
    commit()
    assert _evaluate(tenant, item) == {"held": 1, "skipped": 0}
    assert db.session.get(PolicyDecision, item.id).held_by == "kill_switch"
    assert db.session.get(WorkItem, item.id).state == "pending"
    [event] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "policy.kill_switch_engaged")).all()
    assert event.comment == "Fraud alert"


def test_the_qa_sample_lands_in_the_qa_team_queue_with_the_qa_role(admins, make_policy,
                                                                    make_item):
    from app.policy.engine import QA_QUEUE

    tenant, author, checker = admins
    make_policy(tenant, author, checker, [SMALL_AUTO], qa_sample_pct="100", qa_role="manager")
    item = _item(make_item, tenant)
    assert _evaluate(tenant, item) == {"qa_sample": 1, "skipped": 0}
    item = db.session.get(WorkItem, item.id)
    assert [(s.role, s.state) for s in item.steps] == [("manager", "open")]
    assert item.team_queue == QA_QUEUE == "QA sample"
    receipt = db.session.get(PolicyDecision, item.id)
    assert (receipt.outcome, receipt.queue) == ("qa_sample", QA_QUEUE)
    from app.policy.simulation import qa_queue

    assert [q.id for q in qa_queue(actor(author), tenant.id)] == [item.id]


def test_the_maximum_auto_approved_amount_holds_larger_items(admins, make_policy, make_item):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [SMALL_AUTO], max_auto_amount="400")
    item = _item(make_item, tenant)
    assert _evaluate(tenant, item) == {"held": 1, "skipped": 0}
    assert db.session.get(PolicyDecision, item.id).held_by == "max_auto_amount"


def test_an_item_withdrawn_before_evaluation_is_skipped(admins, make_policy, make_item, make_user):
    from app.approvals.services import withdraw

    tenant, author, checker = admins
    requester = make_user("r@example.com", [tenant], roles=("requester",))
    make_policy(tenant, author, checker, [SMALL_AUTO])
    item = make_item(tenant, amount="500.00", requester=requester, details={"discount_pct": "5"})
    withdraw(actor(requester), item.id)
    commit()
    assert _evaluate(tenant, item) == {"skipped": 1}
    assert db.session.get(WorkItem, item.id).state == "withdrawn"


def test_the_sweep_decides_every_undecided_item_once_and_the_chain_verifies(
        admins, make_policy, make_item):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [SMALL_AUTO])
    items = [_item(make_item, tenant, amount=str(300 + n * 100)) for n in range(12)]
    assert sweep_undecided(batch=5) == 12
    assert sweep_undecided(batch=5) == 0
    approved = db.session.scalar(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "item.approve"))
    assert approved == 8  # 300..1000
    assert db.session.scalar(select(func.count()).select_from(PolicyDecision)
                             .where(PolicyDecision.decided_at.is_(None))) == 0
    assert len(items) == 12 and all(r.ok for r in verify_all())


def test_items_of_a_tenant_without_a_policy_keep_the_default_chain(make_tenant, make_item):
    tenant = make_tenant()
    item = make_item(tenant, amount="500.00")
    assert [s.role for s in item.steps] == ["approver"]
    assert db.session.get(PolicyDecision, item.id) is None


def test_a_batch_decided_by_the_policy_keeps_the_dashboard_rollups_exact(
        admins, make_policy, make_item, make_user):
    """The batch writes items with one UPDATE, outside the ORM flush that keeps the rollups:
    it must move each item's contribution itself, and count the approvals as automatic."""
    from tests.dashboard.recompute import expected_rollups, stored_rollups

    tenant, author, checker = admins
    make_user("ann@example.com", [tenant], roles=("approver",), limit="100000")
    make_policy(tenant, author, checker, [SMALL_AUTO])
    items = [_item(make_item, tenant, amount=a) for a in ("200.00", "900.00", "5000.00")]
    assert _evaluate(tenant, *items)["auto_approved"] == 2
    decided = [db.session.get(WorkItem, i.id) for i in items]
    assert [i.decided_by_type for i in decided] == ["policy", "policy", None]
    assert stored_rollups() == expected_rollups()


def test_routing_skips_an_approver_away_whose_delegation_does_not_cover_the_item(
        admins, make_policy, make_item, make_user):
    from datetime import timedelta

    from app.models import Membership
    from app.types import utcnow

    tenant, author, checker = admins
    away = make_user("away@example.com", [tenant], roles=("approver",), limit="100000")
    stand_in = make_user("standin@example.com", [tenant], roles=("approver",), limit="100000")
    present = make_user("present@example.com", [tenant], roles=("approver",), limit="100000")
    membership = db.session.scalars(select(Membership).where(
        Membership.user_id == away.id, Membership.tenant_id == tenant.id)).one()
    today = utcnow().date()
    membership.delegate_id, membership.delegate_max_amount = stand_in.id, Decimal("1000")
    membership.delegate_from, membership.delegate_until = today - timedelta(days=1), today + timedelta(days=3)
    commit()
    make_policy(tenant, author, checker, [])  # everything takes the fallback chain
    big = _item(make_item, tenant, amount="5000.00")
    _evaluate(tenant, big)
    [assignment] = db.session.scalars(select(ApprovalAssignment).where(
        ApprovalAssignment.item_id == big.id)).all()
    # Away with a delegation up to 1,000 only: a 5,000 item goes to someone present.
    assert assignment.approver_id in {stand_in.id, present.id}
    assert assignment.approver_id != away.id
