"""Which items a queue holds for the viewer. Read-only, tenant-scoped, keyset-paged."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_

from app.actors import Actor
from app.extensions import db
from app.models import Role, WorkItem
from app.work.services import open_items, scoped_items
from app.work.states import WORKER_ROLES

PAGE_SIZE = 50


@dataclass(frozen=True)
class QueueDef:
    name: str
    title: str
    empty: str


QUEUES = {
    "mine": QueueDef("mine", "My work", "Nothing is assigned to you. Claim work from Unassigned."),
    "unassigned": QueueDef("unassigned", "Unassigned", "No unassigned work you can take."),
    "team": QueueDef("team", "Team", "Your team has no open work."),
}


def queues_for(actor: Actor, tenant_id: int | None) -> list[QueueDef]:
    roles_by_tenant = _roles(actor, tenant_id)
    out = [QUEUES["mine"], QUEUES["unassigned"]]
    if any(Role.MANAGER.value in roles for roles in roles_by_tenant.values()):
        out.append(QUEUES["team"])
    return out


def _roles(actor: Actor, tenant_id: int | None) -> dict[int, set[str]]:
    tenants = [tenant_id] if tenant_id else sorted(actor.tenant_ids())
    return {t: actor.roles_in(t) for t in tenants} if tenants else {}


def queue_items(actor: Actor, queue: str, tenant_id: int | None,
                before_id: int | None = None) -> list[WorkItem]:
    query = scoped_items(actor).where(open_items())
    if tenant_id:
        query = query.where(WorkItem.tenant_id == tenant_id)
    roles_by_tenant = _roles(actor, tenant_id)
    if queue == "mine":
        query = query.where(WorkItem.assignee_id == actor.user_id)
    elif queue == "unassigned":
        # Only the kinds the viewer's roles can work, tenant by tenant.
        allowed = [
            (WorkItem.tenant_id == t) & (WorkItem.kind == kind)
            for t, roles in roles_by_tenant.items()
            for kind, workers in WORKER_ROLES.items() if roles & workers
        ]
        if not allowed:
            return []
        query = query.where(WorkItem.assignee_id.is_(None), or_(*allowed))
    elif queue == "team":
        managed = [t for t, roles in roles_by_tenant.items() if Role.MANAGER.value in roles]
        if not managed:
            return []
        query = query.where(WorkItem.tenant_id.in_(managed))
    if before_id:
        query = query.where(WorkItem.id < before_id)
    return list(db.session.scalars(query.order_by(WorkItem.id.desc()).limit(PAGE_SIZE)))
