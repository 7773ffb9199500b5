"""Out of office: new approval steps go to the delegate within the delegation's dates and scope
(kinds, maximum amount) and not outside them; the delegate decides on the person's behalf (the
audit trail says so) and never decides an item they requested. People set it on their own page;
admins set it for others."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.approvals.services import approve_step, step_recipient
from app.audit.models import AuditEvent
from app.errors import PermissionDenied, SegregationOfDuties
from app.extensions import db
from app.models import ApprovalAssignment, Membership, WorkItem
from app.types import utcnow
from app.unit_of_work import commit
from tests.admin.conftest import post_form
from tests.approvals.conftest import run_worker
from tests.conftest import actor


@pytest.fixture
def pat(org, make_user):
    """A third approver, so work outside a delegation has somewhere else to go."""
    return make_user("pat@example.com", [org.northwind], roles=("approver",), limit="50000",
                     name="Pat Present")


def _away(org, *, days=(0, 3), kinds=None, max_amount=None, who=None, delegate=None):
    membership = (who or org.approver).membership_in(org.northwind.id)
    today = utcnow().date()
    membership.delegate_id = (delegate or org.backup).id
    membership.delegate_from = today + timedelta(days=days[0])
    membership.delegate_until = today + timedelta(days=days[1])
    membership.delegate_kinds = kinds
    membership.delegate_max_amount = max_amount
    commit()


def _routed_to(item: WorkItem) -> int | None:
    db.session.expire_all()
    step = db.session.get(WorkItem, item.id).current_step()
    assignment = db.session.get(ApprovalAssignment, step.id)
    return assignment.approver_id if assignment else None


def _item(make_item, org, amount):
    return make_item(org.northwind, amount=amount, requester=org.requester)


def test_within_dates_and_scope_the_step_goes_to_the_delegate_who_decides_on_behalf(
        org, pat, make_item):
    _away(org, kinds=["approval"], max_amount="2000")
    item = _item(make_item, org, "1500.00")
    assert _routed_to(item) == org.approver.id  # still Ann's step…
    step = item.current_step()
    assert step_recipient(item, step).id == org.backup.id  # …mailed to Dan, her delegate
    approve_step(actor(org.backup), item.id)
    commit()
    db.session.expire_all()
    decided = db.session.get(WorkItem, item.id)
    assert decided.state == "approved"
    assert decided.steps[0].decided_by_id == org.backup.id
    assert decided.steps[0].on_behalf_of_id == org.approver.id
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "item.approve")).one()
    assert (event.actor_id, event.on_behalf_of_id) == (org.backup.id, org.approver.id)


@pytest.mark.parametrize("scope, amount", [
    ({"max_amount": "2000"}, "2500.00"),  # above the delegation's maximum
    ({"kinds": ["settlement_dispute"]}, "500.00"),  # a kind it does not cover
    ({"days": (1, 5)}, "500.00"),  # starts tomorrow
    ({"days": (-5, -1)}, "500.00"),  # ended yesterday
])
def test_outside_scope_or_dates_nothing_goes_to_the_delegate(org, pat, make_item, scope,
                                                            amount):
    _away(org, **scope)
    item = _item(make_item, org, amount)
    step = item.current_step()
    routed = _routed_to(item)
    recipient = step_recipient(item, step)
    assert not (routed == org.approver.id and recipient.id == org.backup.id)
    if "days" in scope:
        # Not away: Ann gets her own work.
        assert routed == org.approver.id and recipient.id == org.approver.id
    else:
        # Away, but this item is outside what Dan covers: someone present takes it.
        assert routed in (org.backup.id, pat.id) and routed != org.approver.id
        assert recipient.id == routed


def test_a_step_reserved_for_someone_away_is_decided_on_their_behalf_only_within_scope(
        org, make_item):
    _away(org, max_amount="2000")
    small, large = _item(make_item, org, "1500.00"), _item(make_item, org, "3000.00")
    for item in (small, large):
        item.current_step().approver_id = org.approver.id  # reserved for Ann
    commit()
    with pytest.raises(PermissionDenied, match="assigned to Ann Approver"):
        approve_step(actor(org.backup), large.id)
    db.session.rollback()
    approve_step(actor(org.backup), small.id)
    commit()
    assert db.session.get(WorkItem, small.id).steps[0].on_behalf_of_id == org.approver.id


def test_a_delegate_never_decides_an_item_they_requested(org, pat, make_item):
    _away(org)
    item = make_item(org.northwind, amount="800.00", requester=org.backup)
    # Dan requested it: Ann's step is not routed through him.
    assert _routed_to(item) == pat.id
    step = db.session.get(WorkItem, item.id).current_step()
    db.session.delete(db.session.get(ApprovalAssignment, step.id))
    step.approver_id = org.approver.id  # even reserved for Ann…
    commit()
    with pytest.raises(SegregationOfDuties):
        approve_step(actor(org.backup), item.id)  # …Dan cannot decide it for her


def test_the_mail_goes_to_the_delegate_and_says_on_whose_behalf(app, org, pat, make_item,
                                                                relaying, inbox):
    _away(org, max_amount="2000")
    _item(make_item, org, "1500.00")
    run_worker(app)
    [mail] = inbox.to("dan@example.com")
    assert "on behalf of Ann Approver" in inbox.text(mail)
    assert inbox.to("ann@example.com") == []


# ---------------------------------------------------------------------------------------------
# Setting it: on one's own page, or by an admin for someone else.


def _form(org, **overrides):
    today = utcnow().date()
    return {"tenant_id": str(org.northwind.id), "delegate_id": str(org.backup.id),
            "first_day": today.isoformat(), "last_day": (today + timedelta(days=7)).isoformat(),
            "kinds": ["approval"], "max_amount": "2,000", **overrides}


def test_people_set_and_end_their_own_out_of_office(org, sign_in):
    ann = sign_in(org.approver)
    page = ann.get("/account/out-of-office")
    assert page.status_code == 200 and "Dan Deputy" in page.text
    response = post_form(ann, "/account/out-of-office", _form(org))
    assert response.status_code == 303
    db.session.expire_all()
    membership = db.session.scalars(select(Membership).where(
        Membership.user_id == org.approver.id)).one()
    assert membership.delegate_id == org.backup.id
    assert membership.delegate_kinds == ["approval"]
    assert str(membership.delegate_max_amount) == "2000.00"
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "delegation.set")).one()
    assert event.actor_id == org.approver.id and event.on_behalf_of_id is None
    assert event.data["before"] is None and event.data["after"]["delegate_id"] == org.backup.id

    ended = post_form(ann, "/account/out-of-office/clear",
                      {"tenant_id": str(org.northwind.id)})
    assert ended.status_code == 303
    db.session.expire_all()
    assert db.session.get(Membership, membership.id).delegate_id is None


@pytest.mark.parametrize("overrides, message", [
    ({"delegate_id": ""}, "choose who stands in"),
    ({"delegate_id": "APPROVER"}, "someone other than the person away"),
    ({"delegate_id": "REQUESTER"}, "holds no role that decides approvals"),
    ({"delegate_id": "CONTOSO"}, "not an active member of this tenant"),
    ({"first_day": "2027-02-10", "last_day": "2027-02-01"}, "must not be before the first day"),
    ({"first_day": "2020-01-01", "last_day": "2020-01-05"}, "is in the past"),
    ({"first_day": "not a date"}, "must be a date like 2026-01-31"),
    ({"max_amount": "-1"}, "must be zero or more"),
    ({"kinds": ["approval", "lunch"]}, "unknown kind of work"),
])
def test_bad_out_of_office_settings_re_render_with_a_message(org, sign_in, overrides, message):
    people = {"APPROVER": org.approver.id, "REQUESTER": org.requester.id,
              "CONTOSO": org.contoso_admin.id}
    if overrides.get("delegate_id") in people:
        overrides = {**overrides, "delegate_id": str(people[overrides["delegate_id"]])}
    ann = sign_in(org.approver)
    response = post_form(ann, "/account/out-of-office", _form(org, **overrides))
    assert response.status_code == 422
    assert message in response.text
    db.session.expire_all()
    assert org.approver.membership_in(org.northwind.id).delegate_id is None


def test_an_admin_sets_out_of_office_for_someone_else_and_the_audit_says_for_whom(org,
                                                                                 sign_in):
    admin = sign_in(org.admin)
    response = post_form(admin, f"/admin/t/northwind/people/{org.approver.id}/delegation",
                         _form(org, kinds=[], max_amount=""))
    assert response.status_code == 303
    db.session.expire_all()
    membership = org.approver.membership_in(org.northwind.id)
    assert membership.delegate_id == org.backup.id
    assert membership.delegate_kinds is None and membership.delegate_max_amount is None
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "delegation.set")).one()
    assert (event.actor_id, event.on_behalf_of_id) == (org.admin.id, org.approver.id)
    bad = post_form(admin, f"/admin/t/northwind/people/{org.approver.id}/delegation",
                    _form(org, delegate_id=str(org.approver.id)))
    assert bad.status_code == 422 and "someone other than the person away" in bad.text


def test_someone_who_decides_no_approvals_has_no_out_of_office_to_set(org, sign_in):
    rita = sign_in(org.requester)
    assert "nothing to hand over" in rita.get("/account/out-of-office").text
    response = post_form(rita, "/account/out-of-office", _form(org))
    assert response.status_code == 403
