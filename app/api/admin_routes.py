"""Admin pages for a tenant's API tokens: list (with last use), create (the secret is shown
once, on the answer to the POST, and never stored), revoke."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, url_for

from app.access import declare_access
from app.api.forms import RevokeForm, TokenForm
from app.api.tokens import SCOPES, issue_token, revoke_token, tenant_tokens
from app.errors import DomainError
from app.integrations import admin_tenants, chosen_tenant
from app.models import Role
from app.unit_of_work import refused
from app.web import current_actor, render_page

bp = Blueprint("api_admin", __name__, url_prefix="/admin/integrations")
declare_access(bp, roles={Role.ADMIN})


def _page(tenant, form, secret=None, status=200):
    actor = current_actor()
    response = render_page("api/tokens.html", status=status, tenant=tenant,
                           tenants=admin_tenants(actor), tokens=tenant_tokens(actor, tenant.id),
                           form=form, revoke_form=RevokeForm(), secret=secret, scopes=SCOPES)
    if secret:
        response.headers["Cache-Control"] = "no-store"  # the one showing of the secret
    return response


@bp.get("/tokens")
def tokens():
    tenant = chosen_tenant(current_actor())
    return _page(tenant, TokenForm())


@bp.post("/tokens")
def create_token():
    actor = current_actor()
    tenant = chosen_tenant(actor)
    form = TokenForm()
    if not form.validate_on_submit():
        return _page(tenant, form, status=422)
    with refused(DomainError) as refusal:
        row, secret = issue_token(actor, tenant.id, form.name.data, form.scopes.data)
    if refusal:
        error = refusal.error
        for name, message in getattr(error, "fields", {}).items():
            getattr(form, name, form.name).errors = [message]
        return _page(tenant, form, status=error.status)
    flash(f"Token “{row.name}” created. Copy it now: it is shown only this once.", "success")
    return _page(tenant, TokenForm(formdata=None), secret=secret)


@bp.post("/tokens/<int:token_id>/revoke")
def revoke(token_id: int):
    actor = current_actor()
    tenant = chosen_tenant(actor)
    if not RevokeForm().validate_on_submit():
        abort(400)
    row = revoke_token(actor, tenant.id, token_id)
    flash(f"Token “{row.name}” revoked: it no longer works.", "success")
    return redirect(url_for("api_admin.tokens", tenant=tenant.id), code=303)
