"""Policy admin pages: the version in force, a draft copied from it, rule editing with live
validation, the diff, simulation, submit and four-eyes activation, and the kill switch.
Admins of the tenant only. Thin: parse the form, call a service, render or redirect."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, flash, jsonify, redirect, request, url_for
from sqlalchemy import select

from app.access import declare_access
from app.auth import passkeys
from app.auth.second_factor import FactorRefused, factor_of
from app.errors import DomainError, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import Role, Tenant
from app.params import arg_id
from app.policy import forms, simulation, versions
from app.policy.models import PolicyKillSwitch, PolicyVersion
from app.policy.rules import FIELDS_BY_KIND, KIND_WORDS, TYPE_WORDS, check_condition
from app.types import utcnow
from app.unit_of_work import commit_now, refused
from app.web import (
    current_actor,
    current_tenant_id,
    render_page,
    request_origin,
    wants_fragment,
)

bp = Blueprint("policy", __name__, url_prefix="/admin/t/<slug>/policy")
declare_access(bp, roles={Role.ADMIN})
# The URLs of before the admin frame (/admin/policy/<tenant id>/…), kept as redirects: links in
# mail and bookmarks still land.
legacy = Blueprint("policy_legacy", __name__, url_prefix="/admin/policy")
declare_access(legacy, roles={Role.ADMIN})


@bp.url_value_preprocessor
def _tenant_from_slug(endpoint, values):
    """The views take the tenant's id; the URL names its slug, like every admin page. An
    unknown slug becomes id 0, which the services refuse as they refuse any tenant not one's
    own."""
    if values is None:
        return
    slug = values.pop("slug", "")
    tenant_id = (db.session.scalar(select(Tenant.id).where(Tenant.slug == slug))
                 if len(slug) <= 64 else None)
    values["tenant_id"] = tenant_id or 0


@bp.url_defaults
def _slug_for_tenant(endpoint, values):
    """url_for(…, tenant_id=…) names the tenant by its slug."""
    if "slug" not in values and "tenant_id" in values:
        tenant = db.session.get(Tenant, values.pop("tenant_id"))
        values["slug"] = tenant.slug if tenant is not None else "-"


def _admin_tenants(actor) -> list[int]:
    return sorted(t for t in actor.tenant_ids() if Role.ADMIN.value in actor.roles_in(t))


def _chosen_tenant(actor, requested: int | None):
    if requested:
        return versions.require_policy_admin(actor, requested)
    admin_of = _admin_tenants(actor)
    if not admin_of:
        raise PermissionDenied("The policy pages are for admins.")
    working = current_tenant_id()
    return versions.require_policy_admin(actor, working if working in admin_of else admin_of[0])


@legacy.get("/")
def legacy_overview():
    tenant = _chosen_tenant(current_actor(), arg_id(request.args, "tenant"))
    return redirect(url_for("policy.overview", tenant_id=tenant.id), code=301)


@legacy.get("/<int:tenant_id>/versions/<int:policy_id>")
@legacy.get("/<int:tenant_id>/versions/<int:policy_id>/simulation")
def legacy_version(tenant_id: int, policy_id: int):
    versions.get_version(current_actor(), tenant_id, policy_id)  # theirs, or 403/404
    endpoint = "policy.simulate" if request.path.endswith("/simulation") else "policy.version"
    return redirect(url_for(endpoint, tenant_id=tenant_id, policy_id=policy_id,
                            **request.args.to_dict()), code=301)


@bp.get("/")
def overview(tenant_id: int):
    actor = current_actor()
    tenant = _chosen_tenant(actor, tenant_id or -1)
    history = db.session.scalars(select(PolicyVersion).where(
        PolicyVersion.tenant_id == tenant.id).order_by(PolicyVersion.version.desc())).all()

    return render_page(
        "policy/overview.html", tenant=tenant, versions=history,
        in_force=PolicyVersion.in_force(tenant.id), draft=versions.open_draft(tenant.id),
        switch=db.session.get(PolicyKillSwitch, tenant.id), now=utcnow(),
        admin_tenants=[db.session.get(type(tenant), t) for t in _admin_tenants(actor)],
        kill_form=forms.KillSwitchForm(formdata=None), lines=simulation.version_lines,
        qa_items=simulation.qa_queue(actor, tenant.id))


def _version_page(actor, tenant_id: int, policy_id: int, status: int = 200, **extra):
    policy = versions.get_version(actor, tenant_id, policy_id)
    base = (db.session.get(PolicyVersion, policy.based_on_id) if policy.based_on_id
            else None)
    settings = forms.SettingsForm(formdata=None, data={
        "max_auto_amount": policy.max_auto_amount or "",
        "daily_auto_count": policy.daily_auto_count if policy.daily_auto_count is not None else "",
        "daily_auto_amount": policy.daily_auto_amount or "", "qa_sample_pct": policy.qa_sample_pct,
        "qa_role": policy.qa_role, "fallback_steps": forms.steps_text(policy.fallback_steps),
        "expire_after_days": policy.expire_after_days or "", "note": policy.note or ""})
    context = dict(
        tenant=policy.tenant, policy=policy, base=base, now=utcnow(),
        diff=simulation.version_diff(base, policy), settings=settings,
        steps_text=forms.steps_text, points_text=forms.points_text,
        outcome_text=simulation.outcome_text, routing_words=simulation.routing_words,
        sla_kinds=forms.SLA_KINDS,
        activate_form=forms.ActivateForm(formdata=None), simulate_form=forms.SimulateForm(),
        actor_id=actor.user_id, rule_errors={}, rule_values={}, settings_errors={},
        step_up=actor.user is not None and factor_of(actor.user) is not None,
        step_up_passkey=actor.user is not None and bool(passkeys.passkeys_of(actor.user)),
        sim=None)
    context.update(_rule_form_context())
    context.update(extra)
    return render_page("policy/version.html", status=status, **context)


def _rule_form_context() -> dict:
    """What the rule form needs to show each kind its own fields and outcomes."""
    return dict(fields_by_kind=FIELDS_BY_KIND, kind_words=KIND_WORDS, type_words=TYPE_WORDS,
                rule_kinds=forms.RULE_KINDS, outcome_labels=dict(forms.OUTCOMES),
                outcomes_by_kind=versions.OUTCOMES_BY_KIND, rule_inputs=forms.RULE_INPUTS,
                case_roles=forms.CASE_ROLES, sla_priorities=forms.SLA_PRIORITIES)


@bp.get("/versions/<int:policy_id>")
def version(tenant_id: int, policy_id: int):
    return _version_page(current_actor(), tenant_id, policy_id)


@bp.get("/versions/<int:policy_id>/simulation")
def simulate(tenant_id: int, policy_id: int):
    actor = current_actor()
    form = forms.SimulateForm(request.args)
    days = form.days.data if form.validate() and form.days.data else 90
    result = simulation.simulate(actor, tenant_id, policy_id, days)
    if wants_fragment():
        policy = versions.get_version(actor, tenant_id, policy_id)
        return render_page("policy/version.html", "simulation", sim=result, policy=policy,
                           tenant=policy.tenant, routing_words=simulation.routing_words)
    return _version_page(actor, tenant_id, policy_id, sim=result)


@bp.post("/check")
def check(tenant_id: int):
    """Live validation of a condition as it is typed (htmx)."""
    versions.require_policy_admin(current_actor(), tenant_id)
    form = forms.ConditionForm()
    form.validate()
    kind = form.kind.data if form.kind.data in FIELDS_BY_KIND else "approval"
    error, used = _checked(form.condition.data or "", kind)
    return render_page("policy/_check.html", error=error, used=used)


@bp.post("/check-steps")
def check_steps(tenant_id: int):
    """Live validation of a rule's steps as they are typed (htmx)."""
    form = forms.StepsForm()
    form.validate()
    error, steps, warnings = versions.check_steps(current_actor(), tenant_id,
                                                  form.steps.data or "")
    return render_page("policy/_steps_check.html", error=error, steps=steps, warnings=warnings)


