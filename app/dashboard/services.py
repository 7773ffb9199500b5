"""The manager dashboard's figures, read from the rollups (history) and the open backlog rollup:
a few grouped queries whose cost depends on days and groups, not on the number of items.

Days are each tenant's local days. Money is kept per tenant, in its own currency: leakage of
tenants with different currencies is never added up.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, cast, func, literal_column, select

from app import params
from app.actors import Actor
from app.errors import PermissionDenied
from app.extensions import db
from app.models import Kind, Role, Tenant, User
from app.types import utcnow
from app.work.kinds import SUBTYPES
from app.work.rollup_tables import (
    BUCKETS,
    TURNAROUND_EDGES,
    daily_rollups,
    open_rollups,
    step_rollups,
)
from app.work.rollups import STEP_TYPES

MAX_DAYS = 366
PRESETS = (7, 30, 90)
DEFAULT_DAYS = 30
# Backlog ageing buckets, in days since arrival (tenant-local days): (label, from, to or None).
AGEING = (("0–1 days", 0, 1), ("2–3 days", 2, 3), ("4–7 days", 4, 7), ("8–14 days", 8, 14),
          ("15–30 days", 15, 30), ("over 30 days", 31, None))
KIND_LABELS = {k.value: k.label for k in Kind}
EXCEPTION, DISPUTE = Kind.BILLING_EXCEPTION.value, Kind.SETTLEMENT_DISPUTE.value
# Arrivals and throughput for the forecast: the last week.
RATE_WINDOW_DAYS = 7
NOBODY = 0  # the rollups' "no person": the policy engine or the system decided


def managed_tenants(actor: Actor) -> list[Tenant]:
    """The tenants where the actor is a manager; the dashboard shows only these."""
    if actor.user is None:
        return []
    # The memberships, with their tenants, were loaded with the signed-in user.
    return sorted((m.tenant for m in actor.user.memberships
                   if Role.MANAGER.value in m.role_set), key=lambda t: (t.name, t.id))


@dataclass
class Scope:
    """Which tenants and which days: parsed from the query string, never trusted."""

    tenants: list[Tenant]
    managed: list[Tenant]
    tenant: Tenant | None  # the one chosen, or None for all of the manager's tenants
    start: date
    end: date
    days: int | None  # the preset chosen, if any
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def tenant_ids(self) -> list[int]:
        return [t.id for t in self.tenants]

    def query_args(self, **extra) -> dict:
        args = {"tenant": self.tenant.id if self.tenant else "all"}
        if self.days:
            args["days"] = self.days
        else:
            args.update({"from": self.start.isoformat(), "to": self.end.isoformat()})
        args.update(extra)
        return args


def today_in(tenant: Tenant, now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(ZoneInfo(tenant.timezone)).date()


def parse_scope(actor: Actor, args, default_tenant_id: int | None = None,
                now: datetime | None = None) -> Scope:
    """Tenant (one of the manager's, or all of them) and a date range (a preset number of days
    up to today, or from/to). Nonsense is dropped with a message, never an error page; a
    tenant the viewer does not manage is refused without saying whether it exists."""
    managed = managed_tenants(actor)
    if not managed:
        raise PermissionDenied("The dashboard is for managers.")
    errors: dict[str, str] = {}
    by_id = {t.id: t for t in managed}
    raw_tenant = (args.get("tenant") or "").strip()
    tenant = None
    if raw_tenant and raw_tenant != "all":
        tenant = by_id.get(params.gathered(errors, params.record_id, raw_tenant, "tenant"))
        if tenant is None:
            errors["tenant"] = "not one of the tenants you manage"
    elif not raw_tenant and default_tenant_id in by_id:
        tenant = by_id[default_tenant_id]
    tenants = [tenant] if tenant else managed
    today = max(today_in(t, now) for t in tenants)
    days: int | None = None
    start = end = None
    raw_from, raw_to = (args.get("from") or "").strip(), (args.get("to") or "").strip()
    if raw_from or raw_to:
        start = params.gathered(errors, params.day, raw_from, "from")
        end = params.gathered(errors, params.day, raw_to, "to") if raw_to else today
        if start and end and start > end:
            errors["to"] = "must not be before the start"
            start = end = None
        elif start and end and (end - start).days >= MAX_DAYS:
            errors["from"] = f"at most {MAX_DAYS} days at a time"
            start = end = None
    if start is None or end is None:
        raw_days = (args.get("days") or "").strip()
        days = params.gathered(errors, params.whole_number, raw_days, "days") or DEFAULT_DAYS
        if days not in PRESETS:
            errors["days"] = "choose 7, 30 or 90 days"
            days = DEFAULT_DAYS
        end = today
        start = end - timedelta(days=days - 1)
    return Scope(tenants=tenants, managed=managed, tenant=tenant, start=start, end=end,
                 days=days, errors=errors)


# ---------------------------------------------------------------------------------------------
# Turnaround quantiles from the histogram.


def bucket_label(index: int) -> str:
    def hours(h: float) -> str:
        return f"{h:g} h"

    if index == 0:
        return f"≤ {hours(TURNAROUND_EDGES[0])}"
    if index >= len(TURNAROUND_EDGES):
        return f"> {hours(TURNAROUND_EDGES[-1])}"
    return f"{TURNAROUND_EDGES[index - 1]:g}–{hours(TURNAROUND_EDGES[index])}"


def within_label(index: int | None) -> str:
    """The upper edge of a turnaround bucket, in business hours ("4", "more than 240")."""
    if index is None:
        return "—"
    if index >= len(TURNAROUND_EDGES):
        return f"more than {TURNAROUND_EDGES[-1]:g}"
    return f"{TURNAROUND_EDGES[index]:g}"


def quantile_bucket(histogram: list[int], q: float) -> int | None:
    """The bucket holding the nearest-rank q-quantile (rank ceil(q·n))."""
    n = sum(histogram)
    if not n:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return index
    return len(histogram) - 1  # pragma: no cover


@dataclass
class Turnaround:
    label: str
    drill: dict
    resolved: int
    seconds: int
    histogram: list[int]

    @property
    def mean_hours(self) -> float | None:
        return self.seconds / 3600 / self.resolved if self.resolved else None

    @property
    def median(self) -> int | None:
        return quantile_bucket(self.histogram, 0.5)

    @property
    def p90(self) -> int | None:
        return quantile_bucket(self.histogram, 0.9)

    @property
    def median_label(self) -> str:
        return bucket_label(self.median) if self.median is not None else "—"

    @property
    def p90_label(self) -> str:
        return bucket_label(self.p90) if self.p90 is not None else "—"

    @property
    def median_within(self) -> str:
        """Plain words: half of the items were decided within this many business hours."""
        return within_label(self.median)

    @property
    def p90_within(self) -> str:
        """Nine in ten were decided within this many business hours."""
        return within_label(self.p90)

    @property
    def median_hours(self) -> float:
        """The median bucket's upper edge (what the chart draws)."""
        return _edge(self.median)

    @property
    def p90_hours(self) -> float:
        return _edge(self.p90)


