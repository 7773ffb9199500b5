"""SLA targets and states in business time. The tenant's policy in force sets the targets per
kind and priority; where it names none, these defaults apply."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import Kind, Priority, SlaState
from app.work.calendar import calendar_for

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


_CACHE_KEY = "cleardesk_policy_sla_targets"


def policy_targets(tenant) -> dict:
    """The SLA targets ({kind: {priority: hours}}) of the tenant's policy in force, read once
    per transaction."""
    from sqlalchemy.orm import object_session

    # Imported here: the policy package (its SLA targets) builds on work.
    from app.policy.models import PolicyVersion

    if tenant.id is None:  # not saved yet: no policy can name it
        return {}
    session = object_session(tenant) or db.session()
    cache = session.info.setdefault(_CACHE_KEY, {})
    if tenant.id not in cache:
        policy = PolicyVersion.in_force(tenant.id)
        cache[tenant.id] = dict(policy.sla_targets or {}) if policy is not None else {}
    return cache[tenant.id]


@event.listens_for(Session, "after_transaction_end")
def _forget_targets(session, transaction):
    session.info.pop(_CACHE_KEY, None)


def sla_target(kind: str, priority: str, tenant=None) -> timedelta:
    """Business time to resolve: the tenant policy's target if it sets one, else the default."""
    if tenant is not None:
        hours = (policy_targets(tenant).get(kind) or {}).get(priority)
        if hours not in (None, ""):
            return timedelta(hours=float(hours))
    return DEFAULT_TARGETS[kind] * PRIORITY_FACTOR.get(priority, 1.0)


def sla_due_at(tenant, kind: str, priority: str, start: datetime) -> datetime:
    """When an item arriving at `start` is due, in the tenant's business time."""
    return calendar_for(tenant).add(start, sla_target(kind, priority, tenant))


def sla_state_at(tenant, kind: str, priority: str, due: datetime, now: datetime) -> str:
    """On track, at risk (most of the target used) or breached, for an open item at `now`."""
    if now >= due:
        return SlaState.BREACHED.value
    left = calendar_for(tenant).between(now, due)
    if left <= sla_target(kind, priority, tenant) * (1 - AT_RISK_SHARE):
        return SlaState.AT_RISK.value
    return SlaState.ON_TRACK.value
