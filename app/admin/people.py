"""Administering people: memberships with roles and approval limits, four-eyes on a change of one's
own (a pending change another admin approves), invitations and password resets. Every function
takes the actor, checks that they administer the tenant (another tenant's admin gets NotFound, as
if it did not exist), records an audit event with before and after values, and never commits."""
from __future__ import annotations

import re
from decimal import Decimal

from sqlalchemy import select

from app.actors import Actor
from app.admin.access import member_for_admin, require_admin
from app.admin.models import ChangeState, PasswordLinkPurpose, PendingMembershipChange
from app.audit.services import record_event
from app.auth.services import find_user_by_email, people_with_role
from app.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import Membership, MembershipRole, Role, Tenant, User
from app.outbox.services import add_message
from app.types import utcnow
from app.work.kinds import parse_money


def _clean_roles_and_limit(roles, approval_limit) -> tuple[list[str], Decimal]:
    known = {r.value for r in Role}
    roles = sorted({r for r in (roles or []) if r})
    unknown = [r for r in roles if r not in known]
    if unknown:
        raise ValidationFailed(f"Unknown role {unknown[0]!r}.",
                               {"roles": f"choose from {', '.join(sorted(known))}"})
    limit = parse_money(approval_limit if approval_limit not in (None, "") else "0",
                        "approval_limit")
    if limit < 0:
        raise ValidationFailed("An approval limit cannot be negative.",
                               {"approval_limit": "must be zero or more"})
    return roles, limit


def grant_membership(actor: Actor, *, user: User, tenant: Tenant, roles: list[str],
                     approval_limit="0") -> Membership:
    """Give a user roles and a limit in a tenant (no permission check: the system, seeding and
    change_membership call it). Audited with before and after values."""
    roles, limit = _clean_roles_and_limit(roles, approval_limit)
    membership = db.session.scalars(
        select(Membership).where(Membership.user_id == user.id,
                                 Membership.tenant_id == tenant.id)
    ).one_or_none()
    before = None
    if membership is None:
        membership = Membership(user=user, tenant=tenant, approval_limit=limit)
        db.session.add(membership)
    else:
        before = {"roles": sorted(membership.role_set),
                  "approval_limit": membership.approval_limit}
        membership.approval_limit = limit
    membership.roles = [MembershipRole(role=r) for r in roles]
    db.session.flush()
    record_event(actor, "membership.granted", tenant_id=tenant.id,
                 data={"user_id": user.id, "email": user.email, "before": before,
                       "after": {"roles": roles, "approval_limit": limit}})
    return membership


def _active_admins(tenant_id: int, excluding: int | None = None) -> int:
    return sum(1 for user in people_with_role(Role.ADMIN.value, tenant_id)
               if user.id != excluding)


def keep_an_admin(tenant: Tenant, user_id: int) -> None:
    if _active_admins(tenant.id, excluding=user_id) == 0:
        raise InvalidTransition(f"{tenant.display_name} must keep at least one active admin.")


def change_membership(actor: Actor, tenant: Tenant, *, user: User, roles, approval_limit
                      ) -> Membership | PendingMembershipChange:
    """Set a member's roles and limit. A change to one's own is only proposed: it waits for
    another admin of the tenant (four-eyes) and the pending change is returned."""
    require_admin(actor, tenant)
    roles, limit = _clean_roles_and_limit(roles, approval_limit)
    membership = db.session.scalars(select(Membership).where(
        Membership.tenant_id == tenant.id, Membership.user_id == user.id)).one_or_none()
    before = ({"roles": sorted(membership.role_set), "approval_limit": membership.approval_limit}
              if membership else None)
    after = {"roles": roles, "approval_limit": limit}
    if before == after:
        return membership
    if membership is not None and Role.ADMIN.value in membership.role_set \
            and Role.ADMIN.value not in roles:
        keep_an_admin(tenant, user.id)
    if user.id == actor.user_id:
        return _propose_own_change(actor, tenant, user, before, after)
    return grant_membership(actor, user=user, tenant=tenant, roles=roles, approval_limit=limit)


def _propose_own_change(actor, tenant, user, before, after) -> PendingMembershipChange:
    if _active_admins(tenant.id, excluding=user.id) == 0:
        raise PermissionDenied("A change to your own roles or limit needs a second admin, and "
                               f"{tenant.display_name} has no other active admin.")
    open_change = db.session.scalars(select(PendingMembershipChange).where(
        PendingMembershipChange.tenant_id == tenant.id,
        PendingMembershipChange.user_id == user.id,
        PendingMembershipChange.state == ChangeState.PENDING.value)).one_or_none()
    if open_change is not None:
        raise InvalidTransition("A change of your roles or limit already waits for another "
                                "admin; it must be decided first.")
    change = PendingMembershipChange(
        tenant_id=tenant.id, user_id=user.id, requested_by_id=actor.user_id,
        before=_jsonable_membership(before), after=_jsonable_membership(after))
    db.session.add(change)
    db.session.flush()
    record_event(actor, "membership.change_requested", tenant_id=tenant.id,
                 data={"change_id": change.id, "user_id": user.id, "before": before,
                       "after": after})
    return change


