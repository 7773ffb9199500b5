"""Every dashboard figure equals a plain recomputation from the seeded items (written here
without the rollups), for one tenant and for all of a manager's tenants."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.actors import Actor
from app.dashboard.forecast import HORIZON_HOURS, forecast_for
from app.dashboard.services import AGEING, RATE_WINDOW_DAYS, dashboard_for, parse_scope
from app.extensions import db
from app.models import Tenant, User
from app.sla.calendar import calendar_for
from app.types import utcnow
from tests.dashboard.recompute import (
    all_items,
    bucket_index,
    day_of,
    decider,
    is_final,
    nearest_rank,
    turnaround_seconds,
)


def _manager() -> Actor:
    user = db.session.scalars(select(User).where(User.email == "manager@cleardesk.demo")).one()
    return Actor.for_user(user)


def _scopes(actor):
    tenants = list(db.session.scalars(select(Tenant).order_by(Tenant.id)))
    yield parse_scope(actor, {"tenant": "all", "days": "90"})
    yield parse_scope(actor, {"tenant": str(tenants[0].id), "days": "30"})
    end = max(date.today(), date.today())
    yield parse_scope(actor, {"tenant": str(tenants[1].id),
                              "from": (end - timedelta(days=20)).isoformat(),
                              "to": (end - timedelta(days=5)).isoformat()})


def _in_range(moment, tenant, scope) -> bool:
    return scope.start <= day_of(moment, tenant) <= scope.end


def _resolved_in(items, scope):
    return [i for i in items if is_final(i) and _in_range(i.resolved_at, i.tenant, scope)]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_history_figures_equal_a_plain_recomputation(seeded, which):
    actor = _manager()
    scope = list(_scopes(actor))[which]
    dash = dashboard_for(scope)
    items = all_items(scope.tenant_ids)
    resolved = _resolved_in(items, scope)
    assert resolved, "the range holds decided items"

    # SLA attainment per kind and in total.
    for row in dash.attainment:
        mine = [i for i in resolved if row["key"] in ("all", i.kind)]
        met = sum(i.sla_state == "met" for i in mine)
        breached = sum(i.sla_state == "breached" for i in mine)
        assert (row["resolved"], row["met"], row["breached"]) == (len(mine), met, breached)
        assert row["rate"] == (met / (met + breached) if met + breached else None)

    # Turnaround median and p90 (the bucket of the nearest-rank quantile), count and mean.
    dimensions = {
        "kind": lambda i: i.kind,
        "subtype": lambda i: (i.kind, i.subtype),
        "queue": lambda i: (i.tenant_id, i.kind),
        "approver": decider,
    }
    for dim, key_of in dimensions.items():
        groups = defaultdict(list)
        for i in resolved:
            groups[key_of(i)].append(turnaround_seconds(i))
        shown = dash.turnaround[dim]
        assert sorted(t.resolved for t in shown) == sorted(len(v) for v in groups.values())
        by_count_and_sum = {(t.resolved, t.seconds): t for t in shown}
        for values in groups.values():
            t = by_count_and_sum[(len(values), sum(values))]
            assert t.median == bucket_index(nearest_rank(values, 0.5))
            assert t.p90 == bucket_index(nearest_rank(values, 0.9))

    # Created and resolved per day.
    created = Counter(day_of(i.created_at, i.tenant) for i in items)
    decided = Counter(day_of(i.resolved_at, i.tenant) for i in resolved)
    assert [(d["day"], d["created"], d["resolved"]) for d in dash.daily] == [
        (scope.start + timedelta(days=n), created[scope.start + timedelta(days=n)],
         decided[scope.start + timedelta(days=n)])
        for n in range((scope.end - scope.start).days + 1)]

    # Auto-approval: approvals decided by the policy engine among decided approvals.
    approvals = [i for i in resolved if i.kind == "approval"]
    auto = [i for i in approvals if i.decided_by_type == "policy" and i.state == "approved"]
    assert (dash.auto_approval["decided"], dash.auto_approval["auto_approved"]) == (
        len(approvals), len(auto))

    # Exception volume by type (arrived in the range).
    arrived = Counter((i.kind, i.subtype) for i in items if i.kind != "approval"
                      and _in_range(i.created_at, i.tenant, scope))
    assert {(e["kind"], e["subtype"]): e["created"] for e in dash.exceptions} == dict(arrived)

    # Throughput per person.
    per_person = Counter(decider(i) for i in resolved)
    shown = {w["user_id"]: w["decided"] for w in dash.workload if w["user_id"]}
    assert shown == {u: n for u, n in per_person.items() if u}
    nobody = [w for w in dash.workload if w["label"].startswith("Policy")]
    assert (nobody[0]["decided"] if nobody else 0) == per_person.get(0, 0)


def test_backlog_figures_equal_a_plain_recomputation(seeded):
    actor = _manager()
    for scope in _scopes(actor):
        dash = dashboard_for(scope)
        items = [i for i in all_items(scope.tenant_ids) if not is_final(i)]
        # Ageing: days since arrival, in each tenant's own days.
        expected = Counter()
        for i in items:
            age = (utcnow().astimezone(calendar_for(i.tenant).tz).date()
                   - day_of(i.created_at, i.tenant)).days
            label = next(lbl for lbl, low, high in AGEING
                         if age >= low and (high is None or age <= high))
            expected[(label, i.kind)] += 1
        for bucket in dash.ageing:
            for kind in ("approval", "billing_exception", "settlement_dispute"):
                assert bucket[kind] == expected[(bucket["label"], kind)]
        # Leakage per tenant, in its currency.
        for row in dash.leakage:
            mine = [i for i in items if i.tenant_id == row["tenant_id"]]
            at_risk = sum((i.amount_at_risk for i in mine if i.kind == "billing_exception"),
                          Decimal("0"))
            delta = sum((i.claimed_amount - i.calculated_amount for i in mine
                         if i.kind == "settlement_dispute"), Decimal("0"))
            assert (row["at_risk"], row["dispute_delta"], row["total"]) == (
                at_risk, delta, at_risk + delta)
            assert row["currency"] == db.session.get(Tenant, row["tenant_id"]).currency
        # Workload: open items assigned to each person now.
        load = Counter(i.assignee_id for i in items if i.assignee_id)
        assert {w["user_id"]: w["open"] for w in dash.workload if w["user_id"] and w["open"]} \
            == dict(load)
        unassigned = [w for w in dash.workload if w["label"] == "Unassigned"]
        assert (unassigned[0]["open"] if unassigned else 0) == sum(
            1 for i in items if not i.assignee_id)


def test_breach_forecast_equals_a_plain_simulation(seeded):
    actor = _manager()
    now = utcnow()
    scope = parse_scope(actor, {"tenant": "all", "days": "30"})
    forecasts = {(f.tenant_id, f.kind): f
                 for f in forecast_for(scope, dashboard_for(scope, now), now)}
    assert len(forecasts) == 9  # three tenants, three kinds
    items = all_items(scope.tenant_ids)
    for (tenant_id, kind), f in forecasts.items():
        tenant = db.session.get(Tenant, tenant_id)
        calendar = calendar_for(tenant)
        mine = [i for i in items if i.tenant_id == tenant_id and i.kind == kind]
        open_items = [i for i in mine if not is_final(i)]
        past_due = [i for i in open_items if i.sla_due_at < now]
        bounds = [calendar.add(now, timedelta(hours=h)) for h in range(1, HORIZON_HOURS + 1)]
        due = sorted((i.sla_due_at for i in open_items if now <= i.sla_due_at <= bounds[-1]))
        # Rates: items created / decided since the start of the local day a week ago, per
        # business hour since then.
        first = now.astimezone(calendar.tz).date() - timedelta(days=RATE_WINDOW_DAYS)
        from datetime import datetime, time

        start = datetime.combine(first, time(0), calendar.tz)
        hours = calendar.between(start, now).total_seconds() / 3600
        arrived = sum(1 for i in mine if day_of(i.created_at, tenant) >= first)
        decided = sum(1 for i in mine if is_final(i) and day_of(i.resolved_at, tenant) >= first)
        throughput = decided / hours
        assert (f.open, f.overdue, f.due_soon) == (len(open_items), len(past_due), len(due))
        assert f.arrival_rate == pytest.approx(arrived / hours)
        assert f.throughput == pytest.approx(throughput)
        # Earliest due first, past-due work first: the k-th item due in business hour j is
        # done in time only if floor(throughput * j) covers the past-due items and it.
        breaches = 0
        for k, when in enumerate(due, start=1):
            hour = next(h for h, bound in enumerate(bounds, start=1) if when <= bound)
            if k > math.floor(throughput * hour) - len(past_due):
                breaches += 1
        assert f.new_breaches == breaches
        assert f.backlog_after == max(0, round(len(open_items) + (arrived - decided) / hours
                                               * HORIZON_HOURS))
