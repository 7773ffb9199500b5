"""The ledger is the only writer of work items: the guard refuses any other write, and a change
that finds its item moved on is a Conflict, on either door."""
from __future__ import annotations

import pytest
from sqlalchemy import select, text, update

from app.errors import Conflict
from app.extensions import db
from app.models import WorkItem
from app.unit_of_work import commit
from app.work import ledger
from tests.conftest import DATABASE, SYSTEM


def test_an_orm_write_of_an_item_is_refused(make_tenant, make_item):
    item = make_item(make_tenant())
    item.title = "changed behind the ledger's back"
    with pytest.raises(ledger.UnledgeredWrite):
        db.session.flush()
    db.session.rollback()


def test_a_core_update_of_items_is_refused(make_tenant, make_item):
    item = make_item(make_tenant())
    with pytest.raises(ledger.UnledgeredWrite):
        db.session.execute(update(WorkItem).where(WorkItem.id == item.id).values(title="x"))
    db.session.rollback()


@pytest.mark.skipif(DATABASE != "postgresql", reason="COPY is PostgreSQL's")
def test_a_copy_into_items_is_refused(make_tenant):
    make_tenant()
    raw = db.session.connection().connection.driver_connection
    with pytest.raises(ledger.UnledgeredWrite):
        with raw.cursor() as cursor:
            with cursor.copy("COPY work_items (title) FROM STDIN"):
                pass
    db.session.rollback()


def test_the_batch_door_turns_a_lost_race_into_a_conflict(make_tenant, make_item):
    tenant = make_tenant()
    first, second = make_item(tenant), make_item(tenant)
    rows = db.session.execute(select(*ledger.before_columns())
                              .where(WorkItem.id.in_([first.id, second.id]))
                              .order_by(WorkItem.id)).all()
    ledger.change_item(SYSTEM, db.session.get(WorkItem, second.id), {"title": "moved on"})
    commit()
    with pytest.raises(Conflict):
        ledger.apply_changes(SYSTEM, tenant.id, [ledger.Change(row, {"title": "stale"})
                                                 for row in rows])
    db.session.rollback()
    assert db.session.scalars(select(WorkItem.title).order_by(WorkItem.id)).all() == [
        first.title, "moved on"]


def test_the_single_door_turns_a_lost_race_into_a_conflict(make_tenant, make_item):
    tenant = make_tenant()
    item = make_item(tenant)
    assert item.version == 1  # read now
    with ledger.issued_by_ledger():  # another writer, committed meanwhile
        with db.engine.begin() as other:
            other.execute(text("UPDATE work_items SET version = version + 1 WHERE id = :id"),
                          {"id": item.id})
    with pytest.raises(Conflict):
        ledger.change_item(SYSTEM, item, {"title": "too late"})
    db.session.rollback()


def test_a_final_state_brings_its_finishing_rules_through_either_door(make_tenant, make_item):
    tenant = make_tenant()
    item = make_item(tenant, kind="billing_exception")
    row = db.session.execute(select(*ledger.before_columns())
                             .where(WorkItem.id == item.id)).one()
    (written,) = ledger.apply_changes(SYSTEM, tenant.id, [ledger.Change(
        row, {"state": "resolved", "resolution_code": "credit_issued"}, action="item.resolve")])
    assert written.values["resolved_at"] is not None
    assert written.values["decided_by_type"] == "system"
    assert written.values["sla_state"] == "met"
    commit()
    db.session.expire_all()
    stored = db.session.get(WorkItem, item.id)
    assert (stored.state, stored.version, stored.sla_state) == ("resolved", 2, "met")
