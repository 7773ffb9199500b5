"""The manager dashboard page and its CSV exports. Thin: read the scope, ask the services."""
from __future__ import annotations

from flask import Blueprint, Response, abort, url_for
from flask import request
from flask_login import login_required
from markupsafe import Markup

from app.dashboard.charts import render_chart
from app.dashboard.forecast import forecast_for
from app.dashboard.services import PRESETS, dashboard_for, parse_scope
from app.dashboard.tables import TABLES, as_csv, chart_specs, row_drills, table
from app.web import current_actor, current_tenant_id, render_page

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")


def _drill(args: dict | None) -> str | None:
    """The team queue filtered to the items behind a figure."""
    if args is None:
        return None
    return url_for("queues.show", name="team", **args)


def _load():
    scope = parse_scope(current_actor(), request.args, current_tenant_id())
    dash = dashboard_for(scope)
    dash.forecast = forecast_for(scope)
    return scope, dash


@bp.get("")
@login_required
def show():
    scope, dash = _load()
    charts = {name: Markup(render_chart(spec))
              for name, spec in chart_specs(dash, _drill).items()}
    tables = {name: table(dash, name) for name in TABLES}
    row_links = {name: row_drills(dash, name) for name in TABLES}
    return render_page("dashboard/index.html", None, dash=dash, scope=scope, charts=charts,
                       tables=tables, row_links=row_links, table_titles=TABLES,
                       presets=PRESETS, drill=_drill)


@bp.get("/export/<name>.csv")
@login_required
def export(name: str):
    if name not in TABLES:
        abort(404)
    scope, dash = _load()
    header, rows = table(dash, name)
    tenant = scope.tenant.slug if scope.tenant else "all"
    filename = f"cleardesk-{name}-{tenant}-{scope.start.isoformat()}-{scope.end.isoformat()}.csv"
    return Response(as_csv(header, rows), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
