"""People: inviting with a single-use, expiring set-password link (mailed by a real worker to a
real SMTP server), roles and limits with four-eyes on one's own, deactivation that ends
sessions at once and hands work back, and password resets. Every change is audited with its
before and after values."""
from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, update

from app.admin.models import PasswordLink, PendingMembershipChange
from app.audit.models import AuditEvent
from app.extensions import db
from app.mail.models import SentMail
from app.models import ApprovalAssignment, User, WorkItem
from app.outbox.models import OutboxMessage
from app.types import utcnow
from app.unit_of_work import commit
from app.work.services import claim_item
from tests.admin.conftest import post_form
from tests.approvals.conftest import run_worker
from tests.conftest import PASSWORD, actor, csrf_from

LINK_RE = re.compile(r"https?://[^\s\"<>]+/account/set-password/[A-Za-z0-9_\-]+")


def _events(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                   .order_by(AuditEvent.id)))


def _user(email: str) -> User:
    db.session.expire_all()
    return db.session.scalars(select(User).where(User.email == email)).one()


def _link_from(inbox, email: str, index: int = -1) -> str:
    message = inbox.to(email)[index]
    match = LINK_RE.search(inbox.text(message))
    assert match, "no set-password link in the mail"
    return urlsplit(match.group(0)).path


def _can_sign_in(app, email, password=PASSWORD) -> bool:
    from tests.conftest import FreshContextClient

    app.test_client_class = FreshContextClient
    client = app.test_client()
    page = client.get("/login")
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": csrf_from(page.text)})
    return response.status_code == 303


INVITE = {"email": "nina@example.com", "name": "Nina New", "roles": ["approver"],
          "approval_limit": "7,500.00"}


def test_an_invited_person_sets_a_password_once_from_the_mailed_link(
        app, org, sign_in, relaying, inbox, client):
    admin = sign_in(org.admin)
    response = post_form(admin, "/admin/t/northwind/people/new", INVITE)
    assert response.status_code == 303
    nina = _user("nina@example.com")
    assert nina.password_hash is None and nina.active
    membership = nina.membership_in(org.northwind.id)
    assert membership.role_set == {"approver"}
    assert membership.approval_limit == Decimal("7500.00")
    [invited] = _events("user.invited")
    assert invited.actor_id == org.admin.id and invited.data["after"]["name"] == "Nina New"
    granted = [e for e in _events("membership.granted") if e.data["user_id"] == nina.id]
    assert granted[-1].data["before"] is None
    assert granted[-1].data["after"] == {"roles": ["approver"], "approval_limit": "7500.00"}
    assert not _can_sign_in(app, "nina@example.com", "")  # no password yet

    run_worker(app)
    [mail] = inbox.to("nina@example.com")
    assert "invited" in mail["Subject"]
    path = _link_from(inbox, "nina@example.com")
    token = path.rsplit("/", 1)[1]
    # Only a hash is kept, and the mail log has the link redacted.
    row = db.session.scalars(select(PasswordLink)).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in db.session.scalars(select(SentMail.text_body)).one()
    assert token not in str(db.session.scalars(select(OutboxMessage.payload)).all())

    page = client.get(path)  # opening it changes nothing
    assert page.status_code == 200 and "nina@example.com" in page.text
    db.session.expire_all()
    assert db.session.get(PasswordLink, row.id).used_at is None

    short = client.post(path, data={"csrf_token": csrf_from(page.text), "password": "short",
                                    "confirm": "short"})
    assert short.status_code == 422 and "at least 12 characters" in short.text
    differ = client.post(path, data={"csrf_token": csrf_from(page.text),
                                     "password": "a long enough one", "confirm": "another one!"})
    assert differ.status_code == 422 and "does not match" in differ.text

    done = client.post(path, data={"csrf_token": csrf_from(page.text),
                                   "password": "nina's own long password",
                                   "confirm": "nina's own long password"})
    assert done.status_code == 303 and done.headers["Location"].endswith("/login")
    assert _can_sign_in(app, "nina@example.com", "nina's own long password")
    assert _events("user.password_set")[0].data["via"] == "invitation"

    again = client.get(path)
    assert again.status_code == 410 and "already used" in again.text
    replay = client.post(path, data={"csrf_token": csrf_from(page.text),
                                     "password": "an attacker's password",
                                     "confirm": "an attacker's password"})
    assert replay.status_code == 410
    assert not _can_sign_in(app, "nina@example.com", "an attacker's password")


