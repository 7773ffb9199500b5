"""Which items a queue holds for the viewer. Read-only, tenant-scoped, keyset-paged."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, false, func, or_, select, true

from app.actors import Actor
from app.extensions import db
from app.approvals.models import ApprovalAssignment
from app.models import (
    ApprovalStep,
    Kind,
    Membership,
    MembershipRole,
    Role,
    StepState,
    Tenant,
    User,
    WorkItem,
)
from app.queues.filters import QueueFilters
from app.work.services import open_items, scoped_items
from app.types import utcnow
from app.work.states import WORKER_ROLES, ApprovalState

PAGE_SIZE = 50
ROW_COLUMNS = (WorkItem.id, WorkItem.kind, WorkItem.subtype, WorkItem.title,
               WorkItem.external_ref, WorkItem.counterparty, WorkItem.amount, WorkItem.currency,
               WorkItem.state, WorkItem.sla_state, WorkItem.sla_due_at, WorkItem.resolved_at,
               WorkItem.created_at, WorkItem.assignee_id, WorkItem.team_queue)
# A named team queue's key in URLs and saved views: "@" and its name ("@QA sample").
TEAM_PREFIX = "@"


@dataclass(frozen=True)
class QueueDef:
    name: str
    title: str
    empty: str
    kind: str | None = None
    # A named team queue: its name, and where the viewer works it ((tenant id, kind) pairs).
    team_queue: str | None = None
    scope: tuple = ()


QUEUES = {
    "mine": QueueDef("mine", "My work", "Nothing is assigned or routed to you. Claim work from "
                                        "Unassigned."),
    "unassigned": QueueDef("unassigned", "Unassigned", "No unassigned work you can take."),
    "team": QueueDef("team", "Team", "Your teams have no open work."),
    "approvals": QueueDef("approvals", "Approvals", "No open approvals.", Kind.APPROVAL.value),
    "exceptions": QueueDef("exceptions", "Billing exceptions", "No open billing exceptions.",
                           Kind.BILLING_EXCEPTION.value),
    "disputes": QueueDef("disputes", "Settlement disputes", "No open settlement disputes.",
                         Kind.SETTLEMENT_DISPUTE.value),
}


def _roles_by_tenant(actor: Actor, tenant_id: int | None) -> dict[int, set[str]]:
    tenants = [tenant_id] if tenant_id else sorted(actor.tenant_ids())
    return {t: actor.roles_in(t) for t in tenants}


def _works(roles: set[str], kind: str) -> bool:
    return bool(roles & WORKER_ROLES[kind])


def team_queues(actor: Actor, tenant_id: int | None) -> list[QueueDef]:
    """The named team queues the viewer works: the queues the rules of every policy version
    that was in force name, for the kinds the viewer's roles work in that tenant, and the QA
    sample's queue where a version sampled, for the QA role of the version in force.
    Read once per request: the names come from the few policy rows, not from the items."""
    from flask import g, has_request_context

    from app.policy.engine import QA_QUEUE
    from app.policy.models import Outcome, PolicyRule, PolicyState, PolicyVersion
    from app.policy.services import policy_in_force

    roles = _roles_by_tenant(actor, tenant_id)
    key = ("team_queues", actor.user_id, tuple(sorted((t, tuple(sorted(r)))
                                                     for t, r in roles.items())))
    cache = g.setdefault("cleardesk_team_queues", {}) if has_request_context() else {}
    if key in cache:
        return cache[key]
    scopes: dict[str, set] = {}
    if roles:
        rows = db.session.execute(
            select(PolicyVersion.tenant_id, PolicyRule.kind, PolicyRule.queue)
            .join(PolicyRule, PolicyRule.policy_id == PolicyVersion.id)
            .where(PolicyVersion.tenant_id.in_(list(roles)),
                   PolicyVersion.state.in_((PolicyState.ACTIVE.value,
                                            PolicyState.RETIRED.value)),
                   PolicyRule.outcome == Outcome.QUEUE.value, PolicyRule.queue.is_not(None))
            .distinct()).all()
        for tenant, kind, name in rows:
            if _works(roles[tenant], kind):
                scopes.setdefault(name, set()).add((tenant, kind))
        # The QA queue exists where a version that was in force sampled; its role is the one
        # of the version in force now.
        sampled = set(db.session.scalars(
            select(PolicyVersion.tenant_id).where(
                PolicyVersion.tenant_id.in_(list(roles)), PolicyVersion.qa_sample_pct > 0,
                PolicyVersion.state.in_((PolicyState.ACTIVE.value,
                                         PolicyState.RETIRED.value))).distinct()))
        for tenant in sorted(sampled):
            policy = policy_in_force(tenant)
            qa_role = policy.qa_role if policy is not None else Role.MANAGER.value
            if qa_role in roles[tenant]:
                scopes.setdefault(QA_QUEUE, set()).add((tenant, Kind.APPROVAL.value))
    out = [QueueDef(TEAM_PREFIX + name, name, f"Nothing is waiting in {name}.",
                    team_queue=name, scope=tuple(sorted(scope)))
           for name, scope in sorted(scopes.items(), key=lambda kv: (kv[0] != QA_QUEUE,
                                                                     kv[0].casefold()))]
    cache[key] = out
    return out


def queues_for(actor: Actor, tenant_id: int | None) -> list[QueueDef]:
    """The queues the viewer's roles grant, in the current tenant (or all of theirs): the
    standard ones, then the named team queues."""
    roles = _roles_by_tenant(actor, tenant_id)
    out = [QUEUES["mine"]]
    if any(_works(r, kind) for r in roles.values() for kind in WORKER_ROLES):
        out.append(QUEUES["unassigned"])
    if any(Role.MANAGER.value in r for r in roles.values()):
        out.append(QUEUES["team"])
    for name in ("approvals", "exceptions", "disputes"):
        if any(_works(r, QUEUES[name].kind) for r in roles.values()):
            out.append(QUEUES[name])
    return out + team_queues(actor, tenant_id)


def find_queue(actor: Actor, name: str, tenant_id: int | None) -> QueueDef | None:
    """The viewer's queue called `name`, or None."""
    if name in QUEUES or name.startswith(TEAM_PREFIX):
        return next((q for q in queues_for(actor, tenant_id) if q.name == name), None)
    return None