def _edge(index: int | None) -> float:
    if index is None:
        return 0.0
    if index >= len(TURNAROUND_EDGES):
        return TURNAROUND_EDGES[-1] * 1.5
    return float(TURNAROUND_EDGES[index])


# ---------------------------------------------------------------------------------------------
# The figures.


@dataclass
class Dashboard:
    scope: Scope
    attainment: list[dict]
    turnaround: dict[str, list[Turnaround]]
    daily: list[dict]
    ageing: list[dict]
    auto_approval: dict
    exceptions: list[dict]
    leakage: list[dict]
    workload: list[dict]
    # For the forecast: open items per (tenant, kind); created and decided per (tenant, kind)
    # over the last RATE_WINDOW_DAYS days; each tenant's today.
    open_counts: dict = field(default_factory=dict)
    recent: dict = field(default_factory=dict)
    todays: dict = field(default_factory=dict)
    forecast: list = field(default_factory=list)

    @property
    def attainment_total(self) -> dict:
        return self.attainment[-1] if self.attainment else {}


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _days(first: date, last: date, day=daily_rollups.c.day):
    """A rollup's day within [first, last], the dates written into the SQL: with parameters the
    planner's generic plan guesses the range holds a handful of rows and sorts instead of
    hashing (four times slower). The dates are date objects, so their ISO text is safe."""
    typed = "DATE " if db.session.get_bind().dialect.name == "postgresql" else ""
    return day.between(literal_column(f"{typed}'{first.isoformat()}'"),
                       literal_column(f"{typed}'{last.isoformat()}'"))


