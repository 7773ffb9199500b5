"""Breach forecast per queue (tenant x kind) for the next 24 business hours.

The model, in the tenant's business time: the team works at its recent throughput (items
decided per business hour over the last week), overdue items first, then the rest in order of
due time. An item breaches if the work ahead of it, itself included, is not done by its due
time. New arrivals add to the backlog at the recent arrival rate. An item waiting on someone
outside counts at its current due time (it gets more time only once it resumes): the forecast
errs towards warning, and it reads only the open items' due-time index (an index-only scan).

Throughput and arrivals come from the daily rollups; the backlog from the open rollup; only the
due times of the items due within the window are read from the items (a range of the partial
index on open items' due times).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from app.dashboard.services import KIND_LABELS, RATE_WINDOW_DAYS, Dashboard, Scope
from app.extensions import db
from app.models import WorkItem
from app.sla.calendar import calendar_for
from app.types import utcnow
from app.work.services import open_items

HORIZON_HOURS = 24


@dataclass
class QueueForecast:
    tenant_id: int
    kind: str
    label: str
    open: int
    overdue: int
    due_by_hour: list[int]  # cumulative: items due within 1, 2, ... 24 business hours
    arrival_rate: float  # items per business hour
    throughput: float  # items decided per business hour
    new_breaches: int = 0
    backlog_after: int = 0
    shortfall_hours: float = 0.0
    drill_due: dict = field(default_factory=dict)

    @property
    def due_soon(self) -> int:
        return self.due_by_hour[-1] if self.due_by_hour else 0

    @property
    def shortfall_label(self) -> str:
        return "no throughput" if math.isinf(self.shortfall_hours) else f"{self.shortfall_hours:.1f}"

    @property
    def at_risk(self) -> bool:
        return self.new_breaches > 0


def predict(overdue: int, due_by_hour: list[int], throughput: float) -> tuple[int, float]:
    """(new breaches, extra business hours needed) under earliest-due-first at `throughput`.
    The k-th item due in hour j is done at (overdue + k) / throughput; it breaches if that is
    later than j."""
    total_due = due_by_hour[-1] if due_by_hour else 0
    if throughput <= 0:
        return total_due, float("inf") if overdue + total_due else 0.0
    breaches = 0
    previous = 0
    for hour, cumulative in enumerate(due_by_hour, start=1):
        in_time = max(0, math.floor(throughput * hour) - overdue)  # items done by `hour`
        breaches += max(0, cumulative - max(previous, in_time))
        previous = cumulative
    shortfall = max(0.0, (overdue + total_due) / throughput - len(due_by_hour))
    return breaches, shortfall


def forecast_for(scope: Scope, dash: Dashboard, now: datetime | None = None
                 ) -> list[QueueForecast]:
    """The forecast of each queue in the scope; backlog and rates from `dash` (the rollups),
    due times from the open items due within the window."""
    now = now or utcnow()
    tenants = {t.id: t for t in scope.tenants}
    many = len(tenants) > 1
    out = []
    for tenant_id, tenant in tenants.items():
        calendar = calendar_for(tenant)
        first = dash.todays[tenant_id] - timedelta(days=RATE_WINDOW_DAYS)
        window_start = datetime.combine(first, time(0), ZoneInfo(tenant.timezone))
        hours = calendar.between(window_start, now).total_seconds() / 3600
        bounds = [calendar.add(now, timedelta(hours=h)) for h in range(1, HORIZON_HOURS + 1)]
        # Open items not yet due (an index-only count on the open items' due-time index)...
        not_yet_due = dict(db.session.execute(
            select(WorkItem.kind, func.count())
            .where(WorkItem.tenant_id == tenant_id, open_items(), WorkItem.sla_due_at >= now)
            .group_by(WorkItem.kind)).all())
        # ...and of those due within the window, how many by the end of each business hour
        # (counted in the database: at a million items thousands can be due in a day).
        window = dict((row[0], row[1:]) for row in db.session.execute(
            select(WorkItem.kind,
                   *[func.count().filter(WorkItem.sla_due_at <= bound) for bound in bounds])
            .where(WorkItem.tenant_id == tenant_id, open_items(),
                   WorkItem.sla_due_at >= now, WorkItem.sla_due_at <= bounds[-1])
            .group_by(WorkItem.kind)))
        for kind, kind_label in KIND_LABELS.items():
            open_now = dash.open_counts.get((tenant_id, kind), 0)
            cumulative = [int(c) for c in window.get(kind, (0,) * HORIZON_HOURS)]
            created, resolved = dash.recent.get((tenant_id, kind), (0, 0))
            f = QueueForecast(
                tenant_id=tenant_id, kind=kind,
                label=(f"{tenant.display_name} · " if many else "") + kind_label,
                open=open_now, overdue=max(0, open_now - not_yet_due.get(kind, 0)),
                due_by_hour=cumulative,
                arrival_rate=created / hours if hours else 0.0,
                throughput=resolved / hours if hours else 0.0,
                drill_due={"tenant": tenant_id, "kind": kind, "sort": "sla"},
            )
            f.new_breaches, f.shortfall_hours = predict(f.overdue, f.due_by_hour, f.throughput)
            f.backlog_after = max(0, round(open_now + (f.arrival_rate - f.throughput)
                                           * HORIZON_HOURS))
            out.append(f)
    out.sort(key=lambda f: (-f.new_breaches, -f.due_soon, f.label))
    return out
