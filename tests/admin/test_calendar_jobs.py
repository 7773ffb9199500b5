"""A change of a tenant's calendar moves its open items' due times (in a real worker, after the
change committed): each keeps the working time it had left; breached items stay breached; the
item's version is untouched, so nobody's open form goes stale."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.admin.models import TenantClosure
from app.admin.tenants import add_closure, remove_closure, update_tenant
from app.audit.models import AuditEvent
from app.extensions import db
from app.models import Tenant, WorkItem
from app.work.calendar import calendar_for
from app.types import utcnow
from app.unit_of_work import commit
from tests.approvals.conftest import run_worker
from tests.conftest import actor, arrange
from tests.dashboard.recompute import expected_rollups, stored_rollups


def _reload(item_id: int) -> WorkItem:
    db.session.expire_all()
    return db.session.get(WorkItem, item_id)


def test_a_closure_on_the_due_day_moves_open_items_by_the_working_time_they_had_left(
        app, org, make_item, relaying, inbox):
    item = make_item(org.northwind, kind="billing_exception", amount="900.00")
    late = make_item(org.northwind, kind="billing_exception", amount="100.00")
    arrange(late, sla_due_at=utcnow() - timedelta(hours=1))
    item = _reload(item.id)
    old_due, version = item.sla_due_at, item.version
    old_cal = calendar_for(item.tenant)
    due_day = old_due.astimezone(old_cal.tz).date()
    now = utcnow()
    left = old_cal.between(now, old_due)

    add_closure(actor(org.admin), db.session.get(Tenant, org.northwind.id), first_day=due_day,
                last_day=due_day, reason="Flood")
    commit()
    run_worker(app)

    moved = _reload(item.id)
    new_cal = calendar_for(moved.tenant)
    assert moved.sla_due_at > old_due
    assert moved.sla_due_at.astimezone(new_cal.tz).date() != due_day
    # The working time left is kept (measured from a moment just after the change).
    assert abs(new_cal.between(now, moved.sla_due_at) - left) < timedelta(minutes=1)
    assert moved.version == version
    assert _reload(late.id).sla_due_at < utcnow()  # a breached item stays breached
    [event] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "sla.due_times_moved")).all()
    assert event.data == {"items": 1, "reason": "closure added"}
    # The dashboard's backlog by due time moved with it (the forecast reads it).
    assert stored_rollups() == expected_rollups()

    # Removing the closure gives the day back.
    closure_id = db.session.execute(select(TenantClosure.id)).scalar_one()
    remove_closure(actor(org.admin), db.session.get(Tenant, org.northwind.id), closure_id)
    commit()
    run_worker(app)
    assert abs(_reload(item.id).sla_due_at - old_due) < timedelta(minutes=1)
    assert stored_rollups() == expected_rollups()


def test_longer_working_hours_bring_due_times_closer(app, org, make_item, relaying, inbox):
    item = make_item(org.northwind, kind="settlement_dispute", amount="5000.00")
    old_due = _reload(item.id).sla_due_at
    tenant = db.session.get(Tenant, org.northwind.id)
    update_tenant(actor(org.admin), tenant, name=tenant.name, currency="USD",
                  timezone=tenant.timezone, calendar_country="US",
                  working_days=["1", "2", "3", "4", "5", "6", "7"], work_start="07:00",
                  work_end="20:00")
    commit()
    run_worker(app)
    assert _reload(item.id).sla_due_at < old_due
