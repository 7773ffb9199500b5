"""Every transition table, move by move: what is allowed happens, anything else is refused."""
import itertools

import pytest

from app.errors import Conflict, InvalidTransition
from app.extensions import db
from app.unit_of_work import commit
from app.work.services import transition
from app.work.states import FINAL_STATES, STATE_ENUMS, TRANSITIONS
from tests.conftest import SYSTEM, arrange

# DESIGN §2, restated by hand: (from, action) -> to. The tables in app.work.states must match.
EXPECTED = {
    "approval": {
        ("pending", "approve"): "approved",
        ("pending", "reject"): "rejected",
        ("pending", "request_info"): "info_requested",
        ("info_requested", "resubmit"): "pending",
        ("pending", "withdraw"): "withdrawn",
        ("info_requested", "withdraw"): "withdrawn",
        ("pending", "expire"): "expired",
        ("info_requested", "expire"): "expired",
    },
    "billing_exception": {
        ("open", "investigate"): "investigating",
        ("waiting_on_customer", "investigate"): "investigating",
        ("escalated", "investigate"): "investigating",
        ("open", "resolve"): "resolved",
        ("investigating", "resolve"): "resolved",
        ("waiting_on_customer", "resolve"): "resolved",
        ("escalated", "resolve"): "resolved",
        ("open", "wait_on_customer"): "waiting_on_customer",
        ("investigating", "wait_on_customer"): "waiting_on_customer",
        ("open", "escalate"): "escalated",
        ("investigating", "escalate"): "escalated",
        ("waiting_on_customer", "escalate"): "escalated",
    },
    "settlement_dispute": {
        ("open", "review"): "under_review",
        ("escalated", "review"): "under_review",
        **{(src, "accept"): "accepted" for src in ("open", "under_review", "escalated")},
        **{(src, "reject"): "rejected" for src in ("open", "under_review", "escalated")},
        **{(src, "partially_accept"): "partially_accepted"
           for src in ("open", "under_review", "escalated")},
        ("open", "escalate"): "escalated",
        ("under_review", "escalate"): "escalated",
    },
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_transition_table_matches_the_design(kind):
    table = {(src, action): dst for (src, dst), action in TRANSITIONS[kind].items()}
    assert table == EXPECTED[kind]


def _cases():
    for kind, expected in EXPECTED.items():
        states = [s.value for s in STATE_ENUMS[kind]]
        actions = sorted({action for (_src, action) in expected})
        for state, action in itertools.product(states, actions):
            yield pytest.param(kind, state, action, expected.get((state, action)),
                               id=f"{kind}-{state}-{action}")


@pytest.mark.parametrize("kind, state, action, to_state", list(_cases()))
def test_move_is_allowed_exactly_when_the_table_says(make_tenant, make_item, kind, state,
                                                      action, to_state):
    tenant = make_tenant()
    item = make_item(tenant, kind=kind)
    arrange(item, state=state)
    version = item.version
    if to_state is None:
        expected_error = Conflict if state in FINAL_STATES[kind] else InvalidTransition
        with pytest.raises((InvalidTransition, Conflict)) as refused:
            transition(SYSTEM, item, action)
        # A final item says it is already decided; anything else says the move is not allowed.
        if state in FINAL_STATES[kind] and not _reached_by(kind, action, state):
            assert isinstance(refused.value, expected_error)
        db.session.rollback()
        db.session.refresh(item)
        assert item.state == state and item.version == version
    else:
        transition(SYSTEM, item, action)
        commit()
        db.session.refresh(item)
        assert item.state == to_state
        assert item.version == version + 1


def _reached_by(kind, action, state):
    return any(dst == state and name == action for (_s, dst), name in TRANSITIONS[kind].items())


def test_repeating_a_transition_changes_nothing(make_tenant, make_item):
    tenant = make_tenant()
    item = make_item(tenant, kind="billing_exception")
    transition(SYSTEM, item, "investigate")
    commit()
    version = item.version
    transition(SYSTEM, item, "investigate")  # a double click or a retried job
    commit()
    db.session.refresh(item)
    assert item.state == "investigating" and item.version == version


def test_final_state_records_resolution_time_and_sla_outcome(make_tenant, make_item):
    tenant = make_tenant()
    item = make_item(tenant, kind="settlement_dispute")
    transition(SYSTEM, item, "accept")
    commit()
    db.session.refresh(item)
    assert item.resolved_at is not None
    assert item.sla_state == "met"


def test_waiting_on_someone_outside_pauses_the_sla_state(make_tenant, make_item):
    tenant = make_tenant()
    item = make_item(tenant, kind="billing_exception")
    transition(SYSTEM, item, "wait_on_customer")
    commit()
    assert item.sla_state == "paused"
    transition(SYSTEM, item, "investigate")
    commit()
    assert item.sla_state == "on_track"


def test_open_states_are_the_ones_the_queue_indexes_are_partial_on():
    from app.models import OPEN_STATE_VALUES
    from app.work.states import OPEN_STATES

    assert tuple(sorted(OPEN_STATE_VALUES)) == OPEN_STATES
    assert "pending" in OPEN_STATES and "approved" not in OPEN_STATES
