"""Creating many items in one unit of work (the import's path): the same checks, values, SLA
due times, audit events, rollups and idempotency as create_item, one items.created outbox
message per thousand items, and a batch with one bad row refused before anything is written."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.audit.services import verify_all
from app.errors import PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import ApprovalAssignment, WorkItem
from app.outbox.models import OutboxMessage
from app.work.sla_clock import sla_due_at
from app.unit_of_work import commit
from app.work.services import ITEMS_PER_MESSAGE, create_item, create_items
from tests.conftest import actor
from tests.dashboard.recompute import expected_rollups, stored_rollups


def _exception(n: int, **extra) -> dict:
    return {"kind": "billing_exception", "subtype": "payment_failed", "title": f"Card {n}",
            "external_ref": f"EX-{n}", "source_system": "billing",
            "counterparty": f"Customer {n % 7}", "amount": f"{100 + n}.50",
            "details": {"invoice_number": f"INV-{n}"}, **extra}


def _dispute(n: int) -> dict:
    return {"kind": "settlement_dispute", "subtype": "commission", "title": f"Claim {n}",
            "external_ref": f"ST-{n}", "source_system": "partner-portal",
            "counterparty": "Contoso Partners", "amount": "1200.00",
            "claimed_amount": "1200.00", "calculated_amount": "900.00", "priority": "high"}


@pytest.fixture
def analyst(make_tenant, make_user):
    tenant = make_tenant()
    return tenant, make_user("analyst@x.test", [tenant], roles=("analyst",))


def _count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def test_a_batch_makes_the_items_create_item_would(analyst):
    tenant, person = analyst
    single, _made = create_item(actor(person), tenant_id=tenant.id, **_exception(0))
    ids, existing = create_items(actor(person), tenant.id, [_exception(1), _dispute(2)])
    commit()
    assert existing == 0 and len(ids) == 2
    db.session.expire_all()
    single = db.session.get(WorkItem, single.id)
    batch, dispute = (db.session.get(WorkItem, i) for i in ids)
    columns = ("kind", "subtype", "state", "currency", "priority", "sla_state", "version",
               "last_actor_id", "source_system")
    assert [getattr(batch, c) for c in columns] == [getattr(single, c) for c in columns]
    assert (batch.amount, batch.amount_at_risk, batch.details) == (
        101.50, 101.50, {"invoice_number": "INV-1"})
    assert batch.sla_due_at == sla_due_at(tenant, "billing_exception", "normal",
                                          batch.created_at)
    assert (dispute.state, dispute.claimed_amount, dispute.calculated_amount) == (
        "open", 1200, 900)
    assert dispute.sla_due_at == sla_due_at(tenant, "settlement_dispute", "high",
                                            dispute.created_at)
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "item.created")
                                .order_by(AuditEvent.seq)).all()
    assert [e.item_id for e in events] == [single.id, *ids]
    assert events[1].actor_id == person.id and events[1].to_state == "open"
    assert {k: events[1].data[k] for k in ("kind", "external_ref", "amount")} == {
        "kind": "billing_exception", "external_ref": "EX-1", "amount": "101.50"}
    assert all(report.ok for report in verify_all())
    assert stored_rollups() == expected_rollups()


def test_one_message_per_thousand_items_carries_their_ids(analyst):
    tenant, person = analyst
    rows = [_exception(n) for n in range(2 * ITEMS_PER_MESSAGE + 5)]
    ids, _existing = create_items(actor(person), tenant.id, rows)
    commit()
    messages = db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    assert [m.topic for m in messages] == ["items.created"] * 3
    assert [len(m.payload["item_ids"]) for m in messages] == [1000, 1000, 5]
    assert [i for m in messages for i in m.payload["item_ids"]] == ids
    assert _count(AuditEvent, AuditEvent.action == "item.created") == len(rows)
    assert stored_rollups() == expected_rollups()


def test_rows_already_there_and_repeated_rows_are_created_once(analyst):
    tenant, person = analyst
    create_item(actor(person), tenant_id=tenant.id, **_exception(1))
    commit()
    ids, existing = create_items(actor(person), tenant.id,
                                 [_exception(1), _exception(2), _exception(2), _exception(3)])
    commit()
    assert (len(ids), existing) == (2, 2)
    again, existing = create_items(actor(person), tenant.id, [_exception(2), _exception(3)])
    commit()
    assert (again, existing) == ([], 2)
    assert _count(WorkItem) == 3
    assert _count(AuditEvent, AuditEvent.action == "item.created") == 3
    assert stored_rollups() == expected_rollups()


def test_one_bad_row_refuses_the_whole_batch_before_anything_is_written(analyst):
    tenant, person = analyst
    rows = [_exception(1), _exception(2), _exception(3, currency="EUR"), _exception(4)]
    with pytest.raises(ValidationFailed) as refused:
        create_items(actor(person), tenant.id, rows)
    assert refused.value.message.startswith("Item 3:")
    assert refused.value.fields == {"3.currency": "this tenant works in USD"}
    commit()
    assert _count(WorkItem) == 0 and _count(OutboxMessage) == 0
    assert _count(AuditEvent, AuditEvent.action == "item.created") == 0


def test_the_batch_obeys_the_roles_and_tenant_of_the_single_path(analyst, make_tenant,
                                                                 make_user):
    tenant, _person = analyst
    approver = make_user("approver@x.test", [tenant], roles=("approver",))
    with pytest.raises(PermissionDenied):
        create_items(actor(approver), tenant.id, [_exception(1)])
    other = make_tenant("contoso", "EUR", "Europe/Berlin", "DE")
    outsider = make_user("outsider@x.test", [other], roles=("analyst",))
    from app.errors import NotFound

    with pytest.raises(NotFound):
        create_items(actor(outsider), tenant.id, [_exception(1)])
    assert _count(WorkItem) == 0


def test_approvals_with_no_policy_take_the_default_chain_and_an_approver(make_tenant,
                                                                       make_user):
    tenant = make_tenant()
    requester = make_user("req@x.test", [tenant], roles=("requester",))
    approver = make_user("approver@x.test", [tenant], roles=("approver",))
    rows = [{"kind": "approval", "subtype": "discount", "title": f"Deal {n}",
             "external_ref": f"D-{n}", "source_system": "crm", "counterparty": "Acme",
             "amount": "900.00", "details": {"discount_pct": "5"}} for n in range(3)]
    ids, _existing = create_items(actor(requester), tenant.id, rows)
    commit()
    db.session.expire_all()
    items = [db.session.get(WorkItem, i) for i in ids]
    assert all(i.requester_id == requester.id and [s.state for s in i.steps] == ["open"]
               for i in items)
    assert db.session.scalars(select(ApprovalAssignment.approver_id)).all() == [
        approver.id] * 3
    assert stored_rollups() == expected_rollups()


def test_an_insert_that_loses_a_race_leaves_out_what_the_other_writer_made(analyst):
    """Another writer committed one of the references after the batch looked for them: the
    batch's insert fails in its savepoint, and goes again without that row."""
    from app.work.services import _insert_new_items, arrival_values, prepare_items
    from app.types import utcnow

    tenant, person = analyst
    prepared = prepare_items(actor(person), tenant, [_exception(1), _exception(2)])
    winner, _made = create_item(actor(person), tenant_id=tenant.id, **_exception(1))
    now = utcnow()
    rows = [{**v, **arrival_values(tenant, v, now), "version": 1} for v in prepared]
    kept, ids = _insert_new_items(tenant.id, rows)
    commit()
    assert [r["external_ref"] for r in kept] == ["EX-2"] and len(ids) == 1
    assert sorted(db.session.scalars(select(WorkItem.external_ref))) == ["EX-1", "EX-2"]
    assert db.session.get(WorkItem, winner.id).external_ref == "EX-1"
