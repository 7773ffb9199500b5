"""Delegation while out of office: whom a member's approvals go to, when, for which kinds and up to
which amount; set by the member or an admin of the tenant, audited, never committed."""
from __future__ import annotations

from datetime import date

from sqlalchemy import select

from app.actors import Actor
from app.admin.access import member_for_admin
from app.audit.services import record_event
from app.errors import NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import Kind, Membership, MembershipRole, Role, Tenant, User
from app.types import utcnow
from app.work.kinds import parse_money

DELEGATION_FIELDS = ("delegate_id", "delegate_from", "delegate_until", "delegate_kinds",
                     "delegate_max_amount")


def delegation_of(m: Membership) -> dict | None:
    if m.delegate_id is None:
        return None
    return {name: getattr(m, name) for name in DELEGATION_FIELDS}


def clear_delegation_fields(m: Membership) -> None:
    for name in DELEGATION_FIELDS:
        setattr(m, name, None)


# Who has approvals to delegate when away.
DELEGATING_ROLES = frozenset({Role.APPROVER.value, Role.MANAGER.value})


def delegation_membership(actor: Actor, tenant_id: int, user_id: int) -> Membership:
    """The membership whose delegation the actor may change: their own (in a tenant where they
    decide approvals), or anyone's in a tenant they administer."""
    tenant = db.session.get(Tenant, tenant_id) if tenant_id else None
    if tenant is None or tenant_id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    if user_id != actor.user_id:
        return member_for_admin(actor, tenant, user_id)
    membership = actor.user.membership_in(tenant_id)
    if not membership.role_set & DELEGATING_ROLES:
        raise PermissionDenied("Only approvers and managers have approvals to delegate.")
    return membership


def possible_delegates(tenant_id: int, user_id: int) -> list[User]:
    """Who can stand in for someone: the tenant's other active members who decide approvals."""
    return list(db.session.scalars(
        select(User).join(Membership, Membership.user_id == User.id)
        .join(MembershipRole, MembershipRole.membership_id == Membership.id)
        .where(Membership.tenant_id == tenant_id, User.id != user_id, User.active.is_(True),
               MembershipRole.role.in_([Role.APPROVER.value, Role.MANAGER.value]))
        .distinct().order_by(User.name)))


def set_delegation(actor: Actor, tenant_id: int, user_id: int, *, delegate_id: int | None,
                   first_day: date | None, last_day: date | None, kinds=None,
                   max_amount=None) -> Membership:
    """Out of office from first_day to last_day: new approval steps of the person go to the
    delegate, who decides them on their behalf; optionally only for some kinds of work and up
    to an amount."""
    membership = delegation_membership(actor, tenant_id, user_id)
    errors = {}
    delegate = None
    if not delegate_id:
        errors["delegate_id"] = "choose who stands in"
    elif delegate_id == user_id:
        errors["delegate_id"] = "someone other than the person away"
    else:
        delegate = db.session.scalars(select(Membership).where(
            Membership.tenant_id == tenant_id, Membership.user_id == delegate_id)).one_or_none()
        if delegate is None or not delegate.user.active:
            errors["delegate_id"] = "not an active member of this tenant"
        elif not delegate.role_set & {Role.APPROVER.value, Role.MANAGER.value}:
            errors["delegate_id"] = "holds no role that decides approvals"
    if first_day is None:
        errors["first_day"] = "a date is required"
    if last_day is None:
        errors["last_day"] = "a date is required"
    if first_day and last_day:
        if last_day < first_day:
            errors["last_day"] = "must not be before the first day"
        elif last_day < utcnow().date():
            errors["last_day"] = "is in the past"
        elif (last_day - first_day).days > 366:
            errors["last_day"] = "an absence lasts at most a year"
    kinds = sorted({k for k in (kinds or []) if k})
    known = {k.value for k in Kind}
    if any(k not in known for k in kinds):
        errors["kinds"] = "unknown kind of work"
    amount = None
    if max_amount not in (None, ""):
        try:
            amount = parse_money(max_amount, "max_amount")
            if amount < 0:
                errors["max_amount"] = "must be zero or more"
        except ValidationFailed as failed:
            errors.update({"max_amount": next(iter(failed.fields.values()), "not a number")})
    if errors:
        raise ValidationFailed("The out-of-office settings are not valid.", errors)
    before = delegation_of(membership)
    membership.delegate_id = delegate_id
    membership.delegate_from, membership.delegate_until = first_day, last_day
    membership.delegate_kinds = kinds or None
    membership.delegate_max_amount = amount
    db.session.flush()
    record_event(actor, "delegation.set", tenant_id=tenant_id,
                 on_behalf_of_id=user_id if user_id != actor.user_id else None,
                 data={"user_id": user_id, "before": before,
                       "after": delegation_of(membership)})
    return membership


def clear_delegation(actor: Actor, tenant_id: int, user_id: int) -> Membership:
    membership = delegation_membership(actor, tenant_id, user_id)
    before = delegation_of(membership)
    if before is None:
        return membership
    clear_delegation_fields(membership)
    db.session.flush()
    record_event(actor, "delegation.cleared", tenant_id=tenant_id,
                 on_behalf_of_id=user_id if user_id != actor.user_id else None,
                 data={"user_id": user_id, "before": before, "after": None})
    return membership