@bp.post("/versions/<int:policy_id>/rule-form")
def rule_form(tenant_id: int, policy_id: int):
    """The rule form after its kind changed: for htmx, the kind's part of the form (its fields
    to use in a condition, its outcomes and their inputs) and, out of band, the condition
    checked against that kind; without JS, the whole page with the form's values kept.
    Changes nothing."""
    actor = current_actor()
    policy = versions.get_version(actor, tenant_id, policy_id)
    form = forms.RuleForm()
    form.validate()
    values = forms.rule_values_for_kind(form.data, versions.OUTCOMES_BY_KIND)
    form_id = request.form.get("form_id", "")
    if not forms.RULE_FORM_ID.fullmatch(form_id):
        raise ValidationFailed("Unknown rule form.", {"form_id": "unknown form"})
    if not wants_fragment():
        return _version_page(actor, tenant_id, policy_id,
                             rule_values={int(form_id[1:]) if form_id != "new" else "new": values})
    error, used = _checked(values.get("condition") or "", values["kind"])
    return render_page("policy/_rule_kind.html", tenant=policy.tenant, policy=policy,
                       form_id=form_id, values=values, kind=values["kind"], errors={},
                       editable=policy.state == "draft" and policy.author_id == actor.user_id,
                       oob_check=True, error=error, used=used, **_rule_form_context())


