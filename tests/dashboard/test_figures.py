"""Every dashboard figure equals a plain recomputation from the seeded items (written here
without the rollups), for one tenant and for all of a manager's tenants."""
from __future__ import annotations

import math
import re
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
from app.work.calendar import calendar_for
from app.work.sla_clock import sla_target
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import arrange
from tests.dashboard.recompute import (
    all_items,
    bucket_index,
    day_of,
    decider,
    is_final,
    nearest_rank,
    quarter_hour,
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


def _plain_forecast(tenant, kind, items, now) -> dict:
    """The forecast of one queue, simulated plainly from the items: due times taken at the
    start of their quarter hour; the backlog, then the arrivals expected at the last week's
    rate (each due its kind's normal-priority target after it arrives), done earliest-due
    first at the last week's throughput, past-due work first."""
    from datetime import datetime, time

    calendar = calendar_for(tenant)
    mine = [i for i in items if i.tenant_id == tenant.id and i.kind == kind]
    open_items = [i for i in mine if not is_final(i)]
    not_yet_due = [i for i in open_items if quarter_hour(i.sla_due_at) > now]
    past_due = len(open_items) - len(not_yet_due)
    bounds = [calendar.add(now, timedelta(hours=h)) for h in range(1, HORIZON_HOURS + 1)]
    # Rates: items created / decided since the start of the local day a week ago, per
    # business hour since then.
    first = now.astimezone(calendar.tz).date() - timedelta(days=RATE_WINDOW_DAYS)
    hours = calendar.between(datetime.combine(first, time(0), calendar.tz),
                             now).total_seconds() / 3600
    arrived = sum(1 for i in mine if day_of(i.created_at, tenant) >= first)
    decided = sum(1 for i in mine if is_final(i) and day_of(i.resolved_at, tenant) >= first)
    arrival_rate, throughput = arrived / hours, decided / hours
    # The business hour (1..24) each item of the window is due in.
    backlog_hours = sorted(next(h for h, bound in enumerate(bounds, start=1)
                                if quarter_hour(i.sla_due_at) <= bound)
                           for i in not_yet_due if quarter_hour(i.sla_due_at) <= bounds[-1])
    target = sla_target(kind, "normal", tenant).total_seconds() / 3600
    arrivals_by = [math.floor(arrival_rate * max(0, h - target) + 0.5)
                   for h in range(1, HORIZON_HOURS + 1)]
    arrival_hours = [h for h in range(1, HORIZON_HOURS + 1)
                     for _ in range(arrivals_by[h - 1] - (arrivals_by[h - 2] if h > 1 else 0))]

    def breaches(due_hours):
        # The k-th item due (in order) is done in time only if floor(throughput * its hour)
        # covers the past-due items and it.
        return sum(1 for k, hour in enumerate(sorted(due_hours), start=1)
                   if k > math.floor(throughput * hour) - past_due)

    return {"open": len(open_items), "overdue": past_due, "due_soon": len(backlog_hours),
            "arrival_rate": arrival_rate, "throughput": throughput,
            "expected_arrivals": math.floor(arrival_rate * HORIZON_HOURS + 0.5),
            "arrivals_due": arrivals_by[-1],
            "breaches_from_backlog": breaches(backlog_hours),
            "new_breaches": breaches(backlog_hours + arrival_hours),
            "backlog_after": max(0, round(len(open_items) + (arrived - decided) / hours
                                          * HORIZON_HOURS))}


def _as_figures(f) -> dict:
    return {"open": f.open, "overdue": f.overdue, "due_soon": f.due_soon,
            "arrival_rate": pytest.approx(f.arrival_rate),
            "throughput": pytest.approx(f.throughput),
            "expected_arrivals": f.expected_arrivals, "arrivals_due": f.arrivals_due,
            "breaches_from_backlog": f.breaches_from_backlog, "new_breaches": f.new_breaches,
            "backlog_after": f.backlog_after}


def test_breach_forecast_equals_a_plain_simulation(seeded):
    actor = _manager()
    now = utcnow()
    scope = parse_scope(actor, {"tenant": "all", "days": "30"})
    forecasts = {(f.tenant_id, f.kind): f
                 for f in forecast_for(scope, dashboard_for(scope, now), now)}
    assert len(forecasts) == 9  # three tenants, three kinds
    items = all_items(scope.tenant_ids)
    for (tenant_id, kind), f in forecasts.items():
        expected = _plain_forecast(db.session.get(Tenant, tenant_id), kind, items, now)
        assert _as_figures(f) == expected, (tenant_id, kind)
        assert f.breaches_from_arrivals == f.new_breaches - f.breaches_from_backlog >= 0


def test_work_arriving_faster_than_it_is_done_is_forecast_to_breach(
        make_tenant, make_user, make_item, client, auth):
    """No backlog due within the window, but 40 approvals arrived in the last week and 10
    were decided: the arrivals of the next 24 business hours outrun the team, and the
    forecast says so (from the arrivals alone), equal to the plain simulation."""
    tenant = make_tenant()
    manager = make_user("max@x.test", [tenant], roles=("manager",))
    now = utcnow()
    calendar = calendar_for(tenant)
    week_ago = now - timedelta(days=6)
    items = []
    for n in range(40):
        item = make_item(tenant)
        # Due well after the window: only the new arrivals can breach in it.
        values = {"created_at": week_ago + (now - week_ago) * n / 40,
                  "sla_due_at": calendar.add(now, timedelta(hours=60))}
        if n < 10:
            values.update(state="approved", resolved_at=now, sla_state="met")
        arrange(item, **values)
        items.append(item)
    commit()
    db.session.expire_all()
    scope = parse_scope(Actor.for_user(manager), {"tenant": str(tenant.id), "days": "30"})
    (f,) = [f for f in forecast_for(scope, dashboard_for(scope, now), now)
            if f.kind == "approval"]
    assert f.breaches_from_backlog == 0 and f.due_soon == 0 and f.overdue == 0
    assert f.arrivals_due > 0 and f.new_breaches > 0 and f.breaches_from_arrivals > 0
    assert _as_figures(f) == _plain_forecast(tenant, "approval", all_items([tenant.id]), now)

    # The page shows it: expected arrivals (due within the window) and the breaches they add.
    auth.login("max@x.test")
    page = client.get(f"/dashboard?tenant={tenant.id}&days=30").text
    row = re.search(r'<tr class="breach">.*?</tr>', page, re.S).group(0)
    assert ">Approval</a>" in row
    assert f'{f.expected_arrivals} <small class="muted">({f.arrivals_due})</small>' in row
    assert f"⚠ {f.new_breaches}</strong> <small>({f.breaches_from_arrivals})</small>" in row
    assert "no queue is forecast to breach" not in page
