"""Plain recomputations of the dashboard's figures straight from the items, written without
the rollup code: what the rollups and the dashboard must agree with."""
from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from app.work.rollup_tables import TURNAROUND_EDGES
from app.extensions import db
from app.models import Tenant, WorkItem
from app.work.calendar import calendar_for

FINAL = {"approved", "rejected", "withdrawn", "expired", "resolved", "accepted",
         "partially_accepted"}


def all_items(tenant_ids=None) -> list[WorkItem]:
    db.session.expire_all()
    query = select(WorkItem).order_by(WorkItem.id)
    if tenant_ids is not None:
        query = query.where(WorkItem.tenant_id.in_(tenant_ids))
    return list(db.session.scalars(query))


def is_final(item) -> bool:
    # Every final state name is final for the kind that has it ("rejected" is final for both
    # approvals and disputes).
    return item.state in FINAL


def day_of(moment, tenant: Tenant):
    return moment.astimezone(ZoneInfo(tenant.timezone)).date()


def turnaround_seconds(item) -> int:
    return int(calendar_for(item.tenant).between(item.created_at, item.resolved_at)
               .total_seconds())


def bucket_index(seconds: float) -> int:
    hours = seconds / 3600
    index = 0
    while index < len(TURNAROUND_EDGES) and hours > TURNAROUND_EDGES[index]:
        index += 1
    return index


def decider(item) -> int:
    if item.decided_by_type == "policy" or item.last_actor_id is None:
        return 0
    return item.last_actor_id


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def quarter_hour(moment):
    """The start of the quarter hour (UTC) that holds `moment`."""
    moment = moment.astimezone(UTC)
    return moment - timedelta(minutes=moment.minute % 15, seconds=moment.second,
                              microseconds=moment.microsecond)


def kind_of_step(step) -> str:
    if step.escalation_level:
        return "escalated"
    if step.need in ("all", "any"):
        return step.need
    if step.need:
        return "quorum"
    if step.group_id is not None:
        return "fallback"
    return "owner" if step.source_field else "single"


def expected_step_rollups(items) -> dict:
    """Per tenant, local day of decision and step type: each decided step's business time
    from the latest decision of the steps before it (else the item's arrival)."""
    rows: dict = defaultdict(lambda: defaultdict(int))
    for item in items:
        for step in sorted(item.steps, key=lambda s: s.position):
            if step.state not in ("approved", "rejected") or step.decided_at is None:
                continue
            earlier = [s.decided_at for s in item.steps
                       if s.position < step.position and s.decided_at is not None]
            opened = max(earlier) if earlier else item.created_at
            seconds = max(int(calendar_for(item.tenant).between(opened, step.decided_at)
                              .total_seconds()), 0)
            row = rows[(item.tenant_id, day_of(step.decided_at, item.tenant), kind_of_step(step))]
            row["decided"] += 1
            row["turnaround_seconds"] += seconds
            row[f"t{bucket_index(seconds):02d}"] += 1
    return rows


def expected_rollups(tenant_ids=None) -> tuple[dict, dict, dict, dict, dict]:
    """(daily, open, open by due slot, open per queue, approval steps) as {key: {sum: value}}
    with zero sums left out."""
    daily: dict = defaultdict(lambda: defaultdict(int))
    queues: dict = defaultdict(lambda: defaultdict(int))
    backlog: dict = defaultdict(lambda: defaultdict(int))
    due: dict = defaultdict(lambda: defaultdict(int))
    items = all_items(tenant_ids)
    for item in items:
        tenant = item.tenant
        daily[(item.tenant_id, day_of(item.created_at, tenant), item.kind, item.subtype, 0)][
            "created"] += 1
        if is_final(item):
            row = daily[(item.tenant_id, day_of(item.resolved_at, tenant), item.kind,
                         item.subtype, decider(item))]
            row["resolved"] += 1
            row["met"] += item.sla_state == "met"
            row["breached"] += item.sla_state == "breached"
            row["auto_approved"] += item.state == "approved" and item.decided_by_type == "policy"
            seconds = turnaround_seconds(item)
            row["turnaround_seconds"] += seconds
            row[f"t{bucket_index(seconds):02d}"] += 1
        else:
            row = backlog[(item.tenant_id, item.kind, item.subtype,
                           day_of(item.created_at, tenant), item.assignee_id or 0)]
            row["items"] += 1
            if item.kind == "billing_exception":
                row["at_risk_cents"] += int(item.amount_at_risk * 100)
            if item.kind == "settlement_dispute":
                row["delta_cents"] += int((item.claimed_amount - item.calculated_amount) * 100)
            queues[(item.tenant_id, item.kind, item.assignee_id or 0,
                    item.team_queue or "")]["items"] += 1
            if item.sla_due_at is not None:
                due[(item.tenant_id, quarter_hour(item.sla_due_at), item.kind)]["items"] += 1
    clean = lambda rows: {k: {n: v for n, v in sums.items() if v} for k, sums in rows.items()}  # noqa: E731
    return (clean(daily), clean(backlog), clean(due), clean(queues),
            clean(expected_step_rollups(items)))


def stored_rollups() -> tuple[dict, dict, dict, dict, dict]:
    from app.work.rollup_tables import (
        DAILY_SUMS,
        DUE_SUMS,
        OPEN_SUMS,
        STEP_SUMS,
        daily_rollups,
        open_due_rollups,
        open_rollups,
        queue_count_rollups,
        step_rollups,
    )

    def read(table, sums):
        keys = [c.name for c in table.primary_key.columns]
        out = {}
        for row in db.session.execute(select(table)).mappings():
            values = {n: row[n] for n in sums if row[n]}
            if values:
                out[tuple(row[k] for k in keys)] = values
        return out

    return (read(daily_rollups, DAILY_SUMS), read(open_rollups, OPEN_SUMS),
            read(open_due_rollups, DUE_SUMS), read(queue_count_rollups, DUE_SUMS),
            read(step_rollups, STEP_SUMS))
