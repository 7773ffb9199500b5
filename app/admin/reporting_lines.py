"""Reporting lines: whom a member reports to, the first level an approval escalates to; set by an
admin of the tenant (no loops), audited, never committed."""
from __future__ import annotations

from sqlalchemy import select

from app.actors import Actor
from app.admin.access import member_for_admin
from app.admin.delegation import DELEGATING_ROLES, possible_delegates
from app.audit.services import record_event
from app.errors import ValidationFailed
from app.extensions import db
from app.models import Membership, Tenant, User

MAX_REPORTING_DEPTH = 200


def possible_managers(tenant_id: int, user_id: int) -> list[User]:
    """Who someone may report to: the tenant's other active members who decide approvals."""
    return possible_delegates(tenant_id, user_id)


def set_manager(actor: Actor, tenant: Tenant, user_id: int, manager_id: int | None) -> Membership:
    """Name whom a member reports to in this tenant (None: nobody). Refused: themselves, someone
    who is not an active member deciding approvals, and a loop (the new manager reports,
    directly or through others, to the member). Audited with before and after."""
    membership = member_for_admin(actor, tenant, user_id)
    manager_id = manager_id or None
    if manager_id == membership.manager_id:
        return membership
    if manager_id is not None:
        if manager_id == user_id:
            raise ValidationFailed("Nobody reports to themselves.",
                                   {"manager_id": "someone other than this person"})
        boss = db.session.scalars(select(Membership).where(
            Membership.tenant_id == tenant.id, Membership.user_id == manager_id)).one_or_none()
        if boss is None or not boss.user.active:
            raise ValidationFailed("The manager must be an active member of this tenant.",
                                   {"manager_id": "not an active member of this tenant"})
        if not boss.role_set & DELEGATING_ROLES:
            raise ValidationFailed("The manager must decide approvals.",
                                   {"manager_id": "holds no role that decides approvals"})
        lines = dict(db.session.execute(select(Membership.user_id, Membership.manager_id).where(
            Membership.tenant_id == tenant.id, Membership.manager_id.is_not(None))).all())
        above, seen = manager_id, set()
        while above is not None and above not in seen and len(seen) < MAX_REPORTING_DEPTH:
            if above == user_id:
                raise ValidationFailed(
                    f"{boss.user.name} reports to {membership.user.name} (directly or through "
                    "others): that would make a loop.",
                    {"manager_id": "reports to this person already"})
            seen.add(above)
            above = lines.get(above)
    before = membership.manager_id
    membership.manager_id = manager_id
    db.session.flush()
    record_event(actor, "membership.manager_set", tenant_id=tenant.id,
                 data={"user_id": user_id, "before": before, "after": manager_id})
    return membership
