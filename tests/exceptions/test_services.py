"""Billing exceptions and settlement disputes through their actions' own rules."""
from decimal import Decimal

import pytest

from app.errors import PermissionDenied, ValidationFailed
from app.exceptions.services import act_on_dispute, act_on_exception
from app.extensions import db
from app.unit_of_work import commit
from tests.conftest import actor


@pytest.fixture
def people(make_tenant, make_user):
    tenant = make_tenant()
    return tenant, make_user("ana@x.test", [tenant], roles=("analyst",)), make_user(
        "apr@x.test", [tenant], roles=("approver",))


def test_resolving_an_exception_needs_a_known_resolution_code(people, make_item):
    tenant, analyst, _ = people
    item = make_item(tenant, kind="billing_exception", amount="250.00")
    with pytest.raises(ValidationFailed):
        act_on_exception(actor(analyst), item.id, "resolve", resolution_code="because")
    act_on_exception(actor(analyst), item.id, "resolve", resolution_code="credit_issued")
    commit()
    db.session.refresh(item)
    assert (item.state, item.resolution_code) == ("resolved", "credit_issued")


def test_an_approver_cannot_work_billing_exceptions(people, make_item):
    tenant, _, approver = people
    item = make_item(tenant, kind="billing_exception")
    with pytest.raises(PermissionDenied):
        act_on_exception(actor(approver), item.id, "investigate")


def test_partial_acceptance_adjusts_within_the_delta(people, make_item):
    tenant, analyst, _ = people
    item = make_item(tenant, kind="settlement_dispute", amount="1000.00",
                     claimed_amount="1000.00", calculated_amount="600.00")
    assert item.delta == Decimal("400.00")
    for bad in ("0", "400.00", "-5", "abc", "10.001"):
        with pytest.raises(ValidationFailed):
            act_on_dispute(actor(analyst), item.id, "partially_accept", adjustment_amount=bad)
    act_on_dispute(actor(analyst), item.id, "partially_accept", adjustment_amount="150.50")
    commit()
    db.session.refresh(item)
    assert (item.state, item.adjustment_amount) == ("partially_accepted", Decimal("150.50"))


def test_rejecting_a_dispute_needs_a_reason(people, make_item):
    tenant, analyst, _ = people
    item = make_item(tenant, kind="settlement_dispute")
    with pytest.raises(ValidationFailed):
        act_on_dispute(actor(analyst), item.id, "reject", comment="")
    act_on_dispute(actor(analyst), item.id, "reject", comment="Statement already settled")
    commit()
    assert item.state == "rejected"