def test_an_expired_or_superseded_link_is_refused(app, org, sign_in, relaying, inbox, client):
    admin = sign_in(org.admin)
    post_form(admin, "/admin/t/northwind/people/new", INVITE)
    run_worker(app)
    first = _link_from(inbox, "nina@example.com")
    nina = _user("nina@example.com")
    post_form(admin, f"/admin/t/northwind/people/{nina.id}/reset-password")
    run_worker(app)
    second = _link_from(inbox, "nina@example.com")
    assert first != second
    superseded = client.get(first)
    assert superseded.status_code == 410 and "newer link" in superseded.text

    db.session.execute(update(PasswordLink).values(expires_at=utcnow() - timedelta(minutes=1)))
    commit()
    expired = client.get(second)
    assert expired.status_code == 410 and "expired" in expired.text
    assert client.get("/account/set-password/not-a-real-token").status_code == 404


@pytest.mark.parametrize("data, message", [
    ({**INVITE, "email": "not-an-email"}, "not an email address"),
    ({**INVITE, "roles": []}, "choose at least one"),
    ({**INVITE, "roles": ["approver", "emperor"]}, "choose from"),
    ({**INVITE, "approval_limit": "-5"}, "must be zero or more"),
    ({**INVITE, "approval_limit": "lots"}, "must be a number"),
    ({**INVITE, "email": "ann@example.com"}, "already a member of this tenant"),
])
def test_bad_invitations_re_render_with_a_message(org, sign_in, data, message):
    admin = sign_in(org.admin)
    users = db.session.scalar(select(func.count()).select_from(User))
    response = post_form(admin, "/admin/t/northwind/people/new", data)
    assert response.status_code == 422
    assert message in response.text
    assert db.session.scalar(select(func.count()).select_from(User)) == users
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_someone_with_an_account_becomes_a_member_without_a_new_password(org, sign_in):
    carl = sign_in(org.contoso_admin)
    response = post_form(carl, "/admin/t/contoso/people/new",
                         {**INVITE, "email": "Ann@Example.com", "roles": ["approver"],
                          "approval_limit": "900"})
    assert response.status_code == 303
    ann = _user("ann@example.com")
    assert ann.membership_in(org.contoso.id).approval_limit == Decimal("900.00")
    assert ann.membership_in(org.northwind.id).approval_limit == Decimal("5000.00")
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_roles_and_limit_of_someone_else_change_at_once_and_are_audited(org, sign_in):
    admin = sign_in(org.admin)
    response = post_form(admin, f"/admin/t/northwind/people/{org.approver.id}",
                         {"roles": ["approver", "manager"], "approval_limit": "20000"})
    assert response.status_code == 303
    membership = _user("ann@example.com").membership_in(org.northwind.id)
    assert membership.role_set == {"approver", "manager"}
    assert membership.approval_limit == Decimal("20000.00")
    event = _events("membership.granted")[-1]
    assert event.actor_id == org.admin.id
    assert event.data["before"] == {"roles": ["approver"], "approval_limit": "5000.00"}
    assert event.data["after"] == {"roles": ["approver", "manager"],
                                   "approval_limit": "20000.00"}


def test_a_change_to_ones_own_roles_or_limit_waits_for_a_second_admin(org, sign_in):
    ada = sign_in(org.admin)
    response = post_form(ada, f"/admin/t/northwind/people/{org.admin.id}",
                         {"roles": ["admin", "approver"], "approval_limit": "1000000"})
    assert response.status_code == 303
    shown = ada.get(response.headers["Location"]).text
    assert "needs a second admin" in shown
    membership = _user("ada@example.com").membership_in(org.northwind.id)
    assert membership.role_set == {"admin"} and membership.approval_limit == 0  # not yet
    change = db.session.scalars(select(PendingMembershipChange)).one()
    requested = _events("membership.change_requested")[0]
    assert requested.data["before"] == {"roles": ["admin"], "approval_limit": "0.00"}
    assert requested.data["after"]["approval_limit"] == "1000000.00"

    # Ada cannot approve it herself, nor ask for a second one meanwhile.
    refused = post_form(ada, f"/admin/t/northwind/changes/{change.id}/approve")
    assert refused.status_code == 403
    again = post_form(ada, f"/admin/t/northwind/people/{org.admin.id}",
                      {"roles": ["admin"], "approval_limit": "5"})
    assert again.status_code == 409

    sam = sign_in(org.second_admin)
    assert "Waiting for a second admin" in sam.get("/admin/t/northwind/people").text
    approved = post_form(sam, f"/admin/t/northwind/changes/{change.id}/approve")
    assert approved.status_code == 303
    membership = _user("ada@example.com").membership_in(org.northwind.id)
    assert membership.role_set == {"admin", "approver"}
    assert membership.approval_limit == Decimal("1000000.00")
    [decision] = _events("membership.change_approved")
    assert decision.actor_id == org.second_admin.id
    assert decision.data["requested_by_id"] == org.admin.id
    assert post_form(sam, f"/admin/t/northwind/changes/{change.id}/reject").status_code == 409


