"""Who administers what: whether an actor administers a tenant (someone who is not a member is told
it does not exist; a member without the admin role is refused), and the tenants and members an
admin may see."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import contains_eager, selectinload

from app.actors import Actor, ActorType
from app.errors import NotFound, PermissionDenied
from app.extensions import db
from app.models import Membership, Role, Tenant, User


def is_admin_of(actor: Actor, tenant_id: int) -> bool:
    return actor.user is not None and actor.user.active and Role.ADMIN.value in actor.roles_in(
        tenant_id)


def admin_tenants(actor: Actor) -> list[Tenant]:
    """The tenants the actor administers, by name."""
    ids = [t for t in actor.tenant_ids() if is_admin_of(actor, t)]
    if not ids:
        return []
    return list(db.session.scalars(select(Tenant).where(Tenant.id.in_(ids)).order_by(Tenant.name)))


def require_admin(actor: Actor, tenant: Tenant | None) -> Tenant:
    """The tenant, if the actor administers it. Someone who is not a member is told it does not
    exist (NotFound); a member without the admin role is refused (PermissionDenied)."""
    if actor.type is ActorType.SYSTEM and tenant is not None:
        return tenant
    if tenant is None or tenant.id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    if not is_admin_of(actor, tenant.id):
        raise PermissionDenied("Only an admin of this tenant can do that.")
    return tenant


def tenant_for_admin(actor: Actor, slug: str) -> Tenant:
    tenant = db.session.scalars(select(Tenant).where(Tenant.slug == slug)).one_or_none()
    return require_admin(actor, tenant)


def member_for_admin(actor: Actor, tenant: Tenant, user_id: int) -> Membership:
    """A member of a tenant the actor administers; NotFound for anyone else."""
    require_admin(actor, tenant)
    membership = db.session.scalars(select(Membership).where(
        Membership.tenant_id == tenant.id, Membership.user_id == user_id)).one_or_none()
    if membership is None:
        raise NotFound("No such person in this tenant.")
    return membership


def members_of(actor: Actor, tenant: Tenant) -> list[Membership]:
    """The tenant's members with their roles and delegates, in a fixed number of queries; the
    people it loads do not fetch their other memberships unless something reads them."""
    require_admin(actor, tenant)
    return list(db.session.scalars(
        select(Membership).join(User, User.id == Membership.user_id)
        .where(Membership.tenant_id == tenant.id).order_by(User.active.desc(), User.name)
        .options(contains_eager(Membership.user).lazyload(User.memberships),
                 selectinload(Membership.roles),
                 selectinload(Membership.delegate).lazyload(User.memberships))))
