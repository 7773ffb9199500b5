"""Breach forecast per queue (tenant x kind) for the next 24 business hours.

The model, in the tenant's business time: the team works at its recent throughput (items
decided per business hour over the last week), overdue items first, then the rest in order of
due time. An item breaches if the work ahead of it, itself included, is not done by its due
time. New work arrives at the recent arrival rate, each arrival due its kind's SLA target (at
normal priority) after it arrives: the arrivals due within the window join the line, so a queue
that will breach because of the work coming in shows up before it does.

Due times are read at the resolution of the due-slot rollup (DUE_SLOT_MINUTES): an item counts
as due at the start of its slot, so the forecast errs towards warning. An item waiting on
someone outside counts at its current due time (it gets more time only once it resumes).
Throughput and arrivals come from the daily rollups, the backlog from the open rollup, the due
times from the future slots of the due-slot rollup: no read of the items, and a cost that does
not grow with their number.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, cast, func, select

from app.dashboard.services import KIND_LABELS, RATE_WINDOW_DAYS, Dashboard, Scope
from app.extensions import db
from app.models import Priority
from app.types import utcnow
from app.work.calendar import calendar_for
from app.work.rollup_tables import open_due_rollups
from app.work.sla_clock import sla_target

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
    target_hours: float = 0.0  # SLA target of an arrival (normal priority), business hours
    # Cumulative: arrivals expected to be due within 1, 2, ... 24 business hours.
    arrivals_due_by_hour: list[int] = field(default_factory=list)
    new_breaches: int = 0
    breaches_from_backlog: int = 0  # what the backlog alone would breach
    backlog_after: int = 0
    shortfall_hours: float = 0.0
    drill_due: dict = field(default_factory=dict)

    @property
    def due_soon(self) -> int:
        return self.due_by_hour[-1] if self.due_by_hour else 0

    @property
    def expected_arrivals(self) -> int:
        """Arrivals expected in the next 24 business hours."""
        return expected(self.arrival_rate * HORIZON_HOURS)

    @property
    def arrivals_due(self) -> int:
        """Of those, how many are due within the window."""
        return self.arrivals_due_by_hour[-1] if self.arrivals_due_by_hour else 0

    @property
    def breaches_from_arrivals(self) -> int:
        """The breaches the forecast adds because of the work arriving."""
        return self.new_breaches - self.breaches_from_backlog

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


def expected(value: float) -> int:
    """A whole number of items: an expectation rounded half up."""
    return math.floor(value + 0.5)


def arrivals_due(arrival_rate: float, target_hours: float) -> list[int]:
    """Cumulative arrivals due within 1, 2, ... HORIZON_HOURS business hours: work arriving at
    `arrival_rate` per business hour, each due `target_hours` after it arrives, so by hour j
    the arrivals of the first j - target hours are due."""
    return [expected(arrival_rate * max(0.0, hour - target_hours))
            for hour in range(1, HORIZON_HOURS + 1)]


def forecast_for(scope: Scope, dash: Dashboard, now: datetime | None = None
                 ) -> list[QueueForecast]:
    """The forecast of each queue in the scope; backlog and rates from `dash` (the rollups),
    due times from the future slots of the due-slot rollup (one query for all tenants)."""
    now = now or utcnow()
    tenants = {t.id: t for t in scope.tenants}
    many = len(tenants) > 1
    d = open_due_rollups.c
    # Each tenant's future due slots, per kind: a few hundred rows (the SLA targets bound how
    # far ahead anything is due), however long the history or large the backlog.
    slots: dict = defaultdict(list)
    for tenant_id, kind, slot, items in db.session.execute(
            select(d.tenant_id, d.kind, d.due_slot, cast(func.sum(d["items"]), BigInteger))
            .where(d.tenant_id.in_(tenants), d.due_slot > now)
            .group_by(d.tenant_id, d.kind, d.due_slot)
            .order_by(d.tenant_id, d.kind, d.due_slot)):
        slots[(tenant_id, kind)].append((slot, items))
    out = []
    for tenant_id, tenant in tenants.items():
        calendar = calendar_for(tenant)
        first = dash.todays[tenant_id] - timedelta(days=RATE_WINDOW_DAYS)
        window_start = datetime.combine(first, time(0), ZoneInfo(tenant.timezone))
        hours = calendar.between(window_start, now).total_seconds() / 3600
        bounds = calendar.hour_marks(now, HORIZON_HOURS)
        for kind, kind_label in KIND_LABELS.items():
            open_now = dash.open_counts.get((tenant_id, kind), 0)
            mine = slots.get((tenant_id, kind), [])
            times = [slot for slot, _ in mine]
            running, total = [], 0
            for _, items in mine:
                total += items
                running.append(total)
            # Items due (by slot) after now and by the end of each business hour.
            cumulative = [running[k - 1] if (k := bisect_right(times, bound)) else 0
                          for bound in bounds]
            created, resolved = dash.recent.get((tenant_id, kind), (0, 0))
            target = sla_target(kind, Priority.NORMAL.value, tenant).total_seconds() / 3600
            f = QueueForecast(
                tenant_id=tenant_id, kind=kind,
                label=(f"{tenant.display_name} · " if many else "") + kind_label,
                open=open_now, overdue=max(0, open_now - total),
                due_by_hour=cumulative,
                arrival_rate=created / hours if hours else 0.0,
                throughput=resolved / hours if hours else 0.0,
                target_hours=target,
                drill_due={"tenant": tenant_id, "kind": kind, "sort": "sla"},
            )
            f.arrivals_due_by_hour = arrivals_due(f.arrival_rate, target)
            f.breaches_from_backlog, _ = predict(f.overdue, f.due_by_hour, f.throughput)
            f.new_breaches, f.shortfall_hours = predict(
                f.overdue, [a + b for a, b in zip(f.due_by_hour, f.arrivals_due_by_hour)],
                f.throughput)
            f.backlog_after = max(0, round(open_now + (f.arrival_rate - f.throughput)
                                           * HORIZON_HOURS))
            out.append(f)
    out.sort(key=lambda f: (-f.new_breaches, -f.due_soon, f.label))
    return out
