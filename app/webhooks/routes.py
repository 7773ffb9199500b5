"""Admin pages of a tenant's webhooks: subscribe (the signing secret shown once), the delivery
log with redeliver, pause and resume; and the banner that tells admins a webhook is paused."""
from __future__ import annotations

from flask import Blueprint, Flask, abort, flash, redirect, request, url_for
from flask_login import current_user

from app.access import declare_access
from app.errors import DomainError
from app.integrations import admin_tenants, chosen_tenant
from app.models import Role
from app.params import MAX_BIG_ID, arg_id
from app.unit_of_work import refused
from app.web import current_actor, render_page
from app.webhooks import services
from app.webhooks.forms import ButtonForm, SubscriptionForm

bp = Blueprint("webhooks", __name__, url_prefix="/admin/integrations/webhooks")
declare_access(bp, roles={Role.ADMIN})


def _list_page(tenant, form, secret=None, created=None, status=200):
    actor = current_actor()
    subs = services.tenant_subscriptions(actor, tenant.id)
    response = render_page(
        "webhooks/subscriptions.html", status=status, tenant=tenant,
        tenants=admin_tenants(actor), subscriptions=subs, form=form, secret=secret,
        created=created, counts=services.delivery_counts([s.id for s in subs]),
        signature_header=services.SIGNATURE_HEADER, delivery_header=services.DELIVERY_HEADER)
    if secret:
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def subscriptions():
    return _list_page(chosen_tenant(current_actor()), SubscriptionForm())


@bp.post("/")
def subscribe():
    actor = current_actor()
    tenant = chosen_tenant(actor)
    form = SubscriptionForm()
    if not form.validate_on_submit():
        return _list_page(tenant, form, status=422)
    with refused(DomainError) as refusal:
        sub, secret = services.create_subscription(
            actor, tenant.id, url=form.url.data, events=form.events.data,
            description=form.description.data or "")
    if refusal:
        error = refusal.error
        for name, message in getattr(error, "fields", {}).items():
            getattr(form, name, form.url).errors = [message]
        return _list_page(tenant, form, status=error.status)
    flash("Webhook added. Copy its signing secret now: it is shown only this once.", "success")
    return _list_page(tenant, SubscriptionForm(formdata=None), secret=secret, created=sub)


@bp.get("/<int:subscription_id>")
def log(subscription_id: int):
    actor = current_actor()
    tenant = chosen_tenant(actor)
    page = services.subscription_log(actor, tenant.id, subscription_id,
                                     before=arg_id(request.args, "before", MAX_BIG_ID))
    return render_page("webhooks/log.html", "deliveries", tenant=tenant,
                       tenants=admin_tenants(actor), button=ButtonForm(), **page)


def _button(action):
    if not ButtonForm().validate_on_submit():
        abort(400)
    actor = current_actor()
    tenant = chosen_tenant(actor)
    result = action(actor, tenant)
    return tenant, result


@bp.post("/<int:subscription_id>/pause")
def pause(subscription_id: int):
    tenant, _ = _button(lambda a, t: services.pause_by_admin(a, t.id, subscription_id))
    flash("Webhook paused: deliveries wait until you resume it.", "success")
    return redirect(url_for("webhooks.log", subscription_id=subscription_id, tenant=tenant.id),
                    code=303)


@bp.post("/<int:subscription_id>/resume")
def resume(subscription_id: int):
    tenant, _ = _button(lambda a, t: services.resume_subscription(a, t.id, subscription_id))
    flash("Webhook resumed: every delivery not yet received is being sent.", "success")
    return redirect(url_for("webhooks.log", subscription_id=subscription_id, tenant=tenant.id),
                    code=303)


@bp.post("/deliveries/<bigid:delivery_pk>/redeliver")
def redeliver(delivery_pk: int):
    tenant, delivery = _button(lambda a, t: services.redeliver(a, t.id, delivery_pk))
    flash(f"Delivery {delivery.delivery_id} queued again (same id).", "success")
    return redirect(url_for("webhooks.log", subscription_id=delivery.subscription_id,
                            tenant=tenant.id), code=303)


def install_webhooks(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def _paused_webhooks():
        def paused_webhooks():
            if not current_user.is_authenticated:
                return []
            return services.paused_subscriptions(current_actor())

        return {"paused_webhooks": paused_webhooks}
