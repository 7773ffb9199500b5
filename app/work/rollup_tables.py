"""Rollup tables the dashboard reads instead of the items: their size depends on tenants, days
and groups, not on how many items there are.

`dashboard_daily`: per tenant, tenant-local day, kind, subtype and person, the items created
that day (person 0) and the items resolved that day by that person (0 = no person: the policy
engine or the system), with SLA outcome, auto-approvals, the sum of business-time turnaround
and a histogram of it (columns t00..tNN, one per TURNAROUND_EDGES bucket).

`dashboard_open`: the open backlog per tenant, kind, subtype, tenant-local day of arrival and
assignee (0 = unassigned), with the money at risk in it (in cents, exact on both databases).

`queue_open_counts`: the open items per tenant, kind, assignee (0 = unassigned) and named team
queue ('' = none): what the queue side-bar counts read, a few rows per person and queue, instead
of a pass over the open items.

`dashboard_steps`: per tenant, tenant-local day of decision and step type (how the step was
routed: one approver, the item's owner, a group's all/any/M of N, escalated), the approval steps
decided that day, the sum of business time from each step's opening to its decision, and a
histogram of it: the dashboard's turnaround per step type.

`dashboard_open_due`: the open backlog per tenant, kind and due slot (the SLA due time floored
to DUE_SLOT_MINUTES, UTC): what the breach forecast reads, a range of future slots, instead of
the items' due times.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Column, Date, ForeignKey, Integer, String, Table

from app.extensions import db
from app.types import UTCDateTime

# Upper edges, in business hours, of the turnaround histogram buckets; one more bucket holds
# everything longer. Median and p90 are reported as the bucket they fall in: exact quantiles
# would need every turnaround of the range, which is what the rollups exist to avoid.
TURNAROUND_EDGES = (0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80,
                    120, 160, 240)
BUCKETS = [f"t{i:02d}" for i in range(len(TURNAROUND_EDGES) + 1)]
DAILY_SUMS = ("created", "resolved", "met", "breached", "auto_approved", "turnaround_seconds",
              *BUCKETS)
STEP_SUMS = ("decided", "turnaround_seconds", *BUCKETS)
OPEN_SUMS = ("items", "at_risk_cents", "delta_cents")
DUE_SUMS = ("items",)
# The resolution of due times in the forecast: fine enough for a 24-hour outlook, coarse enough
# that the future slots of a tenant are a few hundred rows however many items there are.
DUE_SLOT_MINUTES = 15


def due_slot(due: datetime) -> datetime:
    """The start of the DUE_SLOT_MINUTES slot (UTC) that holds `due`."""
    due = due.astimezone(UTC)
    return due.replace(minute=due.minute - due.minute % DUE_SLOT_MINUTES, second=0,
                       microsecond=0)


DUE_SLOT = timedelta(minutes=DUE_SLOT_MINUTES)

daily_rollups = Table(
    "dashboard_daily",
    db.metadata,
    Column("tenant_id", ForeignKey("tenants.id"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("subtype", String(64), primary_key=True),
    # Not a foreign key: 0 stands for "no person" (creation rows, policy and system decisions).
    Column("user_id", Integer, primary_key=True),
    Column("created", Integer, nullable=False, default=0),
    Column("resolved", Integer, nullable=False, default=0),
    Column("met", Integer, nullable=False, default=0),
    Column("breached", Integer, nullable=False, default=0),
    Column("auto_approved", Integer, nullable=False, default=0),
    Column("turnaround_seconds", BigInteger, nullable=False, default=0),
    *[Column(name, Integer, nullable=False, default=0) for name in BUCKETS],
)

step_rollups = Table(
    "dashboard_steps",
    db.metadata,
    Column("tenant_id", ForeignKey("tenants.id"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("step_type", String(16), primary_key=True),
    Column("decided", Integer, nullable=False, default=0),
    Column("turnaround_seconds", BigInteger, nullable=False, default=0),
    *[Column(name, Integer, nullable=False, default=0) for name in BUCKETS],
)

open_rollups = Table(
    "dashboard_open",
    db.metadata,
    Column("tenant_id", ForeignKey("tenants.id"), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("subtype", String(64), primary_key=True),
    Column("created_day", Date, primary_key=True),
    Column("assignee_id", Integer, primary_key=True),  # 0 = unassigned
    Column("items", Integer, nullable=False, default=0),
    Column("at_risk_cents", BigInteger, nullable=False, default=0),
    Column("delta_cents", BigInteger, nullable=False, default=0),
)

queue_count_rollups = Table(
    "queue_open_counts",
    db.metadata,
    Column("tenant_id", ForeignKey("tenants.id"), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("assignee_id", Integer, primary_key=True),  # 0 = unassigned
    Column("team_queue", String(100), primary_key=True),  # '' = in no named team queue
    Column("items", Integer, nullable=False, default=0),
)

open_due_rollups = Table(
    "dashboard_open_due",
    db.metadata,
    Column("tenant_id", ForeignKey("tenants.id"), primary_key=True),
    # Slot before kind: the forecast reads a tenant's range of future slots.
    Column("due_slot", UTCDateTime, primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("items", Integer, nullable=False, default=0),
)