def _jsonable_membership(values: dict | None) -> dict | None:
    if values is None:
        return None
    return {"roles": values["roles"], "approval_limit": str(values["approval_limit"])}


def pending_changes(actor: Actor, tenant: Tenant) -> list[PendingMembershipChange]:
    require_admin(actor, tenant)
    return list(db.session.scalars(select(PendingMembershipChange).where(
        PendingMembershipChange.tenant_id == tenant.id,
        PendingMembershipChange.state == ChangeState.PENDING.value)
        .order_by(PendingMembershipChange.id)))


def _pending_change(actor: Actor, tenant: Tenant, change_id: int) -> PendingMembershipChange:
    require_admin(actor, tenant)
    change = db.session.get(PendingMembershipChange, change_id)
    if change is None or change.tenant_id != tenant.id:
        raise NotFound("No such change.")
    if change.state != ChangeState.PENDING.value:
        raise InvalidTransition(f"This change was already {change.state}.")
    if actor.user_id in (change.requested_by_id, change.user_id):
        raise PermissionDenied("Another admin must decide a change to your own roles or limit.")
    return change


def approve_change(actor: Actor, tenant: Tenant, change_id: int) -> Membership:
    change = _pending_change(actor, tenant, change_id)
    user = db.session.get(User, change.user_id)
    after = change.after
    if Role.ADMIN.value not in after["roles"] and Role.ADMIN.value in user.roles_in(tenant.id):
        keep_an_admin(tenant, user.id)
    change.state, change.decided_by_id, change.decided_at = (
        ChangeState.APPROVED.value, actor.user_id, utcnow())
    record_event(actor, "membership.change_approved", tenant_id=tenant.id,
                 data={"change_id": change.id, "user_id": user.id,
                       "requested_by_id": change.requested_by_id, "before": change.before,
                       "after": after})
    return grant_membership(actor, user=user, tenant=tenant, roles=after["roles"],
                            approval_limit=after["approval_limit"])


def reject_change(actor: Actor, tenant: Tenant, change_id: int) -> PendingMembershipChange:
    change = _pending_change(actor, tenant, change_id)
    change.state, change.decided_by_id, change.decided_at = (
        ChangeState.REJECTED.value, actor.user_id, utcnow())
    db.session.flush()
    record_event(actor, "membership.change_rejected", tenant_id=tenant.id,
                 data={"change_id": change.id, "user_id": change.user_id,
                       "requested_by_id": change.requested_by_id, "before": change.before,
                       "after": change.after})
    return change


def invite_user(actor: Actor, tenant: Tenant, *, email: str, name: str, roles,
                approval_limit) -> tuple[User, bool]:
    """Add someone to the tenant. A new person gets an account without a password and an
    invitation mail with a single-use link to set one; someone who already has an account gets
    the membership. Returns the user and whether they were invited."""
    require_admin(actor, tenant)
    email = (email or "").strip().lower()
    name = (name or "").strip()
    errors = {}
    if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email) or len(email) > 254:
        errors["email"] = "not an email address"
    if len(name) > 200:
        errors["name"] = "at most 200 characters"
    try:
        roles, limit = _clean_roles_and_limit(roles, approval_limit)
    except ValidationFailed as failed:
        errors.update(failed.fields)
    if errors:
        raise ValidationFailed("The person's details are not valid.", errors)
    if not roles:
        raise ValidationFailed("Give the person at least one role.",
                               {"roles": "choose at least one"})
    user = find_user_by_email(email)
    if user is not None:
        if user.membership_in(tenant.id) is not None:
            raise ValidationFailed("That person is already a member here.",
                                   {"email": "already a member of this tenant"})
        grant_membership(actor, user=user, tenant=tenant, roles=roles, approval_limit=limit)
        return user, False
    user = User(email=email, name=name or email.split("@")[0], password_hash=None, active=True)
    db.session.add(user)
    db.session.flush()
    record_event(actor, "user.invited", tenant_id=tenant.id,
                 data={"user_id": user.id, "email": email, "before": None,
                       "after": {"name": user.name, "active": True}})
    grant_membership(actor, user=user, tenant=tenant, roles=roles, approval_limit=limit)
    add_message("account.password_link",
                {"user_id": user.id, "tenant_id": tenant.id,
                 "purpose": PasswordLinkPurpose.INVITATION.value}, tenant.id)
    db.session.refresh(user)
    return user, True


def request_password_reset(actor: Actor, tenant: Tenant, user_id: int) -> User:
    """Mail the person a single-use link to set a new password (their password stays valid
    until they use it)."""
    membership = member_for_admin(actor, tenant, user_id)
    user = membership.user
    if not user.active:
        raise InvalidTransition(f"{user.name} is deactivated; reactivate them first.")
    record_event(actor, "user.password_reset_requested", tenant_id=tenant.id,
                 data={"user_id": user.id})
    add_message("account.password_link",
                {"user_id": user.id, "tenant_id": tenant.id,
                 "purpose": PasswordLinkPurpose.RESET.value}, tenant.id)
    return user
