"""SLA targets and states in business time. Until tenant policies carry their own targets,
these defaults apply per kind and priority."""
from __future__ import annotations

from datetime import datetime, timedelta

from app.models import Kind, Priority, SlaState
from app.sla.calendar import calendar_for

# Business hours to resolve, per kind, at normal priority.
DEFAULT_TARGETS = {
    Kind.APPROVAL.value: timedelta(hours=8),
    Kind.BILLING_EXCEPTION.value: timedelta(hours=16),
    Kind.SETTLEMENT_DISPUTE.value: timedelta(hours=24),
}
PRIORITY_FACTOR = {
    Priority.URGENT.value: 0.25,
    Priority.HIGH.value: 0.5,
    Priority.NORMAL.value: 1.0,
    Priority.LOW.value: 2.0,
}
# An item is at risk once this share of its target is used.
AT_RISK_SHARE = 0.75


def sla_target(kind: str, priority: str) -> timedelta:
    return DEFAULT_TARGETS[kind] * PRIORITY_FACTOR.get(priority, 1.0)


def sla_due_at(tenant, kind: str, priority: str, start: datetime) -> datetime:
    """When an item arriving at `start` is due, in the tenant's business time."""
    return calendar_for(tenant).add(start, sla_target(kind, priority))


def sla_state_at(tenant, kind: str, priority: str, due: datetime, now: datetime) -> str:
    """On track, at risk (most of the target used) or breached, for an open item at `now`."""
    if now >= due:
        return SlaState.BREACHED.value
    left = calendar_for(tenant).between(now, due)
    if left <= sla_target(kind, priority) * (1 - AT_RISK_SHARE):
        return SlaState.AT_RISK.value
    return SlaState.ON_TRACK.value


def resume_sla_clock(item, now: datetime) -> None:
    """The item stops waiting on someone outside: its due time moves by exactly the business
    time it waited."""
    if item.sla_due_at is not None and item.sla_paused_at is not None:
        calendar = calendar_for(item.tenant)
        waited = calendar.between(item.sla_paused_at, now)
        item.sla_due_at = calendar.add(item.sla_due_at, waited)
    item.sla_paused_at = None
