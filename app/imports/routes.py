"""Import pages: upload, preview with per-row errors, confirm, progress (polled by htmx) and
summary. Thin: forms in, one service call, render or redirect."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, url_for

from app.access import declare_access
from app.errors import DomainError
from app.extensions import db
from app.imports import services
from app.imports.formats import FORMATS
from app.imports.forms import ConfirmForm, UploadForm
from app.integrations import chosen_tenant
from app.models import Tenant
from app.params import body_limit
from app.unit_of_work import refused
from app.web import current_actor, render_page

bp = Blueprint("imports", __name__, url_prefix="/imports")
# Analysts and managers import work; an import (its file name, its rows) is shown only to them,
# in tenants where they may import (services.get_import).
declare_access(bp, roles=services.IMPORT_ROLES)


def _importer_tenant(actor):
    return chosen_tenant(actor, roles=tuple(services.IMPORT_ROLES))


def _index(tenant, form, status=200):
    actor = current_actor()
    return render_page("imports/index.html", status=status, tenant=tenant, form=form,
                       imports=services.recent_imports(actor, tenant.id), formats=FORMATS,
                       tenants=[t for t in _tenants(actor)])


def _tenants(actor):
    ids = [t for t in actor.tenant_ids() if services.IMPORT_ROLES & actor.roles_in(t)]
    return sorted((db.session.get(Tenant, t) for t in ids), key=lambda t: t.name)


@bp.get("/")
def index():
    return _index(_importer_tenant(current_actor()), UploadForm())


@bp.post("/")
@body_limit(services.MAX_BYTES + 1024 * 1024)  # the file and the form around it
def upload():
    actor = current_actor()
    tenant = _importer_tenant(actor)
    form = UploadForm()
    if not form.validate_on_submit():
        return _index(tenant, form, status=422)
    storage = form.file.data
    try:
        raw = storage.read()
    finally:
        storage.close()
    with refused(DomainError) as refusal:
        job = services.upload(actor, tenant.id, format_name=form.format.data,
                              filename=storage.filename, raw=raw,
                              source_system=form.source_system.data)
    if refusal:
        error = refusal.error
        for name, message in getattr(error, "fields", {}).items():
            getattr(form, name, form.file).errors = [message]
        return _index(tenant, form, status=error.status)
    return redirect(url_for("imports.show", import_id=job.id), code=303)


def _show(job, status=200):
    return render_page("imports/show.html", "progress", status=status, job=job,
                       fmt=FORMATS[job.format], confirm=ConfirmForm(),
                       preview=services.preview_rows(job),
                       earlier=services.earlier_import_of_same_file(job))


@bp.get("/<int:import_id>")
def show(import_id: int):
    return _show(services.get_import(current_actor(), import_id))


@bp.get("/<int:import_id>/progress")
def progress(import_id: int):
    job = services.get_import(current_actor(), import_id)
    return render_page("imports/show.html", "progress", job=job, fmt=FORMATS[job.format],
                       confirm=ConfirmForm(), preview=[], earlier=None)


@bp.post("/<int:import_id>/start")
def start(import_id: int):
    if not ConfirmForm().validate_on_submit():
        abort(400)
    job = services.confirm_import(current_actor(), import_id)
    flash(f"Importing {job.total_rows:,} rows from {job.filename}.", "success")
    return redirect(url_for("imports.show", import_id=import_id), code=303)