def queue_condition(actor: Actor, queue: str, tenant_id: int | None):
    """The SQL condition of a queue for this viewer (tenant scoping is applied separately)."""
    if queue.startswith(TEAM_PREFIX):
        team = find_queue(actor, queue, tenant_id)
        if team is None:
            return false()
        by_tenant: dict[int, list[str]] = {}
        for tenant, kind in team.scope:
            by_tenant.setdefault(tenant, []).append(kind)
        return (WorkItem.team_queue == team.team_queue) & or_(*[
            (WorkItem.tenant_id == tenant) & (WorkItem.kind.in_(kinds) if len(kinds) > 1
                                               else WorkItem.kind == kinds[0])
            for tenant, kinds in sorted(by_tenant.items())])
    roles = _roles_by_tenant(actor, tenant_id)
    workable = [
        (WorkItem.tenant_id == t) & (WorkItem.kind == kind)
        for t, r in roles.items() for kind in WORKER_ROLES if _works(r, kind)
    ]
    if queue == "mine":
        waiting = waiting_on(actor, tenant_id)
        mine = WorkItem.assignee_id == actor.user_id
        return or_(mine, WorkItem.id.in_(waiting)) if waiting else mine
    if queue == "unassigned":
        return ((WorkItem.assignee_id.is_(None)) & (or_(*workable) if workable else false())
                & decidable_now(actor, roles))
    if queue == "team":
        managed = [t for t, r in roles.items() if Role.MANAGER.value in r]
        return WorkItem.tenant_id.in_(managed) if managed else false()
    kind = QUEUES[queue].kind
    tenants = [t for t, r in roles.items() if _works(r, kind)]
    if not tenants:
        return false()
    condition = (WorkItem.kind == kind) & WorkItem.tenant_id.in_(tenants)
    return condition & decidable_now(actor, roles) if kind == Kind.APPROVAL.value else condition


# The most routed steps "My work" lists by id (an approver with more has a backlog to clear
# from Approvals, which lists everything they may decide).
WAITING_LIMIT = 2000


