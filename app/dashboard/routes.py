"""The manager dashboard page and its CSV exports. Thin: read the scope, ask the services."""
from __future__ import annotations

import re
from urllib.parse import quote_plus

from flask import Blueprint, Response, abort, g, request, url_for
from markupsafe import Markup

from app.access import declare_access
from app.dashboard.charts import render_chart
from app.dashboard.forecast import forecast_for
from app.dashboard.services import PRESETS, dashboard_for, parse_scope
from app.dashboard.tables import (TABLES, as_csv, cell_drills, chart_specs, page_table,
                                  row_drills, table)
from app.models import Role
from app.replica import read_from_replica
from app.web import current_actor, current_tenant_id, render_page

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")
declare_access(bp, roles={Role.MANAGER})
read_from_replica(bp)
# Tables shown open on the page; the others are fetched when opened.
INLINE_TABLES = ("attainment", "turnaround-kind", "turnaround-step", "workload", "leakage",
                 "auto-approval")


def _drill(args: dict | None) -> str | None:
    """The team queue filtered to the items behind a figure. (Hundreds of links a page:
    the queue's URL is built once per request, the query strings directly.)"""
    if args is None:
        return None
    base = g.get("dashboard_drill_base")
    if base is None:
        base = g.dashboard_drill_base = url_for("queues.show", name="team")
    return f"{base}?{_query(args)}" if args else base


_PLAIN = re.compile(r"[A-Za-z0-9_.\-]*")


def _query(args: dict) -> str:
    """urlencode for the plain values of drill filters (ids, dates, names), quoting only
    what needs it: a page builds hundreds of these."""
    parts = []
    for key, value in args.items():
        text = str(value)
        parts.append(f"{key}={text if _PLAIN.fullmatch(text) else quote_plus(text)}")
    return "&".join(parts)


def _load():
    scope = parse_scope(current_actor(), request.args, current_tenant_id())
    dash = dashboard_for(scope)
    dash.forecast = forecast_for(scope, dash)
    return scope, dash


@bp.get("")
def show():
    scope, dash = _load()
    charts = {name: Markup(render_chart(spec))
              for name, spec in chart_specs(dash, _drill).items()}
    tables = {name: page_table(dash, name) for name in INLINE_TABLES}
    row_links = {name: row_drills(dash, name) for name in INLINE_TABLES}
    cell_links = {name: cell_drills(dash, name) for name in INLINE_TABLES}
    return render_page("dashboard/index.html", None, dash=dash, scope=scope, charts=charts,
                       tables=tables, row_links=row_links, cell_links=cell_links,
                       table_titles=TABLES, presets=PRESETS, drill=_drill)


@bp.get("/tables/<name>")
def table_page(name: str):
    """One table: the rows an opened table on the dashboard fetches, or a page of its own."""
    if name not in TABLES:
        abort(404)
    scope, dash = _load()
    return render_page("dashboard/table.html", "table", name=name, scope=scope,
                       tables={name: page_table(dash, name)},
                       row_links={name: row_drills(dash, name)},
                       cell_links={name: cell_drills(dash, name)}, table_titles=TABLES,
                       drill=_drill)


@bp.get("/export/<name>.csv")
def export(name: str):
    if name not in TABLES:
        abort(404)
    scope, dash = _load()
    header, rows = table(dash, name)
    tenant = scope.tenant.slug if scope.tenant else "all"
    filename = f"cleardesk-{name}-{tenant}-{scope.start.isoformat()}-{scope.end.isoformat()}.csv"
    return Response(as_csv(header, rows), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