def _total(column):
    """SUM as a BIGINT: plain ints from the driver, not Decimals."""
    return cast(func.sum(column), BigInteger)


# The dashboard's three statements without their tenants and days, built once: building their
# forty-odd SUM expressions anew took about a millisecond a request.
_t = daily_rollups.c
_GROUPED = (select(_t.tenant_id, _t.kind, _t.subtype, _t.user_id,
                   _total(_t.created), _total(_t.resolved), _total(_t.met), _total(_t.breached),
                   _total(_t.auto_approved), _total(_t.turnaround_seconds),
                   *[_total(_t[name]) for name in BUCKETS])
            .group_by(_t.tenant_id, _t.kind, _t.subtype, _t.user_id))
_PER_DAY = (select(_t.tenant_id, _t.day, _t.kind, _total(_t.created), _total(_t.resolved))
            .group_by(_t.tenant_id, _t.day, _t.kind))
_s = step_rollups.c
_STEPS = (select(_s.step_type, _total(_s.decided), _total(_s.turnaround_seconds),
                 *[_total(_s[name]) for name in BUCKETS])
          .group_by(_s.step_type))
_o = open_rollups.c
_BACKLOG = (select(_o.tenant_id, _o.kind, _o.created_day, _o.assignee_id, _total(_o["items"]),
                   _total(_o.at_risk_cents), _total(_o.delta_cents))
            .where(_o["items"] > 0)
            .group_by(_o.tenant_id, _o.kind, _o.created_day, _o.assignee_id))


@dataclass
class _Facts:
    """What the figures are computed from: the dashboard's three reads of the rollups, and the
    drill-down arguments every figure shares."""

    scope: Scope
    tenants: dict[int, Tenant]
    todays: dict[int, date]
    rows: list[dict]  # summed over the range per tenant, kind, subtype and person
    per_day: dict  # day -> [created, resolved]
    recent: dict  # (tenant, kind) -> [created, resolved] over the last RATE_WINDOW_DAYS days
    backlog: list  # open items per tenant, kind, day of arrival and assignee
    people: dict[int, str]
    resolved_args: dict
    created_args: dict
    tenant_arg: dict


def dashboard_for(scope: Scope, now: datetime | None = None) -> Dashboard:
    facts = _read(scope, now)
    turnaround = _turnaround(facts)
    turnaround["step"] = step_turnaround(facts)
    return Dashboard(scope=scope, attainment=_attainment(facts), turnaround=turnaround,
                     daily=_daily(facts), ageing=_ageing(facts),
                     auto_approval=_auto_approval(facts), exceptions=_exception_volume(facts),
                     leakage=_leakage(facts), workload=_workload(facts),
                     open_counts=_open_counts(facts),
                     recent={k: tuple(v) for k, v in facts.recent.items()}, todays=facts.todays)