def waiting_on(actor: Actor, tenant_id: int | None) -> list[int]:
    """Pending approvals whose open step is routed (or reserved) to the viewer, or to someone
    they stand in for today (within the delegation's kinds and amount): the work mailed to
    them, which "My work" lists beside what they claimed. Read once per request."""
    from flask import g, has_request_context

    key = ("waiting_on", actor.user_id, tenant_id)
    cache = g.setdefault("cleardesk_waiting_on", {}) if has_request_context() else {}
    if key in cache:
        return cache[key]
    today = utcnow().date()
    standing_in = [m for m in db.session.scalars(select(Membership).where(
        Membership.delegate_id == actor.user_id, Membership.delegate_from <= today,
        Membership.delegate_until >= today))
        if not m.delegate_kinds or Kind.APPROVAL.value in m.delegate_kinds]
    people = {actor.user_id, *(m.user_id for m in standing_in)}
    named = func.coalesce(ApprovalStep.approver_id, ApprovalAssignment.approver_id)
    query = (select(WorkItem.id, WorkItem.tenant_id, WorkItem.amount, named)
             .select_from(ApprovalStep)
             .join(WorkItem, WorkItem.id == ApprovalStep.item_id)
             .outerjoin(ApprovalAssignment, ApprovalAssignment.step_id == ApprovalStep.id)
             .where(ApprovalStep.state == StepState.OPEN.value,
                    WorkItem.state == ApprovalState.PENDING.value,
                    or_(ApprovalStep.approver_id.in_(people),
                        ApprovalStep.approver_id.is_(None)
                        & ApprovalAssignment.approver_id.in_(people)))
             .limit(WAITING_LIMIT))
    if tenant_id:
        query = query.where(WorkItem.tenant_id == tenant_id)
    for_whom = {(m.tenant_id, m.user_id): m for m in standing_in}
    ids = []
    for item_id, item_tenant, amount, approver in db.session.execute(query):
        if approver == actor.user_id:
            ids.append(item_id)
            continue
        covered = for_whom.get((item_tenant, approver))
        if covered is not None and (covered.delegate_max_amount is None
                                    or amount <= covered.delegate_max_amount):
            ids.append(item_id)
    cache[key] = ids
    return ids


def decidable_now(actor: Actor, roles: dict[int, set[str]]):
    """Approvals the viewer may decide now: the open step needs a role they hold with a limit
    they have, is not reserved for someone else, they did not request the item and approved
    no earlier step of it (segregation of duties). Anything that is not an approval passes."""
    limits = dict(db.session.execute(
        select(Membership.tenant_id, Membership.approval_limit)
        .where(Membership.user_id == actor.user_id,
               Membership.tenant_id.in_(list(roles)))).all()) if roles else {}
    me = actor.user_id
    per_tenant = []
    for tenant, held in sorted(roles.items()):
        step_roles = sorted(held & {Role.APPROVER.value, Role.MANAGER.value})
        if not step_roles or tenant not in limits:
            continue
        per_tenant.append((WorkItem.tenant_id == tenant) & exists().where(
            ApprovalStep.item_id == WorkItem.id, ApprovalStep.state == StepState.OPEN.value,
            ApprovalStep.role.in_(step_roles), ApprovalStep.min_limit <= limits[tenant],
            or_(ApprovalStep.approver_id.is_(None), ApprovalStep.approver_id == me)))
    if not per_tenant:
        return WorkItem.kind != Kind.APPROVAL.value
    decided_earlier = exists().where(
        ApprovalStep.item_id == WorkItem.id, ApprovalStep.state == StepState.APPROVED.value,
        or_(ApprovalStep.decided_by_id == me, ApprovalStep.on_behalf_of_id == me))
    return or_(WorkItem.kind != Kind.APPROVAL.value,
               or_(*per_tenant) & or_(WorkItem.requester_id.is_(None),
                                      WorkItem.requester_id != me) & ~decided_earlier)


def _status_condition(status: str | None):
    """Open items unless a drill-down asks for decided ones ("closed") or both ("all")."""
    if status == "closed":
        return ~open_items()
    if status == "all":
        return true()
    return open_items()


def _base(actor: Actor, queue: str, tenant_id: int | None, status: str | None = None):
    query = scoped_items(actor).where(_status_condition(status),
                                      queue_condition(actor, queue, tenant_id))
    if tenant_id:
        query = query.where(WorkItem.tenant_id == tenant_id)
    return query


