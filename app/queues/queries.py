"""Which items a queue holds for the viewer. Read-only, tenant-scoped, keyset-paged."""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import exists, false, func, or_, select, text, true

from app.actors import Actor
from app.extensions import db
from app.approvals.models import ApprovalStepMember, ApprovalVote
from app.models import (
    ApprovalAssignment,
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
from app.policy.engine import QA_QUEUE
from app.policy.models import Outcome, PolicyRule, PolicyState, PolicyVersion
from app.work.queries import open_items, scoped_items
from app.types import utcnow
from app.unit_of_work import register_on_commit
from app.work.states import WORKER_ROLES, ApprovalState
from app.work.rollup_tables import queue_count_rollups

log = logging.getLogger(__name__)

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

    roles = _roles_by_tenant(actor, tenant_id)
    key = ("team_queues", actor.user_id, tuple(sorted((t, tuple(sorted(r)))
                                                     for t, r in roles.items())))
    cache = g.setdefault("cleardesk_team_queues", {}) if has_request_context() else {}
    if key in cache:
        return cache[key]
    scopes: dict[str, set] = {}
    if roles:
        # One read of the few version rows of these tenants that were in force, each with the
        # rules that send work to a named queue (a version without one comes once, ruleless).
        rows = db.session.execute(
            select(PolicyVersion.id, PolicyVersion.tenant_id, PolicyVersion.qa_sample_pct,
                   PolicyVersion.qa_role, PolicyVersion.effective_from, PolicyVersion.version,
                   PolicyVersion.retired_at, PolicyRule.kind, PolicyRule.queue)
            .outerjoin(PolicyRule, (PolicyRule.policy_id == PolicyVersion.id)
                       & (PolicyRule.outcome == Outcome.QUEUE.value)
                       & PolicyRule.queue.is_not(None))
            .where(PolicyVersion.tenant_id.in_(list(roles)),
                   PolicyVersion.state.in_((PolicyState.ACTIVE.value,
                                            PolicyState.RETIRED.value)))).all()
        for row in rows:
            if row.queue is not None and _works(roles[row.tenant_id], row.kind):
                scopes.setdefault(row.queue, set()).add((row.tenant_id, row.kind))
        # The QA queue exists where a version that was in force sampled; its role is the one
        # of the version in force now (as PolicyVersion.in_force picks it).
        now = utcnow()
        versions = list({row.id: row for row in rows}.values())
        sampled = {v.tenant_id for v in versions if v.qa_sample_pct > 0}
        in_force: dict[int, tuple] = {}
        for v in versions:
            if (v.effective_from is not None and v.effective_from <= now
                    and (v.retired_at is None or v.retired_at > now)):
                rank = (v.effective_from, v.version)
                if v.tenant_id not in in_force or rank > in_force[v.tenant_id][0]:
                    in_force[v.tenant_id] = (rank, v.qa_role)
        for tenant in sorted(sampled):
            qa_role = in_force[tenant][1] if tenant in in_force else Role.MANAGER.value
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
    if queue == "mine":
        waiting = waiting_on(actor, tenant_id)
        mine = WorkItem.assignee_id == actor.user_id
        return or_(mine, WorkItem.id.in_(waiting)) if waiting else mine
    if queue == "unassigned":
        # Per kind the viewer works, the tenants where they work it; approvals only those
        # they may decide now. One plain conjunction for someone who works one kind.
        parts = []
        for kind in WORKER_ROLES:
            tenants = sorted(t for t, r in roles.items() if _works(r, kind))
            if not tenants:
                continue
            part = (WorkItem.kind == kind) & WorkItem.tenant_id.in_(tenants)
            if kind == Kind.APPROVAL.value:
                part = part & decidable_now(actor, roles, approvals_only=True)
            parts.append(part)
        if not parts:
            return false()
        return WorkItem.assignee_id.is_(None) & (or_(*parts) if len(parts) > 1 else parts[0])
    if queue == "team":
        managed = [t for t, r in roles.items() if Role.MANAGER.value in r]
        return WorkItem.tenant_id.in_(managed) if managed else false()
    kind = QUEUES[queue].kind
    tenants = [t for t, r in roles.items() if _works(r, kind)]
    if not tenants:
        return false()
    condition = (WorkItem.kind == kind) & WorkItem.tenant_id.in_(tenants)
    if kind == Kind.APPROVAL.value:
        return condition & decidable_now(actor, roles, approvals_only=True)
    return condition


# The most routed steps "My work" lists by id (an approver with more has a backlog to clear
# from Approvals, which lists everything they may decide).
WAITING_LIMIT = 2000


def waiting_on(actor: Actor, tenant_id: int | None) -> list[int]:
    """Pending approvals whose open step is routed (or reserved) to the viewer, or to someone
    they stand in for today (within the delegation's kinds and amount): the work mailed to
    them, which "My work" lists beside what they claimed. Read once per request."""
    return _waiting(actor, tenant_id)[0]


def _waiting(actor: Actor, tenant_id: int | None) -> tuple[list[int], int]:
    """waiting_on's ids, and how many of them are not assigned to the viewer (My work's count
    adds those to the counter of what is)."""
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
    # Two sources, each read through its own index (an OR across the two tables would read
    # every open step): steps reserved for these people, and open unreserved steps that
    # routing assigned to them.
    reserved = select(ApprovalStep.item_id, ApprovalStep.approver_id.label("approver")).where(
        ApprovalStep.state == StepState.OPEN.value, ApprovalStep.approver_id.in_(people))
    routed = (select(ApprovalAssignment.item_id, ApprovalAssignment.approver_id)
              .join(ApprovalStep, ApprovalStep.id == ApprovalAssignment.step_id)
              .where(ApprovalStep.state == StepState.OPEN.value,
                     ApprovalStep.approver_id.is_(None),
                     ApprovalAssignment.approver_id.in_(people)))
    # And the parallel steps where these people are members who have not voted yet.
    voted = exists().where(ApprovalVote.step_id == ApprovalStepMember.step_id,
                           ApprovalVote.member_id == ApprovalStepMember.user_id)
    members = (select(ApprovalStepMember.item_id, ApprovalStepMember.user_id)
               .join(ApprovalStep, ApprovalStep.id == ApprovalStepMember.step_id)
               .where(ApprovalStep.state == StepState.OPEN.value,
                      ApprovalStepMember.user_id.in_(people), ~voted))
    # The open steps first, then their items by id: one join of the two let the planner, with
    # a freshly loaded table's estimates (a row or so each side), loop over every pending
    # item re-running the union for each (quadratic: 340 ms for 300 items, seconds at R9's
    # 2,500).
    steps = db.session.execute(reserved.union_all(routed, members)).all()
    tenants = [tenant_id] if tenant_id else sorted(actor.tenant_ids())
    rows = []
    item_ids = sorted({item_id for item_id, _approver in steps})
    for start in range(0, len(item_ids), 5000):  # bound the statement's parameters
        if len(rows) >= WAITING_LIMIT:
            break
        rows.extend(db.session.execute(
            select(WorkItem.id, WorkItem.tenant_id, WorkItem.amount, WorkItem.assignee_id)
            .where(WorkItem.id.in_(item_ids[start:start + 5000]),
                   WorkItem.state == ApprovalState.PENDING.value,
                   WorkItem.tenant_id.in_(tenants))
            .limit(WAITING_LIMIT - len(rows))).all())
    pending = {row[0]: row for row in rows}
    for_whom = {(m.tenant_id, m.user_id): m for m in standing_in}
    ids = []
    others = 0
    for item_id, approver in steps:
        if item_id not in pending:
            continue
        _id, item_tenant, amount, assignee = pending[item_id]
        if approver != actor.user_id:
            covered = for_whom.get((item_tenant, approver))
            if covered is None or (covered.delegate_max_amount is not None
                                   and amount > covered.delegate_max_amount):
                continue
        ids.append(item_id)
        others += assignee != actor.user_id
    cache[key] = (ids, others)
    return cache[key]


def decidable_now(actor: Actor, roles: dict[int, set[str]], approvals_only: bool = False):
    """Approvals the viewer may decide now: the open step needs a role they hold with a limit
    they have, is not reserved for someone else, they did not request the item and approved
    no earlier step of it (segregation of duties). Anything that is not an approval passes,
    unless `approvals_only` (the caller has already kept approvals only: the condition is then
    one plain conjunction, which the database reads as a semi-join along the page's index).
    Tenants where the viewer holds the same roles and limit share one step condition."""
    limits = _limits(actor, roles)
    me = actor.user_id
    groups: dict[tuple, list[int]] = {}
    for tenant, held in sorted(roles.items()):
        step_roles = tuple(sorted(held & {Role.APPROVER.value, Role.MANAGER.value}))
        if step_roles and tenant in limits:
            groups.setdefault((step_roles, limits[tenant]), []).append(tenant)
    not_approval = WorkItem.kind != Kind.APPROVAL.value
    if not groups:
        return false() if approvals_only else not_approval
    per_group = [
        (WorkItem.tenant_id.in_(tenants) if len(tenants) > 1 else WorkItem.tenant_id == tenants[0])
        & exists().where(
            ApprovalStep.item_id == WorkItem.id, ApprovalStep.state == StepState.OPEN.value,
            ApprovalStep.role.in_(step_roles), ApprovalStep.min_limit <= limit,
            ApprovalStep.need.is_(None),
            or_(ApprovalStep.approver_id.is_(None), ApprovalStep.approver_id == me))
        for (step_roles, limit), tenants in sorted(groups.items())]
    # A parallel step: the viewer is one of its members and has not voted on it.
    per_group.append(
        WorkItem.tenant_id.in_([t for ts in groups.values() for t in ts])
        & exists().where(
            ApprovalStepMember.item_id == WorkItem.id, ApprovalStepMember.user_id == me,
            ApprovalStep.id == ApprovalStepMember.step_id,
            ApprovalStep.state == StepState.OPEN.value,
            ~exists().where(ApprovalVote.step_id == ApprovalStepMember.step_id,
                            ApprovalVote.decided_by_id == me)))
    decided_earlier = exists().where(
        ApprovalStep.item_id == WorkItem.id, ApprovalStep.state == StepState.APPROVED.value,
        or_(ApprovalStep.decided_by_id == me, ApprovalStep.on_behalf_of_id == me)) | exists(
        ).where(ApprovalVote.item_id == WorkItem.id, ApprovalVote.decision == "approve",
                or_(ApprovalVote.decided_by_id == me, ApprovalVote.member_id == me))
    decidable = (or_(*per_group) if len(per_group) > 1 else per_group[0]) & or_(
        WorkItem.requester_id.is_(None), WorkItem.requester_id != me) & ~decided_earlier
    return decidable if approvals_only else or_(not_approval, decidable)


def _limits(actor: Actor, roles: dict[int, set[str]]) -> dict[int, object]:
    """The viewer's approval limit per tenant, from the memberships loaded with them."""
    if actor.user is None:
        return {}
    return {m.tenant_id: m.approval_limit for m in actor.user.memberships
            if m.tenant_id in roles}


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


_INDEX_ORDER = "cleardesk_index_order"


@contextmanager
def read_in_index_order(status: str | None):
    """A page of open items is best read along the queue's ordered index until it is full.
    PostgreSQL cannot see that: a queue's conditions hang together (tenant, kind, assignee, the
    open step the viewer may decide), it multiplies their selectivities, expects a few hundred
    rows where there are thousands, sorts every candidate and hashes every open step (480 ms
    at a million items where the ordered read takes under 2). For this one statement it is
    told to read along an index and probe the steps by item; where no index gives the order
    (My work's two sources) it still sorts. Decided items (a drill-down)
    have no ordered index and keep the planner's own choice."""
    postgres = db.session.get_bind().dialect.name == "postgresql"
    if not postgres or status in ("closed", "all") or db.session.info.get(_INDEX_ORDER):
        yield  # not PostgreSQL, decided items, or already inside
        return
    db.session.info[_INDEX_ORDER] = True
    db.session.execute(text(
        "SELECT set_config('enable_sort', 'off', true), "
        "set_config('enable_bitmapscan', 'off', true), "
        "set_config('enable_hashjoin', 'off', true), "
        "set_config('enable_mergejoin', 'off', true), "
        "set_config('max_parallel_workers_per_gather', '0', true)"))
    try:
        yield
    except BaseException:
        # The settings are local to the transaction, which the error ends; a RESET sent into
        # a failed PostgreSQL transaction would only hide the error that failed it.
        db.session.info.pop(_INDEX_ORDER, None)
        raise
    else:
        db.session.info.pop(_INDEX_ORDER, None)
        db.session.execute(text(
            "RESET enable_sort; RESET enable_bitmapscan; RESET enable_hashjoin; "
            "RESET enable_mergejoin; RESET max_parallel_workers_per_gather"))


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
    with read_in_index_order(filters.status):
        rows = db.session.execute(query).all()
    for row in rows:
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


# Queues whose size depends on what the viewer may decide now (role, limit, segregation of
# duties) are counted up to this many; past it the side bar says "100+" (a badge, not a
# report: the dashboard has the backlog). Every other count is read from the counters the
# ledger keeps (queue_open_counts), whatever the backlog.
COUNT_CAP = 100


class QueueCount(int):
    """A queue's count; `capped` when there are more than the figure (shown "100+")."""

    capped = False

    @classmethod
    def of(cls, value: int, capped: bool) -> QueueCount:
        count = cls(value)
        count.capped = capped
        return count

    def __format__(self, spec: str) -> str:
        return format(int(self), spec) + ("+" if self.capped else "")


def _capped(value: int) -> QueueCount:
    return QueueCount.of(min(value, COUNT_CAP), value > COUNT_CAP)


def queue_counts(actor: Actor, tenant_id: int | None) -> dict[str, int]:
    """Open items per queue. The counts that are the same for everyone who can see a tenant
    (the team's backlog, a kind, a named team queue, what is assigned to whom) are sums of a
    few counter rows; what only this viewer may decide is counted up to COUNT_CAP, so no count
    costs a pass over the backlog. Kept for the viewer until something changes in one of their
    tenants (CountsCache)."""
    queues = queues_for(actor, tenant_id)
    roles = _roles_by_tenant(actor, tenant_id)
    cache = CountsCache(actor, tenant_id, roles, queues)
    counts = cache.read()
    if counts is None:
        if actor.own_requests_only() & set(roles):
            # Need-to-know: a requester counts only the few items they may see.
            counts = _scanned_counts(actor, tenant_id, queues)
        else:
            rows = _counter_rows(list(roles))
            with read_in_index_order(None):
                counts = _counts_from(actor, tenant_id, queues, roles, rows)
        cache.write(counts)
    return counts


class CountsCache:
    """A viewer's queue counts, kept in Redis until something changes in one of their tenants.

    Each tenant has a generation number, moved on by every unit of work that writes to its
    audit trail (a change of an item, a step, a membership, a delegation, a policy: whatever
    can change a count) once it has committed. Counts are kept with the generations read
    before they were counted and used while those still hold, for the same roles, limits and
    queues; so a count is never older than the last change the viewer could have seen, and a
    page, the side bar's poll and the answer to an action read it from one Redis round trip
    when nothing changed. Redis out of reach: counted from the database, as without it."""

    KEEP_SECONDS = 300  # and the days a delegation starts or ends (no event) are caught up

    def __init__(self, actor: Actor, tenant_id: int | None, roles: dict, queues: list):
        self.tenants = sorted(roles)
        limits = _limits(actor, roles)
        self.shape = json.dumps([sorted((t, sorted(r), str(limits.get(t))) for t, r in
                                        roles.items()), [q.name for q in queues], COUNT_CAP])
        prefix = _cache_prefix()
        self.key = f"{prefix}:counts:{actor.user_id}:{tenant_id or 0}"
        self.generation_keys = [f"{prefix}:generation:{t}" for t in self.tenants]
        self.generations: list | None = None

    def read(self) -> dict | None:
        if not self.tenants:
            return None
        try:
            stored, *generations = _redis().mget([self.key, *self.generation_keys])
        except Exception as exc:  # noqa: BLE001 - see the class's docstring
            log.warning("queue counts not cached (Redis): %s", exc)
            return None
        self.generations = [int(g or 0) for g in generations]
        if stored is None:
            return None
        kept = json.loads(stored)
        if kept["generations"] != self.generations or kept["shape"] != self.shape:
            return None
        return {name: QueueCount.of(value, capped)
                for name, (value, capped) in kept["counts"].items()}

    def write(self, counts: dict) -> None:
        if self.generations is None:
            return
        value = json.dumps({"generations": self.generations, "shape": self.shape,
                            "counts": {name: [int(count), getattr(count, "capped", False)]
                                       for name, count in counts.items()}})
        try:
            _redis().set(self.key, value, ex=self.KEEP_SECONDS)
        except Exception as exc:  # noqa: BLE001
            log.warning("queue counts not cached (Redis): %s", exc)


def _cache_prefix() -> str:
    from flask import current_app

    return f"cleardesk:{current_app.config['RQ_QUEUE']}"


def _redis():
    # Imported here: app.jobs reads the queue settings of every package at import.
    from app.jobs import redis_connection

    return redis_connection()


def _tenants_changed(tenant_ids: set[int]) -> None:
    """After a commit: the counts kept for these tenants' viewers are out of date."""
    pipe = _redis().pipeline(transaction=False)
    for tenant_id in sorted(tenant_ids):
        pipe.incr(f"{_cache_prefix()}:generation:{tenant_id}")
    pipe.execute()


register_on_commit(_tenants_changed)


def _counts_from(actor, tenant_id, queues, roles, rows) -> dict[str, int]:
    """Each queue's count from the counter rows, and the capped counts where the viewer's
    own limits decide."""
    def total(keep) -> int:
        return sum(items for tenant, kind, assignee, team, items in rows
                   if keep(tenant, kind, assignee, team))

    def works(tenant: int, kind: str) -> bool:
        return _works(roles.get(tenant, set()), kind)

    approval = Kind.APPROVAL.value
    names = {queue.name for queue in queues}
    # The counts only this viewer's limits decide, in one statement.
    capped = dict(zip([n for n in ("unassigned", "approvals") if n in names], _capped_counts(
        actor, tenant_id, [(n, (WorkItem.kind == approval,) if n == "unassigned" else ())
                           for n in ("unassigned", "approvals") if n in names])))
    out: dict[str, int] = {}
    for queue in queues:
        name = queue.name
        if queue.team_queue:
            scope = set(queue.scope)
            out[name] = total(lambda t, k, a, team: team == queue.team_queue and (t, k) in scope)
        elif name == "mine":
            out[name] = total(lambda t, k, a, team: a == actor.user_id) + _waiting_unassigned(
                actor, tenant_id)
        elif name == "team":
            out[name] = total(lambda t, k, a, team: Role.MANAGER.value in roles.get(t, ()))
        elif name == "unassigned":
            others = total(lambda t, k, a, team: a == 0 and k != approval and works(t, k))
            decidable = capped["unassigned"]
            out[name] = _capped(others + decidable) if decidable.capped else QueueCount(
                others + decidable)
        elif name == "approvals":
            out[name] = capped["approvals"]
        else:
            kind = QUEUES[name].kind
            out[name] = total(lambda t, k, a, team: k == kind and works(t, k))
    return out


def _counter_rows(tenant_ids: list[int]) -> list[tuple]:
    """The open-item counters of these tenants: (tenant, kind, assignee or 0, team queue or
    '', items). A few rows per person and queue, whatever the number of items."""
    if not tenant_ids:
        return []
    q = queue_count_rollups
    return [tuple(row) for row in db.session.execute(
        select(q.c.tenant_id, q.c.kind, q.c.assignee_id, q.c.team_queue, q.c["items"])
        .where(q.c.tenant_id.in_(tenant_ids)))]


def _capped_counts(actor: Actor, tenant_id: int | None,
                   queues: list[tuple[str, tuple]]) -> list[QueueCount]:
    """Each (queue, extra conditions)'s open items, counted up to one more than COUNT_CAP, in
    one statement."""
    if not queues:
        return []
    counts = [select(func.count()).select_from(
        _base(actor, queue, tenant_id).where(*extra).with_only_columns(WorkItem.id)
        .order_by(None).limit(COUNT_CAP + 1).subquery()).scalar_subquery()
        for queue, extra in queues]
    with read_in_index_order(None):  # stop at the cap, not gather every candidate first
        row = db.session.execute(select(*counts)).one()
    return [_capped(value or 0) for value in row]


def _waiting_unassigned(actor: Actor, tenant_id: int | None) -> int:
    """Items routed to the viewer that nobody has claimed or someone else holds: "My work"
    lists them beside what is assigned to the viewer (which the counters count)."""
    return _waiting(actor, tenant_id)[1]


def _scanned_counts(actor: Actor, tenant_id: int | None, queues: list[QueueDef]) -> dict:
    """Open items per queue in one pass over what the viewer may see (counted per queue with
    FILTER): for viewers who see few items."""
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
