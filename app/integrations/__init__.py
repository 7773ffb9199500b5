"""What the integration admin pages (API tokens, webhooks) share: which tenants the viewer
administers and which one a page is about."""
from __future__ import annotations

from flask import abort, request

from app.actors import Actor
from app.extensions import db
from app.models import Role, Tenant
from app.params import arg_id
from app.web import current_tenant_id


def admin_tenants(actor: Actor) -> list[Tenant]:
    ids = [t for t in actor.tenant_ids() if Role.ADMIN.value in actor.roles_in(t)]
    return sorted((db.session.get(Tenant, t) for t in ids), key=lambda t: t.name)


def chosen_tenant(actor: Actor, roles=(Role.ADMIN.value,)) -> Tenant:
    """The tenant named by ?tenant= (or the form's tenant field), else the one chosen in the
    navigation, else the viewer's first; 403 unless the viewer has one of `roles` there."""
    allowed = sorted(
        (t for t in actor.tenant_ids() if set(roles) & actor.roles_in(t)),
        key=lambda t: db.session.get(Tenant, t).name)
    asked = arg_id(request.args, "tenant") or arg_id(request.form, "tenant")
    if asked is not None:
        if asked not in actor.tenant_ids():
            abort(404)  # not one of theirs: say nothing about whether it exists
        if asked not in allowed:
            abort(403, "Your roles in that tenant do not include this.")
        return db.session.get(Tenant, asked)
    if not allowed:
        abort(403, "Your roles do not include this page.")
    wanted = current_tenant_id()
    return db.session.get(Tenant, wanted if wanted in allowed else allowed[0])