def _read(scope: Scope, now: datetime | None) -> _Facts:
    tenants = {t.id: t for t in scope.tenants}
    t = daily_rollups.c
    # 1. Everything but the per-day series, summed over the range per tenant, kind, subtype
    #    and person: at most a few hundred rows, whatever the number of items.
    grouped = db.session.execute(
        _GROUPED.where(t.tenant_id.in_(tenants), _days(scope.start, scope.end))).all()
    # 2. Created and resolved per tenant, day and kind: the per-day series, and the last
    #    week's arrivals and throughput for the forecast.
    todays = {tid: today_in(tenant, now) for tid, tenant in tenants.items()}
    recent_from = min(todays.values()) - timedelta(days=RATE_WINDOW_DAYS)
    per_day: dict = defaultdict(lambda: [0, 0])
    recent: dict = defaultdict(lambda: [0, 0])
    for tid, day, kind, created, resolved in db.session.execute(
            _PER_DAY.where(t.tenant_id.in_(tenants),
                           _days(min(scope.start, recent_from),
                                 max(scope.end, *todays.values())))):
        if scope.start <= day <= scope.end:
            per_day[day][0] += created
            per_day[day][1] += resolved
        if day >= todays[tid] - timedelta(days=RATE_WINDOW_DAYS):
            recent[(tid, kind)][0] += created
            recent[(tid, kind)][1] += resolved
    # 3. The open backlog, per tenant, kind, day of arrival and assignee.
    backlog = db.session.execute(
        _BACKLOG.where(open_rollups.c.tenant_id.in_(tenants))).all()

    rows = [dict(tenant_id=r[0], kind=r[1], subtype=r[2], user_id=r[3], created=r[4] or 0,
                 resolved=r[5] or 0, met=r[6] or 0, breached=r[7] or 0, auto=r[8] or 0,
                 seconds=r[9] or 0, histogram=[v or 0 for v in r[10:]]) for r in grouped]
    person_ids = ({r["user_id"] for r in rows} | {r[3] for r in backlog}) - {NOBODY}
    people = dict(db.session.execute(
        select(User.id, User.name).where(User.id.in_(person_ids))).all()) if person_ids else {}
    return _Facts(
        scope=scope, tenants=tenants, todays=todays, rows=rows, per_day=per_day, recent=recent,
        backlog=backlog, people=people,
        resolved_args={"status": "closed", "resolved_from": scope.start.isoformat(),
                       "resolved_to": scope.end.isoformat()},
        created_args={"status": "all", "created_from": scope.start.isoformat(),
                      "created_to": scope.end.isoformat()},
        tenant_arg={"tenant": scope.tenant.id} if scope.tenant else {})


def _attainment(f: _Facts) -> list[dict]:
    """SLA attainment per kind, and in total (the last entry)."""
    resolved_args, tenant_arg = f.resolved_args, f.tenant_arg
    attainment = []
    for kind in KIND_LABELS:
        mine = [r for r in f.rows if r["kind"] == kind]
        resolved = sum(r["resolved"] for r in mine)
        met = sum(r["met"] for r in mine)
        breached = sum(r["breached"] for r in mine)
        attainment.append({"key": kind, "label": KIND_LABELS[kind], "resolved": resolved,
                           "met": met, "breached": breached, "rate": _rate(met, met + breached),
                           "drill_met": {**resolved_args, **tenant_arg, "kind": kind, "sla": "met"},
                           "drill_breached": {**resolved_args, **tenant_arg, "kind": kind,
                                              "sla": "breached"}})
    total = {k: sum(a[k] for a in attainment) for k in ("resolved", "met", "breached")}
    attainment.append({"key": "all", "label": "All work", **total,
                       "rate": _rate(total["met"], total["met"] + total["breached"]),
                       "drill_met": {**resolved_args, **tenant_arg, "sla": "met"},
                       "drill_breached": {**resolved_args, **tenant_arg, "sla": "breached"}})
    return attainment


def _person(f: _Facts, user_id: int) -> str:
    return f.people.get(user_id, f"#{user_id}") if user_id else "Policy or system (no person)"


def _turnaround(f: _Facts) -> dict[str, list[Turnaround]]:
    """Turnaround by kind, subtype, queue (tenant and kind) and approver."""
    tenant_arg, many = f.tenant_arg, len(f.tenants) > 1

    def group(key_of, label_of, drill_of) -> list[Turnaround]:
        acc: dict = {}
        for r in f.rows:
            if not r["resolved"]:
                continue
            key = key_of(r)
            entry = acc.get(key)
            if entry is None:
                entry = acc[key] = Turnaround(label_of(r), {**f.resolved_args, **drill_of(r)},
                                              0, 0, [0] * len(BUCKETS))
            entry.resolved += r["resolved"]
            entry.seconds += r["seconds"]
            entry.histogram = [a + b for a, b in zip(entry.histogram, r["histogram"])]
        return sorted(acc.values(), key=lambda e: (-e.resolved, e.label))

    return {
        "kind": group(lambda r: r["kind"], lambda r: KIND_LABELS[r["kind"]],
                      lambda r: {**tenant_arg, "kind": r["kind"]}),
        "subtype": group(lambda r: (r["kind"], r["subtype"]),
                         lambda r: SUBTYPES[r["kind"]].get(r["subtype"], r["subtype"]),
                         lambda r: {**tenant_arg, "kind": r["kind"], "subtype": r["subtype"]}),
        "queue": group(lambda r: (r["tenant_id"], r["kind"]),
                       lambda r: (f"{f.tenants[r['tenant_id']].display_name} · " if many else "")
                       + KIND_LABELS[r["kind"]],
                       lambda r: {"tenant": r["tenant_id"], "kind": r["kind"]}),
        "approver": group(lambda r: r["user_id"], lambda r: _person(f, r["user_id"]),
                          lambda r: {**tenant_arg,
                                     "decided_by": r["user_id"] if r["user_id"] else "none"}),
    }


