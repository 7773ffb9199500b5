"""No dead ends: every non-final state of every kind has someone (a role, the requester, or the
source system through the API) with an action out of it — read from the state table, and
walked for real through the write path, an item of each kind visiting each of its open
states and leaving it."""
from __future__ import annotations

import pytest

from app.actors import Actor, ActorType
from app.models import Kind
from app.unit_of_work import commit
from app.work.actions import perform
from app.work.states import ACTION_ROLES, FINAL_STATES, STATE_ENUMS, TRANSITIONS
from tests.conftest import actor

# Actions whose taker the service names rather than a role: the item's requester, or, for an
# item no person requested, the source system that raised it (POST .../resubmit).
REQUESTER_ACTIONS = {"resubmit", "withdraw"}


@pytest.mark.parametrize("kind", list(STATE_ENUMS))
def test_every_open_state_has_an_exit_someone_may_take(kind):
    for state in (s.value for s in STATE_ENUMS[kind]):
        if state in FINAL_STATES[kind]:
            continue
        exits = {action for (start, _end), action in TRANSITIONS[kind].items() if start == state}
        takers = {a for a in exits if ACTION_ROLES[kind][a] or a in REQUESTER_ACTIONS}
        assert takers, f"{kind} in {state} has no way out for anyone but the system"


@pytest.fixture
def crew(make_tenant, make_user):
    tenant = make_tenant()
    return {
        "tenant": tenant,
        "requester": make_user("rita@x.test", [tenant], roles=("requester",)),
        "approver": make_user("ann@x.test", [tenant], roles=("approver",), limit="100000"),
        "analyst": make_user("ava@x.test", [tenant], roles=("analyst",)),
        "manager": make_user("max@x.test", [tenant], roles=("manager",), limit="1000000"),
    }


def _walk(item, steps):
    """Take each (actor, action, extra) in turn; return the states visited."""
    seen = [item.state]
    for who, action, extra in steps:
        item = perform(who, item.id, action, **extra)
        commit()
        seen.append(item.state)
    return seen


def test_a_requested_approval_leaves_every_open_state(crew, make_item):
    item = make_item(crew["tenant"], amount="500.00", requester=crew["requester"])
    seen = _walk(item, [
        (actor(crew["approver"]), "request_info", {"comment": "Which contract?"}),
        (actor(crew["requester"]), "resubmit", {"comment": "C-88"}),
        (actor(crew["approver"]), "approve", {}),
    ])
    assert seen == ["pending", "info_requested", "pending", "approved"]


def test_an_approval_from_a_source_system_is_answered_by_that_system(crew, make_item):
    item = make_item(crew["tenant"], amount="500.00")  # no person requested it
    source = Actor(ActorType.API, label="api-token test", tenant_id=crew["tenant"].id)
    seen = _walk(item, [
        (actor(crew["approver"]), "request_info", {"comment": "Which invoice?"}),
        (source, "resubmit", {"comment": "INV-7"}),
        (actor(crew["approver"]), "request_info", {"comment": "And the PO?"}),
        (source, "withdraw", {"comment": "Raised in error"}),
    ])
    assert seen == ["pending", "info_requested", "pending", "info_requested", "withdrawn"]


def test_a_billing_exception_leaves_every_open_state(crew, make_item):
    item = make_item(crew["tenant"], kind=Kind.BILLING_EXCEPTION.value)
    ava = actor(crew["analyst"])
    seen = _walk(item, [
        (ava, "wait_on_customer", {"comment": "Asked for the card"}),
        (ava, "investigate", {}),
        (ava, "escalate", {"comment": "Needs a manager"}),
        (actor(crew["manager"]), "resolve", {"resolution_code": "customer_paid"}),
    ])
    assert seen == ["open", "waiting_on_customer", "investigating", "escalated", "resolved"]


def test_a_settlement_dispute_leaves_every_open_state(crew, make_item):
    item = make_item(crew["tenant"], kind=Kind.SETTLEMENT_DISPUTE.value, amount="900.00",
                     claimed_amount="900.00", calculated_amount="600.00")
    ava = actor(crew["analyst"])
    seen = _walk(item, [
        (ava, "escalate", {"comment": "Above my authority"}),
        (actor(crew["manager"]), "review", {}),
        (ava, "partially_accept", {"adjustment_amount": "150.00"}),
    ])
    assert seen == ["open", "escalated", "under_review", "partially_accepted"]
