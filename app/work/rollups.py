"""Keeping the dashboard rollups current in the transaction that changes an item.

The ledger (app.work.ledger), the only writer of work items, reports each change it writes
with the item's values before and after it (`apply_item_changes`): the item's contribution to
the rollups before the change is taken away and its contribution after it added. So the
rollups are always the same function of the items' current rows (`contributions`) — the bulk
rebuild uses that same function — and they commit or roll back with the change itself: no lag,
no watermark, no job to miss. A unit of work's changes are summed and written when it commits
(app.unit_of_work.UnitOfWork), one upsert per rollup row, so those hot rows are locked for
the commit only. The demo seed writes by COPY and then works the rollups out from what it
wrote (`rollup_totals`, per tenant in the tenant's own process, then `write_rollups`).

An approval step, once decided, stays decided: the approvals code reports each decision
(`record_step_decision`), and the step's business time from its opening to its decision is
added to `dashboard_steps` once, in the same unit of work.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select

from app.models import ApprovalStep, Kind, SlaState, StepState, Tenant, WorkItem
from app.unit_of_work import register_writer, unit_of_work
from app.work.calendar import BusinessCalendar, calendar_for
from app.work.rollup_tables import (
    BUCKETS,
    DAILY_SUMS,
    DUE_SUMS,
    OPEN_SUMS,
    STEP_SUMS,
    TURNAROUND_EDGES,
    daily_rollups,
    due_slot,
    open_due_rollups,
    open_rollups,
    queue_count_rollups,
    step_rollups,
)
from app.work.states import FINAL_STATES

# The item columns the rollups depend on.
TRACKED = ("tenant_id", "kind", "subtype", "state", "created_at", "resolved_at", "sla_state",
           "assignee_id", "last_actor_id", "decided_by_type", "amount_at_risk",
           "claimed_amount", "calculated_amount", "sla_due_at", "team_queue")
POLICY = "policy"


class ItemFacts(NamedTuple):
    """The tracked columns of one item at one moment (a tuple: made for every item a batch
    changes, twice)."""

    tenant_id: int
    kind: str
    subtype: str
    state: str
    created_at: datetime
    resolved_at: datetime | None
    sla_state: str | None
    assignee_id: int | None
    last_actor_id: int | None
    decided_by_type: str | None
    amount_at_risk: Decimal | None
    claimed_amount: Decimal | None
    calculated_amount: Decimal | None
    sla_due_at: datetime | None = None
    team_queue: str | None = None


# Built from TRACKED values in order (a rebuild's selected columns, the ledger's values).
assert ItemFacts._fields == TRACKED


def turnaround_bucket(seconds: float) -> str:
    hours = seconds / 3600
    for index, edge in enumerate(TURNAROUND_EDGES):
        if hours <= edge:
            return BUCKETS[index]
    return BUCKETS[-1]


@dataclass(frozen=True, slots=True)
class TenantClock:
    """What a tenant's rollup rows need of it: its id, its timezone (for local days) and its
    business calendar (for turnaround), looked up once per tenant, not once per item."""

    tenant_id: int
    zone: ZoneInfo
    calendar: BusinessCalendar

    @classmethod
    def of(cls, tenant: Tenant) -> TenantClock:
        return cls(tenant.id, ZoneInfo(tenant.timezone), calendar_for(tenant))

    def day(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()

    def business_seconds(self, start: datetime, end: datetime) -> int:
        return int(self.calendar.between(start, end).total_seconds())


def cents(amount: Decimal | None) -> int:
    return int((amount or Decimal(0)) * 100)


def decider_of(facts: ItemFacts) -> int:
    """Whom a resolution counts for: the person who made the final move; 0 when no person did
    (the policy engine, the system)."""
    if facts.decided_by_type == POLICY:
        return 0
    return facts.last_actor_id or 0


def contributions(facts: ItemFacts, clock: TenantClock) -> list[tuple]:
    """(table, key, sums) rows this item adds to the rollups."""
    out = [(daily_rollups, (facts.tenant_id, clock.day(facts.created_at),
                            facts.kind, facts.subtype, 0), {"created": 1})]
    if facts.state in FINAL_STATES.get(facts.kind, ()) and facts.resolved_at is not None:
        seconds = clock.business_seconds(facts.created_at, facts.resolved_at)
        sums = {
            "resolved": 1,
            "met": int(facts.sla_state == SlaState.MET.value),
            "breached": int(facts.sla_state == SlaState.BREACHED.value),
            "auto_approved": int(facts.state == "approved" and facts.decided_by_type == POLICY),
            "turnaround_seconds": seconds,
            turnaround_bucket(seconds): 1,
        }
        out.append((daily_rollups, (facts.tenant_id, clock.day(facts.resolved_at),
                                    facts.kind, facts.subtype, decider_of(facts)), sums))
    elif facts.state not in FINAL_STATES.get(facts.kind, ()):
        sums = {"items": 1}
        if facts.kind == Kind.BILLING_EXCEPTION.value:
            sums["at_risk_cents"] = cents(facts.amount_at_risk)
        if facts.kind == Kind.SETTLEMENT_DISPUTE.value:
            sums["delta_cents"] = cents(facts.claimed_amount) - cents(facts.calculated_amount)
        out.append((open_rollups, (facts.tenant_id, facts.kind, facts.subtype,
                                   clock.day(facts.created_at),
                                   facts.assignee_id or 0), sums))
        out.append((queue_count_rollups, (facts.tenant_id, facts.kind, facts.assignee_id or 0,
                                          facts.team_queue or ""), {"items": 1}))
        if facts.sla_due_at is not None:
            out.append((open_due_rollups, (facts.tenant_id, due_slot(facts.sla_due_at),
                                           facts.kind), {"items": 1}))
    return out


# ---------------------------------------------------------------------------------------------
# Approval steps: turnaround per step type.

STEP_TYPES = {"single": "Single approver", "owner": "Owner from the item",
              "all": "Group: all of", "any": "Group: any one of", "quorum": "Group: M of N",
              "fallback": "Group short of members (one person)", "escalated": "Escalated"}
DECIDED_STEP_STATES = (StepState.APPROVED.value, StepState.REJECTED.value)


def step_type(need: str | None, group_id: int | None, source_field: str | None,
              escalation_level: int | None) -> str:
    """The kind of routing a decided step had, as the dashboard groups it."""
    if escalation_level:
        return "escalated"
    if need:
        return need if need in ("all", "any") else "quorum"
    if group_id is not None:
        return "fallback"
    return "owner" if source_field else "single"


def step_contribution(clock: TenantClock, kind_of_step: str, opened: datetime,
                      decided: datetime) -> tuple:
    """(table, key, sums) a decided step adds: business time from its opening (the previous
    step's decision, or the item's arrival) to its decision, on the tenant-local day of the
    decision."""
    seconds = max(clock.business_seconds(opened, decided), 0)
    return (step_rollups, (clock.tenant_id, clock.day(decided), kind_of_step),
            {"decided": 1, "turnaround_seconds": seconds, turnaround_bucket(seconds): 1})


def step_opened(created_at: datetime, earlier_decisions) -> datetime:
    """When a step opened: the latest decision of the steps before it, else the arrival."""
    return max((d for d in earlier_decisions if d is not None), default=created_at)


def record_step_decision(session, item: WorkItem, step: ApprovalStep) -> None:
    """The approvals code decided `step` of `item` (approved or rejected, its decided_at set):
    add it to the step rollup with the unit of work's other rollup changes."""
    opened = step_opened(item.created_at, (s.decided_at for s in item.steps
                                           if s.position < step.position))
    kind_of_step = step_type(step.need, step.group_id, step.source_field,
                             step.escalation_level)
    row = step_contribution(TenantClock.of(session.get(Tenant, item.tenant_id)), kind_of_step,
                            opened, step.decided_at)
    deltas: dict = {}
    _add(deltas, [row], +1)
    unit_of_work(session).add("rollup_deltas", deltas)