def step_turnaround(f: _Facts) -> list[Turnaround]:
    """Business hours from a step's opening (the previous step's decision, or the item's
    arrival) to its decision, by step type, for the approval steps decided in the range: read
    from the step rollup, written when each step was decided (app.work.rollups)."""
    t = step_rollups.c
    rows = db.session.execute(_STEPS.where(t.tenant_id.in_(f.tenants),
                                           _days(f.scope.start, f.scope.end, t.day)))
    drill = {**f.resolved_args, **f.tenant_arg, "kind": Kind.APPROVAL.value}
    found = {key: Turnaround(STEP_TYPES[key], drill, decided or 0, seconds or 0,
                             [v or 0 for v in histogram])
             for key, decided, seconds, *histogram in rows if decided and key in STEP_TYPES}
    return [found[key] for key in STEP_TYPES if key in found]


def _daily(f: _Facts) -> list[dict]:
    """Created and resolved per day, every day of the range (empty days too)."""
    daily = []
    day = f.scope.start
    while day <= f.scope.end:
        created, resolved = f.per_day.get(day, (0, 0))
        daily.append({"day": day, "created": created, "resolved": resolved,
                      "drill_created": {**f.tenant_arg, "status": "all",
                                        "created_from": day.isoformat(),
                                        "created_to": day.isoformat()},
                      "drill_resolved": {**f.tenant_arg, "status": "closed",
                                         "resolved_from": day.isoformat(),
                                         "resolved_to": day.isoformat()}})
        day += timedelta(days=1)
    return daily


def _ageing(f: _Facts) -> list[dict]:
    """Backlog ageing (now, whatever the range): buckets by days since arrival, per kind."""
    ageing = [{"label": label, "low": low, "high": high, "total": 0,
               **{kind: 0 for kind in KIND_LABELS},
               "drill": {**f.tenant_arg, "aged": f"{low}-{'' if high is None else high}"}}
              for label, low, high in AGEING]
    by_age = {}
    for bucket in ageing:
        for age in range(bucket["low"], (bucket["high"] if bucket["high"] is not None
                                         else bucket["low"]) + 1):
            by_age[age] = bucket
    oldest = ageing[-1]
    for tid, kind, created_day, _assignee_id, count, _at_risk, _delta in f.backlog:
        age = (f.todays[tid] - created_day).days
        bucket = by_age.get(age) or (ageing[0] if age < 0 else oldest)
        bucket[kind] += count
        bucket["total"] += count
    return ageing


def _open_counts(f: _Facts) -> dict:
    """Open items per (tenant, kind), for the forecast."""
    open_counts: dict = defaultdict(int)
    for tid, kind, _day, _assignee_id, count, _at_risk, _delta in f.backlog:
        open_counts[(tid, kind)] += count
    return dict(open_counts)


def _auto_approval(f: _Facts) -> dict:
    """Approvals decided by the policy engine among all decided approvals."""
    approvals = [r for r in f.rows if r["kind"] == Kind.APPROVAL.value]
    decided = sum(r["resolved"] for r in approvals)
    auto = sum(r["auto"] for r in approvals)
    auto_approval = {"decided": decided, "auto_approved": auto, "rate": _rate(auto, decided),
                     "by_tenant": [], "drill": {**f.resolved_args, **f.tenant_arg,
                                                "kind": Kind.APPROVAL.value,
                                                "decided_by": "policy", "state": "approved"}}
    for tid, tenant in f.tenants.items():
        mine = [r for r in approvals if r["tenant_id"] == tid]
        d, a = sum(r["resolved"] for r in mine), sum(r["auto"] for r in mine)
        auto_approval["by_tenant"].append({"label": tenant.display_name, "decided": d,
                                           "auto_approved": a, "rate": _rate(a, d)})
    return auto_approval


