"""Approval chains under segregation of duties and approval limits."""
from datetime import timedelta

import pytest

from app.approvals.services import approve_step, reject_approval, request_info, resubmit
from app.audit.models import AuditEvent
from app.errors import Conflict, PermissionDenied, SegregationOfDuties, ValidationFailed
from app.extensions import db
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import actor


@pytest.fixture
def team(make_tenant, make_user):
    tenant = make_tenant()
    return {
        "tenant": tenant,
        "requester": make_user("req@x.test", [tenant], roles=("requester", "approver"),
                               limit="1000000"),
        "approver": make_user("app@x.test", [tenant], roles=("approver",), limit="60000"),
        "approver2": make_user("app2@x.test", [tenant], roles=("approver",), limit="60000"),
        "small": make_user("small@x.test", [tenant], roles=("approver",), limit="500"),
        "manager": make_user("mgr@x.test", [tenant], roles=("manager", "approver"),
                             limit="1000000"),
    }


def _events(item, action):
    return db.session.query(AuditEvent).filter_by(item_id=item.id, action=action).all()


def test_requester_never_approves_their_own_item(team, make_item):
    item = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    with pytest.raises(SegregationOfDuties):
        approve_step(actor(team["requester"]), item.id)
    db.session.rollback()
    db.session.refresh(item)
    assert item.state == "pending"
    assert _events(item, "item.approve") == []


def test_one_person_cannot_approve_two_steps_of_one_item(team, make_item):
    item = make_item(team["tenant"], amount="75000.00", requester=team["requester"])
    assert [s.role for s in item.steps] == ["approver", "manager"]
    approve_step(actor(team["manager"]), item.id)
    commit()
    db.session.refresh(item)
    assert item.state == "pending" and item.steps[1].state == "open"
    with pytest.raises(SegregationOfDuties, match="step 1"):
        approve_step(actor(team["manager"]), item.id)


def test_two_step_chain_approves_after_the_last_step(team, make_item):
    item = make_item(team["tenant"], amount="75000.00", requester=team["requester"])
    approve_step(actor(team["approver"]), item.id)
    commit()
    approve_step(actor(team["manager"]), item.id)
    commit()
    db.session.refresh(item)
    assert item.state == "approved"
    assert [(s.state, s.decided_by_id) for s in item.steps] == [
        ("approved", team["approver"].id), ("approved", team["manager"].id)]
    assert len(_events(item, "approval.step_approved")) == 1
    assert len(_events(item, "item.approve")) == 1


def test_approver_below_the_step_limit_is_refused(team, make_item):
    item = make_item(team["tenant"], amount="900.00", requester=team["requester"])
    with pytest.raises(PermissionDenied, match=r"USD 500.00.*USD 900.00"):
        approve_step(actor(team["small"]), item.id)


def test_a_step_needs_its_role(team, make_item):
    item = make_item(team["tenant"], amount="75000.00", requester=team["requester"])
    approve_step(actor(team["approver"]), item.id)
    commit()
    with pytest.raises(PermissionDenied, match="manager"):
        approve_step(actor(team["approver2"]), item.id)


def test_rejecting_needs_a_reason_and_cancels_later_steps(team, make_item):
    item = make_item(team["tenant"], amount="75000.00", requester=team["requester"])
    with pytest.raises(ValidationFailed):
        reject_approval(actor(team["approver"]), item.id, reason="  ")
    reject_approval(actor(team["approver"]), item.id, reason="Outside guidance")
    commit()
    db.session.refresh(item)
    assert item.state == "rejected"
    assert [s.state for s in item.steps] == ["rejected", "cancelled"]
    assert _events(item, "item.reject")[0].comment == "Outside guidance"


def test_info_request_goes_back_to_pending_when_the_requester_answers(team, make_item):
    item = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    request_info(actor(team["approver"]), item.id, question="Which contract?")
    commit()
    with pytest.raises(PermissionDenied):
        resubmit(actor(team["approver"]), item.id, answer="n/a")
    db.session.rollback()
    resubmit(actor(team["requester"]), item.id, answer="MSA-2041")
    commit()
    db.session.refresh(item)
    assert item.state == "pending"


def test_second_approver_is_told_who_decided_first(team, make_item):
    item = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    approve_step(actor(team["approver"]), item.id)
    commit()
    with pytest.raises(Conflict, match=r"Already approved by App at \d{4}-\d\d-\d\d"):
        approve_step(actor(team["approver2"]), item.id)


def test_double_click_on_approve_changes_nothing_more(team, make_item):
    item = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    approve_step(actor(team["approver"]), item.id)
    commit()
    version = item.version
    approve_step(actor(team["approver"]), item.id)
    commit()
    db.session.refresh(item)
    assert item.version == version
    assert len(_events(item, "item.approve")) == 1


def test_stale_form_version_is_refused(team, make_item):
    item = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    stale = item.version
    request_info(actor(team["approver"]), item.id, question="PO number?")
    commit()
    resubmit(actor(team["requester"]), item.id, answer="PO-1")
    commit()
    with pytest.raises(Conflict, match="changed by"):
        approve_step(actor(team["approver2"]), item.id, expected_version=stale)


def test_delegate_approves_on_behalf_of_an_absent_named_approver(team, make_item):
    item = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    step = item.steps[0]
    step.approver_id = team["approver"].id
    away = team["approver"].membership_in(team["tenant"].id)
    commit()
    with pytest.raises(PermissionDenied, match="assigned to"):
        approve_step(actor(team["approver2"]), item.id)
    db.session.rollback()
    today = utcnow().date()
    away = team["approver"].membership_in(team["tenant"].id)
    away.delegate_id = team["approver2"].id
    away.delegate_from = today - timedelta(days=1)
    away.delegate_until = today + timedelta(days=1)
    commit()
    approve_step(actor(team["approver2"]), item.id)
    commit()
    event = _events(item, "item.approve")[0]
    assert event.actor_id == team["approver2"].id
    assert event.on_behalf_of_id == team["approver"].id
    db.session.refresh(item)
    assert item.steps[0].on_behalf_of_id == team["approver"].id


def test_delegation_outside_its_dates_does_not_apply(team, make_item):
    item = make_item(team["tenant"], amount="100.00", requester=team["requester"])
    item.steps[0].approver_id = team["approver"].id
    away = team["approver"].membership_in(team["tenant"].id)
    today = utcnow().date()
    away.delegate_id = team["approver2"].id
    away.delegate_from = today - timedelta(days=10)
    away.delegate_until = today - timedelta(days=1)
    commit()
    with pytest.raises(PermissionDenied, match="assigned to"):
        approve_step(actor(team["approver2"]), item.id)