def test_a_rejected_own_change_changes_nothing(org, sign_in):
    ada = sign_in(org.admin)
    post_form(ada, f"/admin/t/northwind/people/{org.admin.id}",
              {"roles": ["admin"], "approval_limit": "999"})
    change = db.session.scalars(select(PendingMembershipChange)).one()
    sam = sign_in(org.second_admin)
    assert post_form(sam, f"/admin/t/northwind/changes/{change.id}/reject").status_code == 303
    assert _user("ada@example.com").membership_in(org.northwind.id).approval_limit == 0
    assert _events("membership.change_rejected")[0].actor_id == org.second_admin.id


def test_a_sole_admin_cannot_change_their_own_roles(org, sign_in):
    carl = sign_in(org.contoso_admin)
    response = post_form(carl, f"/admin/t/contoso/people/{org.contoso_admin.id}",
                         {"roles": ["admin", "approver"], "approval_limit": "100"})
    assert response.status_code == 403
    assert "needs a second admin" in response.text
    assert db.session.scalar(select(func.count()).select_from(PendingMembershipChange)) == 0


def test_the_last_active_admin_cannot_be_demoted(org, sign_in, make_user):
    sam = sign_in(org.second_admin)
    assert post_form(sam, f"/admin/t/northwind/people/{org.admin.id}/deactivate"
                     ).status_code == 303
    assert not _user("ada@example.com").active
    other = make_user("olga@example.com", [org.northwind], roles=("admin",), limit="0")
    olga = sign_in(other)
    assert post_form(olga, f"/admin/t/northwind/people/{org.second_admin.id}/deactivate"
                     ).status_code == 303
    # Sam is deactivated: taking his admin role leaves Olga, so it is allowed.
    demoted = post_form(olga, f"/admin/t/northwind/people/{org.second_admin.id}",
                        {"roles": ["approver"], "approval_limit": "0"})
    assert demoted.status_code == 303
    # Olga is now the only active admin: giving up her own admin role is refused outright.
    response = post_form(olga, f"/admin/t/northwind/people/{other.id}",
                         {"roles": ["approver"], "approval_limit": "0"})
    assert response.status_code == 409
    assert "at least one active admin" in response.text
    assert "admin" in _user("olga@example.com").roles_in(org.northwind.id)


def test_deactivation_ends_sessions_at_once_and_hands_work_back(
        app, org, sign_in, make_item):
    item = make_item(org.northwind, amount="1200.00", requester=org.requester)
    step = item.current_step()
    assignment = db.session.get(ApprovalAssignment, step.id)
    assert assignment.approver_id == org.approver.id  # routed to Ann (fewest open steps)
    claimed = make_item(org.northwind, kind="billing_exception", amount="300.00")
    membership = org.approver.membership_in(org.northwind.id)
    membership.role_set  # noqa: B018
    from app.models import MembershipRole

    membership.roles.append(MembershipRole(role="analyst"))
    commit()
    claim_item(actor(_user("ann@example.com")), claimed.id)
    commit()
    delegating = org.backup.membership_in(org.northwind.id)
    delegating.delegate_id = org.approver.id
    delegating.delegate_from = utcnow().date()
    delegating.delegate_until = utcnow().date() + timedelta(days=3)
    commit()

    ann = sign_in(org.approver)
    assert ann.get("/queues/mine").status_code == 200
    admin = sign_in(org.admin)
    response = post_form(admin, f"/admin/t/northwind/people/{org.approver.id}/deactivate")
    assert response.status_code == 303

    # Her open session stops working on the very next request.
    after = ann.get("/queues/mine")
    assert after.status_code == 302 and "/login" in after.headers["Location"]
    assert ann.get("/items/%d" % item.id).status_code == 302
    assert not _can_sign_in(app, "ann@example.com")

    db.session.expire_all()
    assert db.session.get(WorkItem, claimed.id).assignee_id is None
    assert db.session.get(ApprovalAssignment, step.id).approver_id == org.backup.id
    assert org.backup.membership_in(org.northwind.id).delegate_id is None
    [event] = _events("user.deactivated")
    assert event.data["before"] == {"active": True} and event.data["after"] == {"active": False}
    assert event.data["released_item_ids"] == [claimed.id]
    assert event.data["rerouted_step_ids"] == [step.id]
    assert event.data["delegations_ended_for"] == [org.backup.id]
    rerouted = _events("approval.step_rerouted")[0]
    assert rerouted.item_id == item.id and rerouted.data["approver_id"] == org.backup.id

    # Reactivated, she signs in again with her own password.
    assert post_form(admin, f"/admin/t/northwind/people/{org.approver.id}/reactivate"
                     ).status_code == 303
    assert _can_sign_in(app, "ann@example.com")
    assert _events("user.reactivated")[0].data["after"] == {"active": True}


