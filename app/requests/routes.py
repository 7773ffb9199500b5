"""The requester's pages: raise a request, see one's own requests and where each waits."""
from __future__ import annotations

import uuid

from flask import Blueprint, abort, flash, redirect, request, url_for

from app.access import allow, declare_access
from app.errors import ValidationFailed
from app.params import body_limit
from app.models import Kind, Role
from app.requests.forms import RequestForm
from app.requests.services import NEEDS_ANSWER, my_requests, submit_request, where_waiting
from app.unit_of_work import refused
from app.web import current_actor, current_tenant_id, form_errors, render_page
from app.work import kinds
from app.work.attachments import (
    ACCEPT,
    attachments_of,
    max_bytes,
    per_change,
    read_uploads,
    size_text,
    uploads_body_limit,
)

bp = Blueprint("requests", __name__, url_prefix="/requests")
declare_access(bp, member=True)  # one's own requests; raising one needs the requester role


def _request_tenants(actor):
    return sorted((m.tenant for m in actor.user.memberships
                   if Role.REQUESTER.value in m.role_set), key=lambda t: t.display_name)


@bp.get("/")
def index():
    actor = current_actor()
    items = my_requests(actor)
    return render_page("requests/index.html", items=items, waiting=where_waiting(items),
                       files=attachments_of([i.id for i in items]),
                       needs_answer=[i for i in items if i.state == NEEDS_ANSWER],
                       can_request=bool(_request_tenants(actor)),
                       subtypes=kinds.SUBTYPES[Kind.APPROVAL.value])


@bp.route("/new", methods=["GET", "POST"])
@body_limit(uploads_body_limit)
@allow(roles={Role.REQUESTER})
def new():
    actor = current_actor()
    tenants = _request_tenants(actor)
    if not tenants:
        abort(403, "Your roles do not let you raise requests.")
    form = RequestForm()
    form.tenant_id.choices = [(t.id, t.display_name) for t in tenants]
    form.subtype.choices = list(kinds.SUBTYPES[Kind.APPROVAL.value].items())
    subtype = request.values.get("subtype") or "discount"
    if subtype not in kinds.SUBTYPES[Kind.APPROVAL.value]:
        subtype = "discount"
    failed = None
    if request.method == "GET" or request.form.get("refresh"):
        # A first visit, or the subtype changed (htmx): a fresh form, a fresh key.
        form.request_key.data = form.request_key.data or uuid.uuid4().hex
        form.subtype.data = subtype
        if not form.tenant_id.data:
            current = current_tenant_id()
            form.tenant_id.data = current if any(t.id == current for t in tenants) else tenants[0].id
    elif not form.validate_on_submit():
        if "csrf_token" in form.errors:
            abort(400, "This form has expired or did not come from Cleardesk. Reload the page.")
        failed = ValidationFailed("Some fields need attention.", {})
    else:
        with refused(ValidationFailed) as refusal:
            item, created = submit_request(
                actor, tenant_id=form.tenant_id.data, subtype=subtype, title=form.title.data,
                counterparty=form.counterparty.data, amount=form.amount.data,
                reason=form.reason.data, fields=request.form,
                request_key=form.request_key.data,
                files=read_uploads(request.files.getlist("files")))
        if refusal:  # nothing of a refused request is kept
            failed = refusal.error
        else:
            flash(f"Your request {item.external_ref} is submitted." if created
                  else f"Your request {item.external_ref} was already submitted.", "success")
            return redirect(url_for("items.detail", item_id=item.id), code=303)
    errors = form_errors(form, failed)
    tenant = next((t for t in tenants if t.id == form.tenant_id.data), tenants[0])
    return render_page("requests/new.html", "request_form", form=form, subtype=subtype,
                       fields=kinds.SUBTYPE_FIELDS.get(subtype, ()), labels=kinds.DETAIL_LABELS,
                       types=kinds.DETAIL_FIELDS[Kind.APPROVAL.value], values=request.form,
                       errors=errors, failed=failed, tenant=tenant, accept=ACCEPT,
                       max_file=size_text(max_bytes()), per_change=per_change(),
                       files_lost=bool(failed) and any(
                           f.filename for f in request.files.getlist("files")),
                       status=422 if failed else 200)
