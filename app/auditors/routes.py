"""The auditor's pages: search, an item's timeline, an event in full, exports with their
progress, the access review, and the admins' alerts. Thin: parse, call a view or a service,
render or redirect. Auditors read; the only things they start are audited exports."""
from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, abort, flash, redirect, request, send_file, url_for
from flask_login import current_user

from app.access import allow, declare_access
from app.audit.jobs import export_path
from app.audit.models import ExportFormat
from app.audit.services import (
    AUDIT_ROLES,
    acknowledge_alert,
    get_own_export,
    record_access_review_export,
    record_export_download,
    request_export,
    require_audit_tenant,
)
from app.auditors import queries
from app.auditors.forms import EventSearchForm, ExportForm
from app.auth.forms import EmptyForm
from app.errors import DomainError, NotFound, PermissionDenied
from app.extensions import db
from app.models import Role, WorkItem
from app.params import arg_id
from app.replica import read_from_replica
from app.unit_of_work import commit_now, refused
from app.web import current_actor, current_tenant_id, render_page

bp = Blueprint("audit", __name__, url_prefix="/audit")
declare_access(bp, roles=AUDIT_ROLES)
read_from_replica(bp)


@bp.app_context_processor
def _audit_nav():
    def audit_open_alerts() -> int:
        """Open audit alerts the signed-in admin should see (asked only by the nav link)."""
        if not current_user.is_authenticated:
            return 0
        return len(queries.open_alerts(current_actor()))

    return {"audit_open_alerts": audit_open_alerts}


def _chosen_tenant(actor, requested: int | None):
    """The tenant asked for, else the one being worked in, else the first one audited."""
    if requested:
        return require_audit_tenant(actor, requested)
    audited = queries.audit_tenants(actor)
    if not audited:
        raise PermissionDenied("The audit trail is for auditors and admins.")
    working_in = current_tenant_id()
    return next((t for t in audited if t.id == working_in), audited[0])


@bp.get("/")
def events():
    actor = current_actor()
    form = EventSearchForm(request.args)
    form.validate()
    # A value that makes no sense is left out of the search and named beside its field (as
    # it is typed, too: the results answer says so and puts the sentence by the field).
    tenant = _chosen_tenant(actor, form.tenant.data)
    value = {field.name: None if field.errors else (field.data or None) for field in form}
    search = queries.EventSearch(
        tenant=tenant, item_id=value["item"], actor=value["actor"], action=value["action"],
        actor_type=value["actor_type"], date_from=value["date_from"], date_to=value["date_to"],
        before=value["before"])
    page = queries.search_events(search)
    return render_page(
        "audit/events.html", "rows" if search.before else "results",
        tenant=tenant, tenants=queries.audit_tenants(actor), search=search, form=form,
        page=page, chain=queries.chain_status(tenant), alerts=queries.open_alerts(actor, tenant.id),
        exports=queries.recent_exports(actor, tenant.id),
        known_actions=queries.KNOWN_ACTIONS,
        actor_types=queries.ACTOR_TYPES, status=400 if form.errors else 200)


@bp.get("/items/<bigid:item_id>")
def item_timeline(item_id: int):
    actor = current_actor()
    tenant_id = db.session.scalar(db.select(WorkItem.tenant_id).where(WorkItem.id == item_id))
    if tenant_id is None or tenant_id not in actor.tenant_ids():
        raise NotFound("No such item.")
    tenant = require_audit_tenant(actor, tenant_id)
    item, events = queries.item_timeline(tenant, item_id)
    return render_page("audit/item.html", tenant=tenant, item=item, events=events,
                       users=queries.users_of(events))


@bp.get("/events/<bigid:event_id>")
def event_detail(event_id: int):
    actor = current_actor()
    event = queries.event_in_tenants(actor, event_id)
    if event is None:
        raise NotFound("No such event.")
    tenant = require_audit_tenant(actor, event.tenant_id)
    return render_page("audit/event.html", tenant=tenant, **queries.event_context(event))


@bp.post("/exports")
def create_export():
    actor = current_actor()
    form = ExportForm()
    if not form.validate_on_submit():
        abort(400)
    with refused(DomainError) as refusal:
        export = request_export(actor, tenant_id=form.tenant.data, export_format=form.format.data,
                                date_from=form.date_from.data, date_to=form.date_to.data)
    if refusal:
        error = refusal.error
        if error.status in (403, 404):
            raise error
        flash(error.message, "error")
        return redirect(url_for("audit.events", tenant=form.tenant.data), code=303)
    return redirect(url_for("audit.export_status", export_id=export.id), code=303)


@bp.get("/exports/<int:export_id>")
def export_status(export_id: int):
    """The export's page; htmx polls the same address for just its progress."""
    export = get_own_export(current_actor(), export_id)
    return render_page("audit/export.html", "progress", export=export, tenant=export.tenant)


@bp.get("/exports/<int:export_id>/download")
def download_export(export_id: int):
    actor = current_actor()
    export = get_own_export(actor, export_id)
    record_export_download(actor, export)
    commit_now("a download is on the audit trail, though a GET")
    path = export_path(export)
    if not path.is_file():
        raise NotFound("The export file is no longer there; export the range again.")
    mimetype = "text/csv" if export.format == ExportFormat.CSV.value else "application/x-ndjson"
    return send_file(path, mimetype=mimetype, as_attachment=True, download_name=export.file_name)


@bp.get("/access-review")
def access_review():
    actor = current_actor()
    tenant = _chosen_tenant(actor, arg_id(request.args, "tenant"))
    return render_page("audit/access_review.html", tenant=tenant,
                       tenants=queries.audit_tenants(actor), rows=queries.access_review(tenant))


@bp.get("/access-review.csv")
def access_review_csv():
    actor = current_actor()
    tenant = record_access_review_export(actor, arg_id(request.args, "tenant"))
    commit_now("an export of who has access is on the audit trail, though a GET")
    rows = queries.access_review(tenant)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(queries.ACCESS_CSV_COLUMNS)
    writer.writerows(queries.access_csv_rows(tenant, rows))
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="access-review-{tenant.slug}.csv"')
    return response


@bp.post("/alerts/<int:alert_id>/acknowledge")
@allow(roles={Role.ADMIN})
def acknowledge(alert_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    alert = acknowledge_alert(current_actor(), alert_id)
    flash("Alert acknowledged. Investigate before the next verification.", "success")
    return redirect(url_for("audit.events", tenant=alert.tenant_id), code=303)