def test_someone_working_in_another_tenant_is_deactivated_only_by_admins_of_both(
        org, sign_in):
    admin = sign_in(org.admin)
    response = post_form(admin, f"/admin/t/northwind/people/{org.requester.id}/deactivate")
    assert response.status_code == 403
    assert "tenants you do not administer" in response.text
    assert _user("rita@example.com").active
    assert post_form(admin, f"/admin/t/northwind/people/{org.admin.id}/deactivate"
                     ).status_code == 403  # not oneself either


def test_a_password_reset_mails_a_link_and_the_old_password_works_until_it_is_used(
        app, org, sign_in, relaying, inbox, client):
    ann = sign_in(org.approver)
    admin = sign_in(org.admin)
    response = post_form(admin, f"/admin/t/northwind/people/{org.approver.id}/reset-password")
    assert response.status_code == 303
    assert _events("user.password_reset_requested")[0].data["user_id"] == org.approver.id
    run_worker(app)
    path = _link_from(inbox, "ann@example.com")
    assert _can_sign_in(app, "ann@example.com")  # still the old password
    page = client.get(path)
    done = client.post(path, data={"csrf_token": csrf_from(page.text),
                                   "password": "ann's brand new password",
                                   "confirm": "ann's brand new password"})
    assert done.status_code == 303
    assert not _can_sign_in(app, "ann@example.com")
    assert _can_sign_in(app, "ann@example.com", "ann's brand new password")
    # Setting a password ends the sessions that were open.
    assert ann.get("/queues/mine").status_code == 302
    assert _events("user.password_set")[0].data["via"] == "reset"


def test_removing_someone_from_one_tenant_keeps_their_account_and_other_tenants(
        org, sign_in, make_item):
    item = make_item(org.contoso, kind="billing_exception", amount="40.00")
    from app.models import MembershipRole

    org.requester.membership_in(org.contoso.id).roles.append(MembershipRole(role="analyst"))
    commit()
    claim_item(actor(_user("rita@example.com")), item.id)
    commit()
    carl = sign_in(org.contoso_admin)
    response = post_form(carl, f"/admin/t/contoso/people/{org.requester.id}/remove")
    assert response.status_code == 303
    rita = _user("rita@example.com")
    assert rita.active and rita.membership_in(org.contoso.id) is None
    assert rita.membership_in(org.northwind.id) is not None
    assert db.session.get(WorkItem, item.id).assignee_id is None
    [event] = _events("membership.removed")
    assert event.tenant_id == org.contoso.id
    assert event.data["before"]["roles"] == ["analyst", "requester"]
    assert event.data["after"] is None and event.data["released_item_ids"] == [item.id]
    # Gone from contoso: its admin no longer finds her; she still works in northwind.
    assert carl.get(f"/admin/t/contoso/people/{org.requester.id}").status_code == 404
    assert sign_in(rita).get(f"/items/{item.id}").status_code == 404
    assert post_form(carl, f"/admin/t/contoso/people/{org.contoso_admin.id}/remove"
                     ).status_code == 403  # not oneself


def _password_sign_in_off(tenant) -> None:
    from app.actors import Actor
    from app.auth.sso import update_single_sign_on

    update_single_sign_on(Actor.system("tests"), tenant, enabled=True,
                          issuer="https://login.example.com", client_id="cleardesk",
                          client_secret="s3cret", allowed_domains="example.com",
                          jit_enabled=False, jit_role="requester", password_sign_in_off=True)
    commit()


def test_an_invitation_into_a_tenant_signing_in_through_sso_mails_its_sign_in_link(
        app, org, sign_in, relaying, inbox):
    admin = sign_in(org.admin)
    _password_sign_in_off(org.northwind)
    assert post_form(admin, "/admin/t/northwind/people/new", INVITE).status_code == 303
    run_worker(app)
    [mail] = inbox.to("nina@example.com")
    text = inbox.text(mail)
    assert "invited" in mail["Subject"]
    assert "/login?tenant=northwind" in text and "you need no Cleardesk password" in text
    assert "/account/set-password/" not in text
    # No password link was issued: there is nothing a password would open.
    assert db.session.scalars(select(PasswordLink)).all() == []
    assert db.session.scalars(select(SentMail.kind)).all() == ["invitation_sso"]


def test_an_admin_invited_into_such_a_tenant_still_sets_a_password_for_break_glass(
        app, org, sign_in, relaying, inbox):
    admin = sign_in(org.admin)
    _password_sign_in_off(org.northwind)
    assert post_form(admin, "/admin/t/northwind/people/new",
                     {**INVITE, "roles": ["admin"]}).status_code == 303
    run_worker(app)
    assert "/account/set-password/" in _link_from(inbox, "nina@example.com")