@dataclass(frozen=True)
class RowTenant:
    display_name: str
    timezone: str


@dataclass(frozen=True)
class RowPerson:
    name: str


@dataclass(frozen=True)
class QueueRow:
    """What one queue row shows, read as plain columns: building ORM objects for 50 rows cost
    more than the query itself."""

    id: int
    kind: str
    subtype: str
    title: str
    external_ref: str
    counterparty: str
    amount: object
    currency: str
    state: str
    sla_state: str | None
    sla_due_at: object
    resolved_at: object
    created_at: object
    assignee_id: int | None
    team_queue: str | None
    tenant: RowTenant
    assignee: RowPerson | None

    @property
    def kind_label(self) -> str:
        return Kind(self.kind).label


def queue_items(actor: Actor, queue: str, tenant_id: int | None, filters: QueueFilters,
                cursor: str | None = None, limit: int = PAGE_SIZE) -> list[QueueRow]:
    query = _base(actor, queue, tenant_id, filters.status).where(
        *filters.conditions(actor.user_id))
    if cursor:
        query = query.where(*filters.after(cursor))
    query = (query.with_only_columns(*ROW_COLUMNS, Tenant.name, Tenant.brand_name,
                                     Tenant.timezone, User.name)
             .join(Tenant, Tenant.id == WorkItem.tenant_id)
             .outerjoin(User, User.id == WorkItem.assignee_id)
             .order_by(*filters.order_by()).limit(limit))
    tenants: dict[tuple, RowTenant] = {}
    out = []
    for row in db.session.execute(query):
        (item_id, kind, subtype, title, ref, counterparty, amount, currency, state, sla_state,
         due, resolved, created, assignee_id, team_queue, tenant_name, brand, tz,
         assignee_name) = row
        tenant = tenants.setdefault((tenant_name, brand, tz), RowTenant(brand or tenant_name, tz))
        out.append(QueueRow(item_id, kind, subtype, title, ref, counterparty, amount, currency,
                            state, sla_state, due, resolved, created, assignee_id, team_queue,
                            tenant, RowPerson(assignee_name) if assignee_name else None))
    return out


def in_queue(actor: Actor, queue: str, tenant_id: int | None, filters: QueueFilters,
             item_id: int) -> bool:
    """Does the item (still) belong in this filtered queue? Decides whether a row stays."""
    query = _base(actor, queue, tenant_id, filters.status).where(
        *filters.conditions(actor.user_id), WorkItem.id == item_id)
    return db.session.scalar(select(query.exists())) or False


def queue_counts(actor: Actor, tenant_id: int | None) -> dict[str, int]:
    """Open items per queue, in one query (one pass over the open items the viewer can see,
    counted per queue with FILTER), whatever the number of queues or rows."""
    queues = queues_for(actor, tenant_id)
    query = scoped_items(actor).where(open_items())
    if tenant_id:
        query = query.where(WorkItem.tenant_id == tenant_id)
    conditions = [queue_condition(actor, q.name, tenant_id) for q in queues]
    query = query.where(or_(*conditions)).with_only_columns(
        *[func.count().filter(c) for c in conditions]).order_by(None)
    row = db.session.execute(query).one()
    return {q.name: count for q, count in zip(queues, row, strict=True)}


def people_who_work(tenant_ids, roles) -> list[User]:
    """Active members of these tenants holding one of these roles: who work can go to."""
    if not tenant_ids:
        return []
    return list(db.session.scalars(
        select(User).join(Membership, Membership.user_id == User.id)
        .join(MembershipRole, MembershipRole.membership_id == Membership.id)
        .where(Membership.tenant_id.in_(tenant_ids), MembershipRole.role.in_(roles),
               User.active.is_(True))
        .distinct().order_by(User.name)
    ))


def assignable_people(actor: Actor, tenant_id: int | None) -> list[User]:
    """People a manager can reassign work to: active members with a working role in the
    tenants the manager manages."""
    roles = _roles_by_tenant(actor, tenant_id)
    managed = [t for t, r in roles.items() if Role.MANAGER.value in r]
    return people_who_work(managed, {r for rs in WORKER_ROLES.values() for r in rs})
