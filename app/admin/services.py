"""Granting people roles and limits in a tenant; audited with before and after values."""
from __future__ import annotations

from sqlalchemy import select

from app.actors import Actor
from app.audit.services import record_event
from app.errors import ValidationFailed
from app.extensions import db
from app.models import Membership, MembershipRole, Role, Tenant, User
from app.work.kinds import parse_money


def grant_membership(actor: Actor, *, user: User, tenant: Tenant, roles: list[str],
                     approval_limit="0") -> Membership:
    known = {r.value for r in Role}
    unknown = [r for r in roles if r not in known]
    if unknown:
        raise ValidationFailed(f"Unknown role {unknown[0]!r}.",
                               {"roles": f"choose from {', '.join(sorted(known))}"})
    limit = parse_money(approval_limit, "approval_limit")
    if limit < 0:
        raise ValidationFailed("An approval limit cannot be negative.",
                               {"approval_limit": "must be zero or more"})
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
    membership.roles = [MembershipRole(role=r) for r in sorted(set(roles))]
    db.session.flush()
    record_event(actor, "membership.granted", tenant_id=tenant.id,
                 data={"user_id": user.id, "before": before,
                       "after": {"roles": sorted(set(roles)), "approval_limit": limit}})
    return membership