def _checked(condition: str, kind: str) -> tuple[str | None, list[str]]:
    """A condition's live check: the problem, or the fields of `kind` it uses."""
    try:
        check_condition(condition, kind)
    except ValidationFailed as failed:
        return failed.message, []
    return None, [name for name in FIELDS_BY_KIND[kind] if name in condition]


@bp.post("/drafts")
def new_draft(tenant_id: int):
    draft = versions.create_draft(current_actor(), tenant_id)
    flash(f"Draft version {draft.version} created.", "success")
    return redirect(url_for("policy.version", tenant_id=tenant_id, policy_id=draft.id), code=303)


def _back(tenant_id: int, policy_id: int, anchor: str = ""):
    return redirect(url_for("policy.version", tenant_id=tenant_id, policy_id=policy_id)
                    + anchor, code=303)


@bp.post("/versions/<int:policy_id>/rules")
def save_rule(tenant_id: int, policy_id: int):
    actor = current_actor()
    form = forms.RuleForm()
    form.validate()
    rule_id = int(form.rule_id.data) if (form.rule_id.data or "").isdigit() else None
    with refused(ValidationFailed) as refusal:
        versions.save_rule(actor, tenant_id, policy_id, rule_id=rule_id, name=form.name.data,
                           condition=form.condition.data, outcome=form.outcome.data,
                           steps_text=form.steps.data or "", queue=form.queue.data,
                           kind=form.kind.data or "approval",
                           set_priority=form.set_priority.data,
                           assign_role=form.assign_role.data)
    if refusal:
        error = refusal.error
        key = rule_id or "new"
        return _version_page(actor, tenant_id, policy_id, status=422,
                             rule_errors={key: error.fields},
                             rule_values={key: form.data})
    flash("Rule saved.", "success")
    return _back(tenant_id, policy_id, "#rules")


@bp.post("/versions/<int:policy_id>/rules/<int:rule_id>/delete")
def delete_rule(tenant_id: int, policy_id: int, rule_id: int):
    versions.delete_rule(current_actor(), tenant_id, policy_id, rule_id)
    flash("Rule deleted.", "success")
    return _back(tenant_id, policy_id, "#rules")


@bp.post("/versions/<int:policy_id>/rules/<int:rule_id>/move")
def move_rule(tenant_id: int, policy_id: int, rule_id: int):
    direction = -1 if request.form.get("direction") == "up" else 1
    versions.move_rule(current_actor(), tenant_id, policy_id, rule_id, direction)
    return _back(tenant_id, policy_id, "#rules")


