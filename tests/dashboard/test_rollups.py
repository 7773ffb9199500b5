"""The dashboard rollups follow every change of an item in the same transaction, and equal a
plain recomputation from the items after any sequence of changes."""
from datetime import timedelta

from sqlalchemy import delete, func, select

from app.actors import Actor, ActorType
from app.approvals.services import approve_step, reject_approval
from app.work.rollup_tables import (
    daily_rollups,
    open_due_rollups,
    open_rollups,
    queue_count_rollups,
    step_rollups,
)
from app.work.rollups import rebuild_rollups
from app.exceptions.services import act_on_dispute, act_on_exception
from app.extensions import db
from app.unit_of_work import commit
from app.work.services import claim_item, reassign_item, release_item, transition
from app.work.queries import get_item
from tests.conftest import actor, arrange
from tests.dashboard.recompute import expected_rollups, quarter_hour, stored_rollups


def _agree():
    db.session.expire_all()
    assert stored_rollups() == expected_rollups()
    # A backlog row that reaches zero items is removed: that table stays the backlog's size.
    for table in (open_rollups, open_due_rollups, queue_count_rollups):
        assert db.session.scalar(select(func.count()).select_from(table)
                                 .where(table.c["items"] == 0)) == 0


def test_rollups_follow_creation_claims_moves_and_decisions(make_tenant, make_user, make_item):
    northwind = make_tenant()
    contoso = make_tenant("contoso", "EUR", "Europe/Berlin", "DE")
    approver = make_user("avery@x.test", [northwind, contoso], roles=("approver",))
    analyst = make_user("ana@x.test", [northwind, contoso], roles=("analyst",))
    manager = make_user("morgan@x.test", [northwind, contoso], roles=("manager",))
    requester = make_user("riley@x.test", [northwind, contoso], roles=("requester",))
    a1 = make_item(northwind, requester=requester)
    a2 = make_item(contoso, amount="200.00", requester=requester)
    a3 = make_item(northwind, amount="300.00", requester=requester, subtype="refund")
    e1 = make_item(northwind, kind="billing_exception", amount="900.00", amount_at_risk="450.00")
    e2 = make_item(contoso, kind="billing_exception", subtype="price_mismatch")
    d1 = make_item(northwind, kind="settlement_dispute", amount="1000.00",
                   calculated_amount="700.00")
    _agree()

    claim_item(actor(analyst), e1.id)
    commit()
    _agree()
    reassign_item(actor(manager), e1.id, manager.id)
    commit()
    _agree()
    release_item(actor(manager), e1.id)
    commit()
    _agree()
    approve_step(actor(approver), a1.id)
    commit()
    _agree()
    reject_approval(actor(approver), a2.id, reason="Over budget")
    act_on_exception(actor(analyst), e1.id, "wait_on_customer", comment="PO missing")
    act_on_dispute(actor(analyst), d1.id, "partially_accept", adjustment_amount="100.00")
    commit()
    _agree()
    act_on_exception(actor(analyst), e1.id, "resolve", resolution_code="credit_issued")
    policy = Actor(ActorType.POLICY, label="policy", tenant_id=northwind.id)
    transition(policy, get_item(policy, a3.id), "approve")
    commit()
    _agree()
    daily, backlog, due, queues, _steps = stored_rollups()
    assert sum(v.get("auto_approved", 0) for v in daily.values()) == 1
    assert sum(v.get("created", 0) for v in daily.values()) == 6
    assert sum(v.get("resolved", 0) for v in daily.values()) == 5
    assert sum(v["items"] for v in backlog.values()) == 1  # only e2 is still open
    assert list(due) == [(contoso.id, quarter_hour(e2.sla_due_at), "billing_exception")]
    assert queues == {(contoso.id, "billing_exception", 0, ""): {"items": 1}}
    assert e2.id


def test_a_change_rolled_back_leaves_the_rollups_as_they_were(make_tenant, make_user, make_item):
    tenant = make_tenant()
    analyst = make_user("ana@x.test", [tenant], roles=("analyst",))
    item = make_item(tenant, kind="billing_exception")
    before = stored_rollups()
    act_on_exception(actor(analyst), item.id, "resolve", resolution_code="credit_issued")
    db.session.rollback()
    assert stored_rollups() == before
    _agree()


def test_changes_to_an_item_loaded_before_a_commit_still_move_its_old_contribution(
        make_tenant, make_user, make_item):
    """An item expired by a commit and then changed: the old values are loaded on change, so
    its old contribution is taken away, not left behind."""
    tenant = make_tenant()
    item = make_item(tenant, kind="billing_exception")
    commit()  # expires the item
    arrange(item, created_at=item.created_at - timedelta(days=3))
    _agree()


def test_rebuild_gives_the_same_rollups_as_the_live_path(make_tenant, make_user, make_item):
    tenant = make_tenant()
    analyst = make_user("ana@x.test", [tenant], roles=("analyst",))
    items = [make_item(tenant, kind="billing_exception") for _ in range(4)]
    act_on_exception(actor(analyst), items[0].id, "resolve", resolution_code="credit_issued")
    claim_item(actor(analyst), items[1].id)
    commit()
    live = stored_rollups()
    db.session.execute(delete(daily_rollups))
    db.session.execute(delete(open_rollups))
    db.session.execute(delete(open_due_rollups))
    db.session.execute(delete(queue_count_rollups))
    db.session.execute(delete(step_rollups))
    commit()
    assert stored_rollups() == ({}, {}, {}, {}, {})
    assert rebuild_rollups(db.session)["items"] == 4
    commit()
    assert stored_rollups() == live
    _agree()


def test_the_due_slot_rollup_follows_a_paused_clock_and_a_moved_due_time(
        make_tenant, make_user, make_item):
    """Waiting on the customer keeps the due time; resuming moves it by the time waited, and
    the item's count moves to its new slot; a due time set directly moves it too."""
    tenant = make_tenant()
    analyst = make_user("ana@x.test", [tenant], roles=("analyst",))
    item = make_item(tenant, kind="billing_exception")
    act_on_exception(actor(analyst), item.id, "wait_on_customer", comment="PO missing")
    commit()
    _agree()
    db.session.expire_all()
    paused = get_item(actor(analyst), item.id)
    arrange(paused, sla_paused_at=paused.sla_paused_at - timedelta(days=2))  # waited two days
    act_on_exception(actor(analyst), item.id, "investigate")
    commit()
    _agree()
    item = get_item(actor(analyst), item.id)
    arrange(item, sla_due_at=item.sla_due_at + timedelta(hours=5))
    _agree()
    act_on_exception(actor(analyst), item.id, "resolve", resolution_code="credit_issued")
    commit()
    _agree()
    assert stored_rollups()[2] == {}