def _exception_volume(f: _Facts) -> list[dict]:
    """Exception volume by type: billing exceptions and disputes that arrived in the range."""
    volume: dict = defaultdict(int)
    for r in f.rows:
        if r["kind"] != Kind.APPROVAL.value and r["created"]:
            volume[(r["kind"], r["subtype"])] += r["created"]
    return [{"kind": kind, "kind_label": KIND_LABELS[kind], "subtype": subtype,
             "label": SUBTYPES[kind].get(subtype, subtype), "created": count,
             "drill": {**f.created_args, **f.tenant_arg, "kind": kind, "subtype": subtype}}
            for (kind, subtype), count in sorted(volume.items(), key=lambda kv: -kv[1])]


def _leakage(f: _Facts) -> list[dict]:
    """Leakage now: money at risk in open billing exceptions plus open dispute deltas, per
    tenant in its own currency."""
    money: dict = defaultdict(lambda: [0, 0, 0, 0])  # at risk, open exceptions, delta, disputes
    for tid, kind, _day, _assignee_id, count, at_risk, delta in f.backlog:
        if kind == EXCEPTION:
            money[tid][0] += at_risk
            money[tid][1] += count
        elif kind == DISPUTE:
            money[tid][2] += delta
            money[tid][3] += count
    leakage = []
    for tid, tenant in f.tenants.items():
        at_risk_cents, exceptions_open, delta_cents, disputes_open = money[tid]
        at_risk, delta = Decimal(at_risk_cents) / 100, Decimal(delta_cents) / 100
        leakage.append({
            "tenant": tenant.display_name, "tenant_id": tid, "currency": tenant.currency,
            "at_risk": at_risk, "open_exceptions": exceptions_open,
            "dispute_delta": delta, "open_disputes": disputes_open, "total": at_risk + delta,
            "drill_exceptions": {"tenant": tid, "kind": EXCEPTION},
            "drill_disputes": {"tenant": tid, "kind": DISPUTE},
        })
    return leakage


def _workload(f: _Facts) -> list[dict]:
    """Workload (open items assigned now) and throughput (items decided in the range), per
    person, then the unassigned backlog and what no person decided."""
    resolved_args, tenant_arg = f.resolved_args, f.tenant_arg
    load: dict = defaultdict(int)
    for _tid, _kind, _day, assignee_id, count, _at_risk, _delta in f.backlog:
        load[assignee_id] += count
    done: dict = defaultdict(int)
    for r in f.rows:
        done[r["user_id"]] += r["resolved"]
    span = (f.scope.end - f.scope.start).days + 1
    workload = []
    for user_id in sorted((set(load) | {u for u, n in done.items() if n}) - {NOBODY}):
        workload.append({
            "user_id": user_id, "label": f.people.get(user_id, f"#{user_id}"),
            "open": load.get(user_id, 0), "decided": done.get(user_id, 0),
            "per_day": done.get(user_id, 0) / span,
            "drill_open": {**tenant_arg, "assignee": user_id},
            "drill_decided": {**resolved_args, **tenant_arg, "decided_by": user_id},
        })
    workload.sort(key=lambda w: (-w["open"] - w["decided"], w["label"]))
    if load.get(NOBODY):
        workload.append({"user_id": None, "label": "Unassigned", "open": load[NOBODY],
                         "decided": None, "per_day": None,
                         "drill_open": {**tenant_arg, "assignee": "none"}, "drill_decided": None})
    if done.get(NOBODY):
        workload.append({"user_id": None, "label": "Policy or system (no person)", "open": None,
                         "decided": done[NOBODY], "per_day": done[NOBODY] / span,
                         "drill_open": None,
                         "drill_decided": {**resolved_args, **tenant_arg, "decided_by": "none"}})
    return workload