@bp.post("/versions/<int:policy_id>/settings")
def save_settings(tenant_id: int, policy_id: int):
    actor = current_actor()
    form = forms.SettingsForm()
    form.validate()
    errors: dict[str, str] = {}
    risk: dict = {name: request.form.get(f"risk_{name}", "") for name in forms.RISK_NUMBERS}
    for name in forms.RISK_POINTS:
        try:
            risk[name] = forms.parse_points(request.form.get(f"risk_{name}", ""), f"risk_{name}")
        except ValidationFailed as error:
            errors.update(error.fields)
    sla = {kind: {priority: request.form.get(f"sla_{kind}_{priority}", "").strip()
                  for priority in forms.SLA_PRIORITIES} for kind in forms.SLA_KINDS}
    with refused(ValidationFailed) as refusal:
        if errors:
            raise ValidationFailed("Some settings are not valid.", errors)
        versions.save_settings(
            actor, tenant_id, policy_id, max_auto_amount=form.max_auto_amount.data,
            daily_auto_count=form.daily_auto_count.data,
            daily_auto_amount=form.daily_auto_amount.data,
            qa_sample_pct=form.qa_sample_pct.data, qa_role=form.qa_role.data,
            fallback_steps_text=form.fallback_steps.data, risk=risk, sla_targets=sla,
            expire_after_days=form.expire_after_days.data, note=form.note.data)
    if refusal:
        error = refusal.error
        return _version_page(actor, tenant_id, policy_id, status=422,
                             settings_errors=error.fields)
    flash("Settings saved.", "success")
    return _back(tenant_id, policy_id, "#settings")


@bp.post("/versions/<int:policy_id>/submit")
def submit(tenant_id: int, policy_id: int):
    versions.submit_version(current_actor(), tenant_id, policy_id)
    flash("Submitted: another admin can now activate it.", "success")
    return _back(tenant_id, policy_id)


@bp.post("/versions/<int:policy_id>/return")
def return_to_draft(tenant_id: int, policy_id: int):
    versions.withdraw_version(current_actor(), tenant_id, policy_id)
    flash("Back to draft.", "success")
    return _back(tenant_id, policy_id)


@bp.post("/versions/<int:policy_id>/discard")
def discard(tenant_id: int, policy_id: int):
    versions.discard_draft(current_actor(), tenant_id, policy_id)
    flash("Draft discarded.", "success")
    return redirect(url_for("policy.overview", tenant_id=tenant_id), code=303)


def _parse_local(text: str, timezone: str) -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed("Give the time as YYYY-MM-DD HH:MM.",
                               {"effective_from": "YYYY-MM-DD HH:MM"}) from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=ZoneInfo(timezone))
    return local


@bp.post("/versions/<int:policy_id>/activate")
def activate(tenant_id: int, policy_id: int):
    actor = current_actor()
    form = forms.ActivateForm()
    form.validate()
    tenant = versions.require_policy_admin(actor, tenant_id)
    try:
        when = _parse_local(form.effective_from.data, tenant.timezone)
        policy = versions.activate_version(
            actor, tenant_id, policy_id, when, code=form.code.data, origin=request_origin(),
            passkey=passkeys.parse_answer(form.passkey.data) if form.passkey.data else None)
    except FactorRefused as factor_refused:
        commit_now("the failed check's audit event is kept (only it: the check comes first)")
        flash(factor_refused.message, "error")
        return _version_page(actor, tenant_id, policy_id, status=401)
    except ValidationFailed as error:
        flash(error.message, "error")  # the 422 answer keeps nothing of the request
        return _version_page(actor, tenant_id, policy_id, status=422)
    flash(f"Version {policy.version} activated.", "success")
    return _back(tenant_id, policy_id)


@bp.post("/versions/<int:policy_id>/passkey-options")
def activation_passkey_options(tenant_id: int, policy_id: int):
    """The options for the browser to step up with a passkey before activating (JSON, for
    app/static/passkeys.js); keeps a new challenge for the signed-in admin."""
    actor = current_actor()
    versions.get_version(actor, tenant_id, policy_id)  # an admin of this tenant's version
    with refused(DomainError, passkeys.PasskeyRefused) as refusal:
        options = passkeys.assertion_options(actor.user, request_origin(), "step_up_policy")
    if refusal:
        why = refusal.error
        return jsonify(error=why.message), 409
    return jsonify(options)


@bp.post("/kill-switch")
def kill_switch(tenant_id: int):
    actor = current_actor()
    form = forms.KillSwitchForm()
    form.validate()
    engage = form.engage.data == "on"
    with refused(ValidationFailed) as refusal:
        versions.set_kill_switch(actor, tenant_id, engage, form.reason.data or "")
    if refusal:
        error = refusal.error
        flash(error.message, "error")
        return redirect(url_for("policy.overview", tenant_id=tenant_id), code=303)
    flash("Auto-approval stopped." if engage else "Auto-approval resumed.", "success")
    return redirect(url_for("policy.overview", tenant_id=tenant_id), code=303)
