"""The dashboard's tables as header and rows: shown on the page, exported as CSV, and turned
into chart specs (one source for all three, so a chart, its table and its CSV never differ)."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from decimal import Decimal

from app.dashboard.services import KIND_LABELS, Dashboard

TABLES = {
    "attainment": "SLA attainment",
    "turnaround-kind": "Turnaround by kind",
    "turnaround-subtype": "Turnaround by subtype",
    "turnaround-queue": "Turnaround by queue",
    "turnaround-approver": "Turnaround by approver",
    "turnaround-step": "Turnaround per approval step type",
    "daily": "Created and resolved per day",
    "ageing": "Backlog ageing",
    "auto-approval": "Auto-approval",
    "exceptions": "Exception volume by type",
    "leakage": "Leakage",
    "workload": "Approver workload and throughput",
    "forecast": "Breach forecast (next 24 business hours)",
}


def _pct(rate) -> str:
    return "" if rate is None else f"{rate * 100:.1f}"


def _hours(value) -> str:
    return "" if value is None else f"{value:.1f}"


def table(dash: Dashboard, name: str) -> tuple[list[str], list[list]]:
    """(header, rows) of one table; plain values (CSV-ready)."""
    if name == "attainment":
        return (["Kind", "Resolved", "Met", "Breached", "Attainment %"],
                [[a["label"], a["resolved"], a["met"], a["breached"], _pct(a["rate"])]
                 for a in dash.attainment])
    if name.startswith("turnaround-"):
        dim = name.split("-", 1)[1]
        return (["Step type" if dim == "step" else dim.title(), "Decided",
                 "Half decided within (business hours)",
                 "9 in 10 decided within (business hours)", "Mean (business hours)"],
                [[t.label, t.resolved, t.median_within, t.p90_within, _hours(t.mean_hours)]
                 for t in dash.turnaround[dim]])
    if name == "daily":
        return (["Day", "Created", "Resolved"],
                [[d["day"].isoformat(), d["created"], d["resolved"]] for d in dash.daily])
    if name == "ageing":
        return (["Age", *KIND_LABELS.values(), "Total"],
                [[a["label"], *[a[k] for k in KIND_LABELS], a["total"]] for a in dash.ageing])
    if name == "auto-approval":
        rows = [[t["label"], t["decided"], t["auto_approved"], _pct(t["rate"])]
                for t in dash.auto_approval["by_tenant"]]
        a = dash.auto_approval
        rows.append(["All", a["decided"], a["auto_approved"], _pct(a["rate"])])
        return ["Tenant", "Approvals decided", "Auto-approved", "Rate %"], rows
    if name == "exceptions":
        return (["Kind", "Type", "Arrived"],
                [[e["kind_label"], e["label"], e["created"]] for e in dash.exceptions])
    if name == "leakage":
        return (["Tenant", "Currency", "Open billing exceptions", "Amount at risk",
                 "Open disputes", "Dispute delta", "Leakage"],
                [[x["tenant"], x["currency"], x["open_exceptions"], f"{x['at_risk']:.2f}",
                  x["open_disputes"], f"{x['dispute_delta']:.2f}", f"{x['total']:.2f}"]
                 for x in dash.leakage])
    if name == "workload":
        return (["Person", "Open assigned", "Decided in range", "Decided per day"],
                [[w["label"], "" if w["open"] is None else w["open"],
                  "" if w["decided"] is None else w["decided"],
                  "" if w["per_day"] is None else f"{w['per_day']:.2f}"] for w in dash.workload])
    if name == "forecast":
        return (["Queue", "Open", "Past due now", "Due in 24 business hours",
                 "Arrivals per business hour", "Expected arrivals in 24 business hours",
                 "Arrivals due within 24 business hours", "Throughput per business hour",
                 "Forecast new breaches", "Of which from arrivals",
                 "Extra business hours needed", "Backlog in 24 business hours"],
                [[f.label, f.open, f.overdue, f.due_soon, f"{f.arrival_rate:.2f}",
                  f.expected_arrivals, f.arrivals_due, f"{f.throughput:.2f}", f.new_breaches,
                  f.breaches_from_arrivals, f.shortfall_label, f.backlog_after]
                 for f in dash.forecast])
    raise KeyError(name)


# Money columns of a table, and the column holding their currency.
MONEY_COLUMNS = {"leakage": ((3, 5, 6), 1)}


def page_table(dash: Dashboard, name: str) -> tuple[list[str], list[list]]:
    """A table as the page shows it: money with its currency and separators (EUR 25,679.95),
    counts with separators; the CSV keeps plain values."""
    header, rows = table(dash, name)
    money, currency_at = MONEY_COLUMNS.get(name, ((), None))
    shown = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            if index in money and value != "":
                cells.append(f"{row[currency_at]} {Decimal(value):,.2f}")
            elif isinstance(value, int) and not isinstance(value, bool):
                cells.append(f"{value:,}")
            else:
                cells.append(value)
        shown.append(cells)
    return header, shown


def as_csv(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        # A cell that a spreadsheet would run as a formula is written as text.
        writer.writerow([f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@")
                         and not _number(v) else v for v in row])
    return out.getvalue()


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _count_axis(spec: dict, stacked: bool = False) -> dict:
    """Whole-number ticks for a chart of counts (no "0.2 items")."""
    series = [[value or 0 for value, _href in points] for _name, points in spec["series"]]
    top = max((sum(column) for column in zip(*series)) if stacked and series
              else (v for values in series for v in values), default=0)
    step = _nice_step(top / 6)
    spec.setdefault("options", {})["y_labels"] = list(range(0, top + step, step))
    return spec


def _nice_step(raw: float) -> int:
    """The smallest of 1, 2, 5 x 10^n at least `raw`: ticks at round numbers."""
    if raw <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return int(factor * magnitude)
    return int(10 * magnitude)  # pragma: no cover


def chart_specs(dash: Dashboard, drill: Callable[[dict | None], str | None]) -> dict[str, dict]:
    """The charts of the dashboard; `drill(args)` is the URL of the items behind a bar."""
    specs: dict[str, dict] = {}
    days = dash.daily
    step = max(1, len(days) // 15)
    specs["daily"] = {
        "kind": "Bar", "title": "Created and resolved per day",
        "labels": [d["day"].strftime("%d %b") for d in days],
        "series": [("Created", [(d["created"], drill(d["drill_created"])) for d in days]),
                   ("Resolved", [(d["resolved"], drill(d["drill_resolved"])) for d in days])],
        "options": {"x_label_rotation": 45, "x_labels_major_every": step,
                    "show_minor_x_labels": False, "print_values": len(days) <= 14,
                    "width": 960},
    }
    att = dash.attainment[:-1]
    specs["attainment"] = {
        "kind": "StackedBar", "title": "SLA met and breached, by kind (decided in range)",
        "labels": [a["label"] for a in att],
        "series": [("Met", [(a["met"], drill(a["drill_met"])) for a in att]),
                   ("Breached", [(a["breached"], drill(a["drill_breached"])) for a in att])],
    }
    kinds = dash.turnaround["kind"]
    specs["turnaround"] = {
        "kind": "Bar", "title": "How long decisions take, by kind (business hours)",
        "labels": [t.label for t in kinds],
        "series": [("Half decided within", [(t.median_hours, drill(t.drill)) for t in kinds]),
                   ("9 in 10 decided within", [(t.p90_hours, drill(t.drill)) for t in kinds])],
    }
    specs["ageing"] = {
        "kind": "StackedBar", "title": "Open backlog by age",
        "labels": [a["label"] for a in dash.ageing],
        "series": [(label, [(a[kind], drill({**a["drill"], "kind": kind})) for a in dash.ageing])
                   for kind, label in KIND_LABELS.items()],
    }
    exc = dash.exceptions[:12]
    specs["exceptions"] = {
        "kind": "HorizontalBar", "title": "Exceptions and disputes that arrived, by type",
        "labels": [e["label"] for e in exc],
        "series": [("Arrived", [(e["created"], drill(e["drill"])) for e in exc])],
        "options": {"show_legend": False},
    }
    people = [w for w in dash.workload if w["user_id"]]
    specs["workload"] = {
        "kind": "Bar", "title": "Workload (open, assigned now) and throughput (decided in range)",
        "labels": [w["label"] for w in people],
        "series": [("Open assigned", [(w["open"], drill(w["drill_open"])) for w in people]),
                   ("Decided", [(w["decided"], drill(w["drill_decided"])) for w in people])],
    }
    if dash.forecast:
        specs["forecast"] = {
            "kind": "HorizontalBar",
            "title": "Next 24 business hours: due (backlog and arrivals), forecast to breach",
            "labels": [f.label for f in dash.forecast],
            "series": [("Due (backlog)", [(f.due_soon, drill(f.drill_due))
                                          for f in dash.forecast]),
                       ("Due (expected arrivals)", [(f.arrivals_due, None)
                                                    for f in dash.forecast]),
                       ("Forecast to breach", [(f.new_breaches, drill(f.drill_due))
                                               for f in dash.forecast])],
            "options": {"height": 120 + 30 * len(dash.forecast), "width": 900,
                        "truncate_label": 40},
        }
    for name in ("daily", "workload", "exceptions", "forecast"):
        if name in specs:
            _count_axis(specs[name])
    for name in ("attainment", "ageing"):
        _count_axis(specs[name], stacked=True)
    return specs


def row_drills(dash: Dashboard, name: str) -> list[dict | None]:
    """For each row of a table, the filters of the items behind it (None: no single list)."""
    if name == "attainment":
        return [_without(a["drill_met"], "sla") for a in dash.attainment]
    if name.startswith("turnaround-"):
        return [t.drill for t in dash.turnaround[name.split("-", 1)[1]]]
    if name == "daily":
        return [d["drill_created"] for d in dash.daily]
    if name == "ageing":
        return [a["drill"] for a in dash.ageing]
    if name == "auto-approval":
        return [None] * len(dash.auto_approval["by_tenant"]) + [dash.auto_approval["drill"]]
    if name == "exceptions":
        return [e["drill"] for e in dash.exceptions]
    if name == "leakage":
        return [None] * len(dash.leakage)  # exceptions and disputes: see cell_drills
    if name == "workload":
        return [w["drill_open"] or w["drill_decided"] for w in dash.workload]
    if name == "forecast":
        return [f.drill_due for f in dash.forecast]
    return []


def cell_drills(dash: Dashboard, name: str) -> list[dict[int, dict]]:
    """For each row, the cells (by column) that open items of their own: leakage counts
    billing exceptions and disputes, so each has its link."""
    if name == "leakage":
        return [{2: x["drill_exceptions"], 3: x["drill_exceptions"],
                 4: x["drill_disputes"], 5: x["drill_disputes"]} for x in dash.leakage]
    return []


def _without(args: dict, key: str) -> dict:
    return {k: v for k, v in args.items() if k != key}