def _step_totals(session, clocks: dict[int, TenantClock], totals: dict, ids: range,
                 batch: int) -> int:
    """The step rollup from the stored steps of the items in `ids` (of the tenants in
    `clocks`), a range of item ids at a time: a step's opening needs the decisions of the
    item's earlier steps."""
    step, item = ApprovalStep, WorkItem
    decided = 0
    for low in range(ids.start, ids.stop, batch):
        rows = session.execute(
            select(step.item_id, step.state, step.decided_at, step.need, step.group_id,
                   step.source_field, step.escalation_level, item.tenant_id, item.created_at)
            .join(item, item.id == step.item_id)
            .where(step.item_id >= low, step.item_id < min(low + batch, ids.stop),
                   item.tenant_id.in_(clocks))
            .order_by(step.item_id, step.position)).all()
        current, earlier = None, []
        for item_id, state, at, need, group_id, source, level, tenant_id, created in rows:
            if item_id != current:
                current, earlier = item_id, []
            if state in DECIDED_STEP_STATES and at is not None:
                _add(totals, [step_contribution(
                    clocks[tenant_id], step_type(need, group_id, source, level),
                    step_opened(created, earlier), at)], +1)
                decided += 1
            earlier.append(at)
    return decided


def _key_columns(table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


def _sums_of(table) -> tuple[str, ...]:
    return {daily_rollups: DAILY_SUMS, step_rollups: STEP_SUMS, open_rollups: OPEN_SUMS,
            open_due_rollups: DUE_SUMS, queue_count_rollups: DUE_SUMS}[table]


# Tables that hold only what is open: a row whose items reach zero is removed.
BACKLOG_TABLES = (open_rollups, open_due_rollups, queue_count_rollups)


def _upsert(connection, table, rows: list[dict]) -> None:
    """Add each row's sums to the stored ones (insert where there is none yet)."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    sums = _sums_of(table)
    for row in rows:
        full = {name: row.get(name, 0) for name in sums}
        full.update({k: row[k] for k in _key_columns(table)})
        stmt = insert(table).values(**full)
        changed = [name for name in sums if row.get(name)]
        stmt = stmt.on_conflict_do_update(
            index_elements=_key_columns(table),
            set_={name: table.c[name] + stmt.excluded[name] for name in changed},
        )
        connection.execute(stmt)


def apply_deltas(connection, deltas: dict) -> None:
    """deltas: (table, key) -> {sum name: change}. Open-backlog rows that reach zero items are
    removed, so those tables stay the size of the backlog."""
    by_table: dict = defaultdict(list)
    emptied = []
    for (table, key), sums in deltas.items():
        sums = {k: v for k, v in sums.items() if v}
        if not sums:
            continue
        by_table[table].append({**dict(zip(_key_columns(table), key)), **sums})
        if table in BACKLOG_TABLES and sums.get("items", 0) < 0:
            emptied.append((table, key))
    # In one order for every writer (tables by name, rows by key): two commits that add to the
    # same rows lock them in the same order, and wait for each other instead of deadlocking.
    for table in sorted(by_table, key=lambda t: t.name):
        keys = _key_columns(table)
        _upsert(connection, table, sorted(by_table[table],
                                          key=lambda row: tuple(repr(row[k]) for k in keys)))
    for table, key in emptied:
        columns = [table.c[name] for name in _key_columns(table)]
        connection.execute(delete(table).where(
            *[c == v for c, v in zip(columns, key)], table.c["items"] == 0))


def _merge(total: dict, sums_by_key: dict) -> None:
    """Add each key's sums into `total` (key -> {sum name: value})."""
    for key, sums in sums_by_key.items():
        target = total.setdefault(key, defaultdict(int))
        for name, value in sums.items():
            target[name] += value


def _add(deltas: dict, rows: list[tuple], sign: int) -> None:
    for table, key, sums in rows:
        target = deltas.setdefault((table, key), defaultdict(int))
        for name, value in sums.items():
            target[name] += sign * value


def _apply_pending(session, collected: list[dict]) -> None:
    """At commit: the unit of work's changes summed per rollup row, one upsert for each row,
    so the (hot) rollup rows are locked for the commit only."""
    total: dict = {}
    for deltas in collected:
        _merge(total, deltas)
    apply_deltas(session.connection(), total)


register_writer("rollup_deltas", _apply_pending)


def apply_item_changes(session, changes: list[tuple[dict | None, dict]]) -> None:
    """The ledger's report of what it wrote (app.work.ledger): (before, after) values of the
    TRACKED columns of each changed item; before is None for an item just inserted."""
    deltas: dict = {}
    clocks: dict[int, TenantClock] = {}
    for before, after in changes:
        if before == after:
            continue  # nothing the rollups count changed (a routing that kept the queue)
        for values, sign in ((before, -1), (after, +1)):
            if values is None:
                continue
            facts = ItemFacts(*map(values.get, TRACKED))
            if facts.tenant_id not in clocks:
                clocks[facts.tenant_id] = TenantClock.of(session.get(Tenant, facts.tenant_id))
            _add(deltas, contributions(facts, clocks[facts.tenant_id]), sign)
    if deltas:
        unit_of_work(session).add("rollup_deltas", deltas)


# What rebuild_rollups writes, by table name (sums travel between processes by name).
_REBUILT = {t.name: t for t in (daily_rollups, step_rollups, *BACKLOG_TABLES)}


@dataclass
class RollupTotals:
    """The rollups' sums computed from stored items and steps: (table name, key) -> sums.
    Several (of different tenants, computed apart) add up to the whole."""

    sums: dict = field(default_factory=dict)
    items: int = 0
    steps: int = 0

    def add(self, other: RollupTotals) -> None:
        _merge(self.sums, other.sums)
        self.items += other.items
        self.steps += other.steps


def rollup_totals(session, tenant_ids: list[int] | None = None,
                  batch: int = 20000) -> RollupTotals:
    """The same `contributions` as the live path, from the stored items (and decided steps)
    of these tenants (all by default), summed in memory (the result is small)."""
    tenants = select(Tenant)
    if tenant_ids is not None:
        tenants = tenants.where(Tenant.id.in_(tenant_ids))
    clocks = {t.id: TenantClock.of(t) for t in session.scalars(tenants)}
    low, high = session.execute(select(func.min(WorkItem.id), func.max(WorkItem.id))
                                .where(WorkItem.tenant_id.in_(clocks))).one()
    if low is None:
        return RollupTotals()
    ids = range(low, high + 1)
    totals: dict = {}
    columns = [getattr(WorkItem, name) for name in TRACKED]
    last_id, items = low - 1, 0
    while True:
        rows = session.execute(
            select(WorkItem.id, *columns)
            .where(WorkItem.id > last_id, WorkItem.id <= high, WorkItem.tenant_id.in_(clocks))
            .order_by(WorkItem.id).limit(batch)).all()
        if not rows:
            break
        for row in rows:
            facts = ItemFacts(*row[1:])
            _add(totals, contributions(facts, clocks[facts.tenant_id]), +1)
        items += len(rows)
        last_id = rows[-1][0]
    steps = _step_totals(session, clocks, totals, ids, batch)
    return RollupTotals({(table.name, key): dict(sums) for (table, key), sums in totals.items()},
                        items, steps)


def write_rollups(session, totals: RollupTotals) -> dict[str, int]:
    """Replace the rollup tables with `totals` (in the caller's transaction)."""
    connection = session.connection()
    for table in _REBUILT.values():
        connection.execute(delete(table))
    by_table: dict = defaultdict(list)
    for (name, key), sums in totals.sums.items():
        table = _REBUILT[name]
        row = {column: 0 for column in _sums_of(table)}
        row.update(dict(zip(_key_columns(table), key)))
        row.update(sums)
        if table in BACKLOG_TABLES and not row["items"]:
            continue
        by_table[table].append(row)
    for table, rows in by_table.items():
        for start in range(0, len(rows), 5000):
            connection.execute(table.insert(), rows[start:start + 5000])
    return {"items": totals.items, "steps": totals.steps,
            "daily_rows": len(by_table[daily_rollups]),
            "step_rows": len(by_table[step_rollups]),
            "open_rows": len(by_table[open_rollups]),
            "due_rows": len(by_table[open_due_rollups]),
            "queue_rows": len(by_table[queue_count_rollups])}


def rebuild_rollups(session, batch: int = 20000) -> dict[str, int]:
    """Recompute the rollup tables from the items (after a bulk load, or to prove them)."""
    return write_rollups(session, rollup_totals(session, batch=batch))
