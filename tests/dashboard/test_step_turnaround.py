"""Turnaround per approval step type: business hours from each step's opening to its decision,
grouped by how the step was routed, for the steps decided in the range: kept in the step
rollup as each step is decided, and equal to a rebuild from the stored steps."""
from datetime import UTC, datetime

from app.actors import Actor
from app.approvals.services import approve_step
from app.dashboard.services import dashboard_for, parse_scope
from app.extensions import db
from app.models import WorkItem
from app.policy import evaluation
from app.unit_of_work import commit
from app.work.rollups import rebuild_rollups
from tests.conftest import SYSTEM, actor, arrange
from tests.dashboard.recompute import expected_rollups, stored_rollups
from tests.policy.conftest import admins, make_policy  # noqa: F401 (fixtures)

# Tuesday 1 December 2026 in New York (UTC-5): 10:00, 11:00, 12:00 and 14:00 local.
TEN, ELEVEN, NOON, TWO = (datetime(2026, 12, 1, h + 5, 0, tzinfo=UTC) for h in (10, 11, 12, 14))


def _decided(tenant, make_item, approvers, opened, decided, **step_values):
    item = make_item(tenant, amount="500.00")
    evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [item.id])
    commit()
    for person in approvers:
        approve_step(actor(person), item.id)
        commit()
    item = db.session.get(WorkItem, item.id)
    arrange(item, created_at=opened)
    step = item.steps[0]
    step.decided_at = decided
    for name, value in step_values.items():
        setattr(step, name, value)
    commit()


def test_turnaround_per_step_type_counts_each_steps_business_hours(
        admins, make_policy, make_item, make_user):  # noqa: F811
    from app.admin.groups import create_group

    tenant, author, checker = admins
    anna = make_user("anna@x.test", [tenant], roles=("approver",))
    ben = make_user("ben@x.test", [tenant], roles=("approver",))
    manager = make_user("max@x.test", [tenant], roles=("manager",))
    create_group(SYSTEM, tenant, name="Treasury", member_ids=[anna.id, ben.id])
    commit()
    make_policy(tenant, author, checker, [
        ("Two of treasury", "amount > 600", "steps", '2 of group "Treasury"'),
        ("One approver", "amount > 0", "steps", "approver >= 0")])
    _decided(tenant, make_item, [anna], TEN, NOON)  # a single approver: 2 hours
    _decided(tenant, make_item, [ben], TEN, TWO)  # another: 4 hours
    _decided(tenant, make_item, [anna], ELEVEN, TWO, escalation_level=1)  # escalated: 3 hours
    item = make_item(tenant, amount="700.00")  # two of a group: 1 hour
    evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [item.id])
    commit()
    for person in (anna, ben):
        approve_step(actor(person), item.id)
        commit()
    item = db.session.get(WorkItem, item.id)
    arrange(item, created_at=TEN)
    item.steps[0].decided_at = ELEVEN
    commit()
    # The times were rewritten by hand, as a bulk load would: the rollups are rebuilt from them.
    rebuild_rollups(db.session)
    commit()
    scope = parse_scope(Actor.for_user(manager), {"tenant": str(tenant.id), "days": "7"})
    figures = {t.label: (t.resolved, t.mean_hours) for t in dashboard_for(scope).turnaround["step"]}
    assert figures == {"Single approver": (2, 3.0), "Group: M of N": (1, 1.0),
                       "Escalated": (1, 3.0)}


def test_each_decision_adds_its_step_to_the_rollup_as_a_rebuild_would(
        admins, make_policy, make_item, make_user):  # noqa: F811
    """Through the write path, with the clock as it is: a two-step approval approved step by
    step, a one-step one rejected; the rollup equals a plain recomputation and a rebuild, and
    the dashboard shows the three decided steps."""
    from app.approvals.services import reject_approval

    tenant, author, checker = admins
    anna = make_user("anna@x.test", [tenant], roles=("approver",))
    ben = make_user("ben@x.test", [tenant], roles=("approver", "manager"))
    make_policy(tenant, author, checker, [
        ("Two steps", "amount > 600", "steps", "approver >= 0\nmanager >= 0"),
        ("One approver", "amount > 0", "steps", "approver >= 0")])
    two = make_item(tenant, amount="700.00")
    one = make_item(tenant, amount="100.00")
    evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [two.id, one.id])
    commit()
    approve_step(actor(anna), two.id)
    commit()
    approve_step(actor(ben), two.id)
    commit()
    reject_approval(actor(anna), one.id, reason="No budget")
    commit()
    assert db.session.get(WorkItem, two.id).state == "approved"
    live = stored_rollups()
    assert live == expected_rollups()
    assert sum(row["decided"] for row in live[4].values()) == 3
    rebuild_rollups(db.session)
    commit()
    assert stored_rollups() == live
    scope = parse_scope(Actor.for_user(ben), {"tenant": str(tenant.id), "days": "7"})
    figures = {t.label: t.resolved for t in dashboard_for(scope).turnaround["step"]}
    assert figures == {"Single approver": 3}
