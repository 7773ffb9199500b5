"""The admin area (/admin: tenants, branding, closures, people, pending changes) and the
account pages everyone uses (/account: one's sessions, set a password from a mailed link, out
of office, the tenant's logo). Thin: each route checks who may see the page, parses a form,
calls one service function, then renders or redirects. A service's ValidationFailed re-renders
the form with the messages next to their fields."""
from __future__ import annotations

from collections import Counter

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from flask_login import current_user, logout_user

from app.access import allow, declare_access
from app.admin import groups as groups_service
from app.admin import (
    access,
    deactivation,
    delegation as delegation_service,
    password_links,
    people as people_service,
    reporting_lines,
    tenants as tenants_service,
)
from app.admin.forms import (
    BrandingForm,
    ClosureForm,
    DelegationForm,
    GroupForm,
    ManagerForm,
    MembershipForm,
    PersonForm,
    SetPasswordForm,
    SignInSettingsForm,
    SingleSignOnForm,
    TenantForm,
    choices,
)
from app.admin.models import PendingMembershipChange
from app.auth import services as auth_services
from app.auth import passkeys, second_factor, sso
from app.auth.forms import CodeForm, EmptyForm, PasskeyForm
from app.auth.session import current_session
from app.errors import DomainError, InvalidTransition, ValidationFailed
from app.models import Role
from app.params import arg_id
from app.unit_of_work import commit_now, refused
from app.web import current_actor, current_tenant_id, form_errors, render_page, request_origin
from app.webhooks.services import paused_subscriptions

bp = Blueprint("admin", __name__, url_prefix="/admin")
account = Blueprint("account", __name__, url_prefix="/account")
declare_access(bp, roles={Role.ADMIN})
declare_access(account, member=True)


@bp.app_template_filter("amount")
def amount_filter(value) -> str:
    """A stored amount (a Decimal, or its text in a JSON column) as 12,345.67."""
    from decimal import Decimal, InvalidOperation

    try:
        return f"{Decimal(str(value)):,.2f}"
    except InvalidOperation:
        return str(value)


def _require_csrf(form) -> None:
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            abort(400, "This form has expired or did not come from Cleardesk. Reload the page.")


def _page(template: str, tenant=None, status: int = 200, **context):
    actor = current_actor()
    return render_page(template, status=status, admin_tenants=access.admin_tenants(actor),
                       tenant=tenant, **context)


# ---------------------------------------------------------------------------------------------
# The admin area's front page and tenants.


@bp.get("/")
def index():
    actor = current_actor()
    tenants = access.admin_tenants(actor)
    if not tenants:
        abort(403, "The admin area is for admins.")
    pending = {t.id: len(people_service.pending_changes(actor, t)) for t in tenants}
    paused = Counter(sub.tenant_id for sub in paused_subscriptions(actor))
    return _page("admin/index.html", tenants=tenants, pending=pending, paused_counts=paused)


def _tenant_form_defaults(form: TenantForm) -> None:
    form.calendar_country.choices = choices(
        (code, f"{name} ({code})") for code, name in tenants_service.holiday_countries().items())


@bp.route("/tenants/new", methods=["GET", "POST"])
def new_tenant():
    actor = current_actor()
    if not access.admin_tenants(actor):
        abort(403, "Only admins can create tenants.")
    form = TenantForm()
    _tenant_form_defaults(form)
    failed = None
    if request.method == "GET":
        form.working_days.data = ["1", "2", "3", "4", "5"]
        form.work_start.data, form.work_end.data = "09:00", "17:00"
        form.calendar_country.data = "US"
    else:
        _require_csrf(form)
        with refused(ValidationFailed) as refusal:
            tenant = tenants_service.create_tenant(
                actor, slug=form.slug.data, name=form.name.data, currency=form.currency.data,
                timezone=form.timezone.data, calendar_country=form.calendar_country.data,
                working_days=form.working_days.data, work_start=form.work_start.data,
                work_end=form.work_end.data, max_item_amount=form.max_item_amount.data)
        if refusal:
            failed = refusal.error
        else:
            flash(f"{tenant.name} is created; you are its admin.", "success")
            return redirect(url_for("admin.tenant", slug=tenant.slug), code=303)
    return _page("admin/tenant_settings.html", form=form, creating=True,
                 errors=form_errors(form, failed), failed=failed,
                 timezones=sorted(tenants_service.timezone_names()),
                 status=422 if failed else 200)


@bp.route("/t/<slug>/", methods=["GET", "POST"])
def tenant(slug: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    form = TenantForm(obj=tenant if request.method == "GET" else None)
    _tenant_form_defaults(form)
    failed = None
    if request.method == "GET":
        form.working_days.data = [str(d) for d in tenant.working_days or []]
    else:
        _require_csrf(form)
        with refused(ValidationFailed) as refusal:
            tenants_service.update_tenant(
                actor, tenant, name=form.name.data, currency=form.currency.data,
                timezone=form.timezone.data, calendar_country=form.calendar_country.data,
                working_days=form.working_days.data, work_start=form.work_start.data,
                work_end=form.work_end.data, max_item_amount=form.max_item_amount.data,
                sla_reassign_on_breach=form.sla_reassign_on_breach.data)
        if refusal:
            failed = refusal.error
        else:
            flash("Settings saved.", "success")
            return redirect(url_for("admin.tenant", slug=slug), code=303)
    return _page("admin/tenant_settings.html", tenant=tenant, form=form, creating=False,
                 errors=form_errors(form, failed), failed=failed,
                 timezones=sorted(tenants_service.timezone_names()),
                 status=422 if failed else 200)


@bp.route("/t/<slug>/sign-in", methods=["GET", "POST"])
def sign_in_settings(slug: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    form = SignInSettingsForm(obj=tenant if request.method == "GET" else None)
    failed = None
    if request.method == "POST":
        _require_csrf(form)
        with refused(ValidationFailed) as refusal:
            tenants_service.update_sign_in_settings(
                actor, tenant, session_idle_minutes=form.session_idle_minutes.data,
                session_max_hours=form.session_max_hours.data,
                require_second_factor=form.require_second_factor.data,
                step_up_amount=form.step_up_amount.data)
        if refusal:
            failed = refusal.error
        else:
            flash("Sign-in settings saved.", "success")
            return redirect(url_for("admin.sign_in_settings", slug=slug), code=303)
    return _page("admin/sign_in_settings.html", tenant=tenant, form=form,
                 errors=form_errors(form, failed), failed=failed, status=422 if failed else 200)


@bp.route("/t/<slug>/single-sign-on", methods=["GET", "POST"])
def single_sign_on(slug: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    row = sso.settings_of(tenant.id)
    form = SingleSignOnForm(obj=row if request.method == "GET" else None)
    form.jit_role.choices = [(r, r) for r in sso.JIT_ROLES]
    failed = None
    if request.method == "GET":
        form.allowed_domains.data = ", ".join(row.allowed_domains or []) if row else ""
        form.jit_role.data = row.jit_role if row else sso.JIT_ROLES[0]
    else:
        _require_csrf(form)
        with refused(ValidationFailed) as refusal:
            sso.update_single_sign_on(
                actor, tenant, enabled=form.enabled.data, issuer=form.issuer.data,
                client_id=form.client_id.data, client_secret=form.client_secret.data,
                allowed_domains=form.allowed_domains.data, jit_enabled=form.jit_enabled.data,
                jit_role=form.jit_role.data,
                password_sign_in_off=form.password_sign_in_off.data)
        if refusal:
            failed = refusal.error
        else:
            flash("Single sign-on settings saved.", "success")
            return redirect(url_for("admin.single_sign_on", slug=slug), code=303)
    return _page("admin/single_sign_on.html", tenant=tenant, form=form, settings=row,
                 has_secret=bool(row and row.client_secret_encrypted),
                 redirect_uri=url_for("auth.sso_callback", _external=True),
                 sign_in_link=url_for("auth.login", tenant=tenant.slug, _external=True),
                 errors=form_errors(form, failed), failed=failed, status=422 if failed else 200)


@bp.route("/t/<slug>/branding", methods=["GET", "POST"])
def branding(slug: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    form = BrandingForm(obj=tenant if request.method == "GET" else None)
    failed = None
    if request.method == "POST":
        _require_csrf(form)
        upload = request.files.get("logo")
        with refused(ValidationFailed) as refusal:
            tenants_service.update_branding(actor, tenant, brand_name=form.brand_name.data,
                                     brand_color=form.brand_color.data)
            if upload and upload.filename:
                # Read one byte past the limit: enough to know it is too large.
                tenants_service.set_logo(actor, tenant,
                                  upload.stream.read(tenants_service.MAX_LOGO_BYTES + 1))
        if refusal:
            failed = refusal.error
        else:
            flash("Branding saved.", "success")
            return redirect(url_for("admin.branding", slug=slug), code=303)
    return _page("admin/branding.html", tenant=tenant, form=form, errors=form_errors(form, failed),
                 failed=failed, max_logo_kb=tenants_service.MAX_LOGO_BYTES // 1024,
                 status=422 if failed else 200)


@bp.post("/t/<slug>/branding/logo/remove")
def remove_logo(slug: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    _require_csrf(EmptyForm())
    tenants_service.remove_logo(actor, tenant)
    flash("Logo removed.", "success")
    return redirect(url_for("admin.branding", slug=slug), code=303)


@bp.route("/t/<slug>/closures", methods=["GET", "POST"])
def closures(slug: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    form = ClosureForm()
    failed = None
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            with refused(ValidationFailed) as refusal:
                tenants_service.add_closure(actor, tenant, first_day=form.first_day.data,
                                     last_day=form.last_day.data, reason=form.reason.data)
            if refusal:
                failed = refusal.error
            else:
                flash("Closure added: the SLA clock does not run on it.", "success")
                return redirect(url_for("admin.closures", slug=slug), code=303)
        elif "csrf_token" in form.errors:
            abort(400)
        status = 422
    return _page("admin/closures.html", tenant=tenant, form=form,
                 closures=tenants_service.closures_of(actor, tenant), errors=form_errors(form, failed),
                 status=status)


@bp.route("/t/<slug>/groups", methods=["GET", "POST"])
@bp.route("/t/<slug>/groups/<int:group_id>", methods=["GET", "POST"])
def groups(slug: str, group_id: int | None = None):
    """Approver groups: the list, a new group, or one group's name and members."""
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    group = groups_service.group_for_admin(actor, tenant, group_id) if group_id else None
    form = GroupForm(data={"name": group.name, "members": sorted(group.member_ids)}
                     if group and request.method == "GET" else None)
    members = [m for m in access.members_of(actor, tenant) if m.user.active]
    form.members.choices = choices((m.user_id, f"{m.user.name} ({m.user.email})")
                                   for m in members)
    failed = None
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            with refused(ValidationFailed) as refusal:
                if group is None:
                    groups_service.create_group(actor, tenant, name=form.name.data,
                                                member_ids=form.members.data)
                else:
                    groups_service.update_group(actor, tenant, group.id, name=form.name.data,
                                                member_ids=form.members.data)
            if refusal:
                failed = refusal.error
            else:
                flash("Group saved: policy steps that name it route to its members from now on.",
                      "success")
                return redirect(url_for("admin.groups", slug=slug), code=303)
        elif "csrf_token" in form.errors:
            abort(400)
        status = 422
    return _page("admin/groups.html", tenant=tenant, form=form, group=group,
                 groups=groups_service.groups_of(actor, tenant), errors=form_errors(form, failed),
                 failed=failed, status=status)


@bp.post("/t/<slug>/closures/<int:closure_id>/remove")
def remove_closure(slug: str, closure_id: int):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    _require_csrf(EmptyForm())
    tenants_service.remove_closure(actor, tenant, closure_id)
    flash("Closure removed.", "success")
    return redirect(url_for("admin.closures", slug=slug), code=303)


# ---------------------------------------------------------------------------------------------
# People.


@bp.get("/t/<slug>/people")
def people(slug: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    return _page("admin/people.html", tenant=tenant, members=access.members_of(actor, tenant),
                 changes=people_service.pending_changes(actor, tenant))


@bp.route("/t/<slug>/people/new", methods=["GET", "POST"])
def new_person(slug: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    form = PersonForm()
    failed = None
    status = 200
    if request.method == "GET":
        form.roles.data = [Role.REQUESTER.value]
        form.approval_limit.data = "0.00"
    elif form.validate_on_submit():
        with refused(ValidationFailed) as refusal:
            user, invited = people_service.invite_user(
                actor, tenant, email=form.email.data, name=form.name.data,
                roles=form.roles.data, approval_limit=form.approval_limit.data)
        if refusal:
            failed, status = refusal.error, 422
        else:
            flash(f"{user.name} is invited: a mail with a link to set a password is on its way."
                  if invited else f"{user.name} already had an account and is now a member.",
                  "success")
            return redirect(url_for("admin.person", slug=slug, user_id=user.id), code=303)
    else:
        if "csrf_token" in form.errors:
            abort(400)
        status = 422
    return _page("admin/person_new.html", tenant=tenant, form=form,
                 errors=form_errors(form, failed), status=status)


def _person_page(actor, tenant, membership, form=None, delegation_form=None, failed=None,
                 delegation_failed=None, status=200, manager_form=None, manager_failed=None):
    if form is None:
        form = MembershipForm()
        form.roles.data = sorted(membership.role_set)
        form.approval_limit.data = f"{membership.approval_limit:.2f}"
    if delegation_form is None:
        delegation_form = _delegation_form(membership)
    if manager_form is None:
        manager_form = ManagerForm(formdata=None)
        manager_form.manager_id.data = membership.manager_id
    pending = [c for c in people_service.pending_changes(actor, tenant)
               if c.user_id == membership.user_id]
    return _page("admin/person.html", tenant=tenant, m=membership, person=membership.user,
                 form=form, errors=form_errors(form, failed), dform=delegation_form,
                 derrors=form_errors(delegation_form, delegation_failed), pending=pending,
                 colleagues=delegation_service.possible_delegates(tenant.id, membership.user_id),
                 mform=manager_form, merrors=form_errors(manager_form, manager_failed),
                 managers=reporting_lines.possible_managers(tenant.id, membership.user_id),
                 sso_link=sso.link_of(tenant.id, membership.user_id),
                 sso_settings=sso.settings_of(tenant.id), status=status)


def _delegation_form(membership) -> DelegationForm:
    form = DelegationForm(formdata=None)
    form.tenant_id.data = membership.tenant_id
    form.delegate_id.data = membership.delegate_id
    form.first_day.data, form.last_day.data = membership.delegate_from, membership.delegate_until
    form.kinds.data = membership.delegate_kinds or []
    form.max_amount.data = (f"{membership.delegate_max_amount:.2f}"
                            if membership.delegate_max_amount is not None else "")
    return form


@bp.route("/t/<slug>/people/<int:user_id>", methods=["GET", "POST"])
def person(slug: str, user_id: int):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    membership = access.member_for_admin(actor, tenant, user_id)
    if request.method == "GET":
        return _person_page(actor, tenant, membership)
    form = MembershipForm()
    _require_csrf(form)
    with refused(ValidationFailed) as refusal:
        result = people_service.change_membership(actor, tenant, user=membership.user,
                                            roles=form.roles.data,
                                            approval_limit=form.approval_limit.data)
    if refusal:
        error = refusal.error
        return _person_page(actor, tenant, membership, form=form, failed=error, status=422)
    if isinstance(result, PendingMembershipChange):
        flash("A change to your own roles or limit needs a second admin: it waits for another "
              "admin of this tenant to approve it.", "info")
    else:
        flash("Roles and limit saved.", "success")
    return redirect(url_for("admin.person", slug=slug, user_id=user_id), code=303)


def _person_action(slug: str, user_id: int, action, done: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    access.member_for_admin(actor, tenant, user_id)
    _require_csrf(EmptyForm())
    user = action(actor, tenant, user_id)
    flash(done.format(name=user.name), "success")
    return redirect(url_for("admin.person", slug=slug, user_id=user_id), code=303)


@bp.post("/t/<slug>/people/<int:user_id>/deactivate")
def deactivate(slug: str, user_id: int):
    return _person_action(slug, user_id, deactivation.deactivate_user,
                          "{name} is deactivated: signed out everywhere, claims released, open "
                          "steps routed to others.")


@bp.post("/t/<slug>/people/<int:user_id>/remove")
def remove_member(slug: str, user_id: int):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    access.member_for_admin(actor, tenant, user_id)
    _require_csrf(EmptyForm())
    user = deactivation.remove_member(actor, tenant, user_id)
    flash(f"{user.name} is no longer a member of {tenant.display_name}.", "success")
    return redirect(url_for("admin.people", slug=slug), code=303)


@bp.post("/t/<slug>/people/<int:user_id>/sso-unlink")
def unlink_sso(slug: str, user_id: int):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    membership = access.member_for_admin(actor, tenant, user_id)
    _require_csrf(EmptyForm())
    forgotten = sso.unlink_subject(actor, tenant, membership.user)
    if forgotten is None:
        flash(f"{membership.user.name} has no single sign-on identity linked here.", "info")
    else:
        flash(f"{membership.user.name}'s single sign-on identity is forgotten: their next "
              "sign-in through the provider matches them by verified email again.", "success")
    return redirect(url_for("admin.person", slug=slug, user_id=user_id), code=303)


@bp.post("/t/<slug>/people/<int:user_id>/reactivate")
def reactivate(slug: str, user_id: int):
    return _person_action(slug, user_id, deactivation.reactivate_user, "{name} is active again.")


@bp.post("/t/<slug>/people/<int:user_id>/reset-password")
def reset_password(slug: str, user_id: int):
    return _person_action(slug, user_id, people_service.request_password_reset,
                          "A link to set a new password is on its way to {name}.")


@bp.post("/t/<slug>/people/<int:user_id>/delegation")
def delegation(slug: str, user_id: int):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    membership = access.member_for_admin(actor, tenant, user_id)
    form = DelegationForm()
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            abort(400)
        return _person_page(actor, tenant, membership, delegation_form=form, status=422)
    with refused(ValidationFailed) as refusal:
        delegation_service.set_delegation(actor, tenant.id, user_id, delegate_id=form.delegate_id.data,
                                first_day=form.first_day.data, last_day=form.last_day.data,
                                kinds=form.kinds.data, max_amount=form.max_amount.data)
    if refusal:
        error = refusal.error
        return _person_page(actor, tenant, membership, delegation_form=form,
                            delegation_failed=error, status=422)
    flash("Out of office saved.", "success")
    return redirect(url_for("admin.person", slug=slug, user_id=user_id), code=303)


@bp.post("/t/<slug>/people/<int:user_id>/manager")
def manager(slug: str, user_id: int):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    membership = access.member_for_admin(actor, tenant, user_id)
    form = ManagerForm()
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            abort(400)
        return _person_page(actor, tenant, membership, manager_form=form, status=422)
    with refused(ValidationFailed) as refusal:
        reporting_lines.set_manager(actor, tenant, user_id, form.manager_id.data)
    if refusal:
        error = refusal.error
        return _person_page(actor, tenant, membership, manager_form=form,
                            manager_failed=error, status=422)
    flash("Reporting line saved.", "success")
    return redirect(url_for("admin.person", slug=slug, user_id=user_id), code=303)


@bp.post("/t/<slug>/people/<int:user_id>/delegation/clear")
def clear_delegation(slug: str, user_id: int):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    access.member_for_admin(actor, tenant, user_id)
    _require_csrf(EmptyForm())
    delegation_service.clear_delegation(actor, tenant.id, user_id)
    flash("Out of office ended.", "success")
    return redirect(url_for("admin.person", slug=slug, user_id=user_id), code=303)


@bp.post("/t/<slug>/changes/<int:change_id>/approve")
def approve_change(slug: str, change_id: int):
    return _decide_change(slug, change_id, "approve")


@bp.post("/t/<slug>/changes/<int:change_id>/reject")
def reject_change(slug: str, change_id: int):
    return _decide_change(slug, change_id, "reject")


def _decide_change(slug: str, change_id: int, decision: str):
    actor = current_actor()
    tenant = access.tenant_for_admin(actor, slug)
    _require_csrf(EmptyForm())
    if decision == "approve":
        people_service.approve_change(actor, tenant, change_id)
        flash("Change approved and in effect.", "success")
    else:
        people_service.reject_change(actor, tenant, change_id)
        flash("Change rejected.", "success")
    return redirect(url_for("admin.people", slug=slug), code=303)


# ---------------------------------------------------------------------------------------------
# Account pages.


@account.get("/")
def index():
    memberships = sorted(current_user.memberships, key=lambda m: m.tenant.name)
    # Times in the tenant being worked in, else the person's first tenant (UTC without one).
    tenant = next((m.tenant for m in memberships if m.tenant_id == current_tenant_id()),
                  memberships[0].tenant if memberships else None)
    return render_page("admin/account.html", tenant=tenant,
                       has_factor=second_factor.factor_of(current_user) is not None,
                       passkey_count=len(passkeys.passkeys_of(current_user)),
                       sessions=auth_services.open_sessions(current_user),
                       current=current_session())


# ---------------------------------------------------------------------------------------------
# The second factor.


def _factor_page(status: int = 200, **context):
    user = current_user
    pending = second_factor.pending_enrolment(user)
    uri = second_factor.provisioning_uri(user, pending) if pending else None
    return render_page("admin/second_factor.html", status=status, form=CodeForm(),
                       factor=second_factor.factor_of(user), pending=pending,
                       secret=second_factor.secret_for_display(pending) if pending else None,
                       qr_svg=second_factor.qr_code_svg(uri) if uri else None,
                       codes_left=second_factor.recovery_codes_left(user.id),
                       required=second_factor.factor_required(user),
                       passkeys=passkeys.passkeys_of(user),
                       passkey_form=context.pop("passkey_form", None) or PasskeyForm(formdata=None),
                       **context)


@account.get("/second-factor", endpoint="second_factor")
def second_factor_page():
    return _factor_page()


@account.post("/second-factor/start")
def start_second_factor():
    _require_csrf(EmptyForm())
    second_factor.start_enrolment(current_actor())
    return redirect(url_for("account.second_factor"), code=303)


def _with_code(action):
    """Run `action(actor, code)`; a refused code is kept in the audit trail (commit) and
    re-renders the page with the message."""
    form = CodeForm()
    _require_csrf(form)
    try:
        result = action(current_actor(), form.code.data or "")
    except second_factor.FactorRefused as factor_refused:
        commit_now("a wrong code is on record (and counts against the attempts)")
        return None, _factor_page(status=422, error=factor_refused.message)
    return result, None


@account.post("/second-factor/confirm")
def confirm_second_factor():
    codes, refused = _with_code(second_factor.confirm_enrolment)
    if refused is not None:
        return refused
    # Shown once, in this answer only (never stored in clear, never in a redirect).
    return _factor_page(new_codes=codes)


@account.post("/second-factor/recovery-codes")
def renew_recovery_codes():
    codes, refused = _with_code(second_factor.regenerate_recovery_codes)
    if refused is not None:
        return refused
    return _factor_page(new_codes=codes)


@account.post("/second-factor/disable")
def disable_second_factor():
    _result, refused = _with_code(second_factor.disable_factor)
    if refused is not None:
        return refused
    flash("Your second factor is off.", "success")
    return redirect(url_for("account.second_factor"), code=303)


@account.post("/passkeys/options")
def passkey_options():
    """The options for the browser to make a passkey (JSON, for app/static/passkeys.js); a new
    challenge is kept, so this is a POST (the CSRF token comes in the X-CSRFToken header)."""
    with refused(DomainError, passkeys.PasskeyRefused) as refusal:
        options = passkeys.registration_options(current_actor(), request_origin())
    if refusal:
        why = refusal.error
        return jsonify(error=why.message), 409
    return jsonify(options)


@account.post("/passkeys")
def add_passkey():
    form = PasskeyForm()
    _require_csrf(form)
    if form.errors:
        return _factor_page(status=422, passkey_form=form,
                            passkey_error="Name the passkey, then add it with your browser.")
    try:
        added = passkeys.register_passkey(current_actor(), request_origin(), form.name.data,
                                          passkeys.parse_answer(form.credential.data))
    except passkeys.PasskeyRefused as passkey_refused:
        commit_now("the failure's audit event is kept")
        return _factor_page(status=422, passkey_form=form, passkey_error=passkey_refused.message)
    except ValidationFailed as failed:  # the 422 answer keeps nothing of the request
        return _factor_page(status=422, passkey_form=form, passkey_error=failed.message)
    flash(f"Passkey \"{added.name}\" added: use it when Cleardesk asks for your second factor.",
          "success")
    return redirect(url_for("account.second_factor"), code=303)


@account.post("/passkeys/<int:passkey_id>/remove")
def remove_passkey(passkey_id: int):
    _require_csrf(EmptyForm())
    with refused(InvalidTransition) as refusal:
        removed = passkeys.remove_passkey(current_actor(), passkey_id)
    if refusal:
        why = refusal.error
        return _factor_page(status=409, passkey_error=why.message)
    flash(f"Passkey \"{removed.name}\" removed.", "success")
    return redirect(url_for("account.second_factor"), code=303)


@account.post("/sessions/end-others")
def end_other_sessions():
    _require_csrf(EmptyForm())
    ended = auth_services.end_other_sessions(current_actor(), current_session().id)
    flash(f"Signed out everywhere else: {len(ended)} other session"
          f"{'' if len(ended) == 1 else 's'} ended." if ended
          else "You had no other sessions.", "success")
    return redirect(url_for("account.index"), code=303)


@account.post("/sessions/<session_id>/end")
def end_session(session_id: str):
    _require_csrf(EmptyForm())
    ended = auth_services.end_session(current_actor(), session_id)
    current = ended.id == current_session().id
    if current:  # ended from its own page: as signing out
        logout_user()
        session.clear()
        flash("You are signed out.", "info")
        return redirect(url_for("auth.login"), code=303)
    flash(f"Session ended: {ended.browser} is signed out.", "success")
    return redirect(url_for("account.index"), code=303)


@account.route("/set-password/<token>", methods=["GET", "POST"])
@allow(anonymous=True)
def set_password(token: str):
    """Opening the link (GET) changes nothing (mail scanners open every link); the form posts."""
    link = password_links.password_link(token)
    form = SetPasswordForm()
    failed = None
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            with refused(ValidationFailed) as refusal:
                # Signed in as the person (a reset while signed in): this session stays.
                password_links.set_password_with_link(
                    token, form.password.data, form.confirm.data, request.remote_addr,
                    request.user_agent.string,
                    keep_session_id=auth_services.session_id_of(current_user.get_id()))
            if refusal:
                failed = refusal.error
            else:
                flash("Your password is set. Sign in with it.", "success")
                return redirect(url_for("auth.login"), code=303)
        elif "csrf_token" in form.errors:
            abort(400)
        status = 422
    # The invitation is in the tenant's branding (white-label) before anyone signs in.
    return render_page("admin/set_password.html", status=status, form=form, link=link,
                       nav_brand=link.tenant,
                       errors=form_errors(form, failed))


@account.route("/out-of-office", methods=["GET", "POST"])
@allow(roles=delegation_service.DELEGATING_ROLES, methods=["POST"])  # anyone may look at it
def out_of_office():
    actor = current_actor()
    memberships = sorted(
        (m for m in current_user.memberships
         if m.role_set & delegation_service.DELEGATING_ROLES),
        key=lambda m: m.tenant.name)
    forms = {m.tenant_id: _delegation_form(m) for m in memberships}
    errors: dict[int, dict] = {}
    status = 200
    if request.method == "POST":
        form = DelegationForm()
        tenant_id = arg_id(request.form, "tenant_id")
        delegation_service.delegation_membership(actor, tenant_id, actor.user_id)
        if not form.validate_on_submit():
            if "csrf_token" in form.errors:
                abort(400)
            forms[tenant_id], errors[tenant_id], status = form, form_errors(form), 422
        else:
            with refused(ValidationFailed) as refusal:
                delegation_service.set_delegation(actor, tenant_id, actor.user_id,
                                        delegate_id=form.delegate_id.data,
                                        first_day=form.first_day.data,
                                        last_day=form.last_day.data, kinds=form.kinds.data,
                                        max_amount=form.max_amount.data)
            if refusal:
                error = refusal.error
                forms[tenant_id], errors[tenant_id], status = form, form_errors(form, error), 422
            else:
                flash("Out of office saved.", "success")
                return redirect(url_for("account.out_of_office"), code=303)
    return render_page("admin/out_of_office.html", status=status, memberships=memberships,
                       forms=forms, errors=errors,
                       colleagues={m.tenant_id: delegation_service.possible_delegates(m.tenant_id,
                                                                            actor.user_id)
                                   for m in memberships})


@account.post("/out-of-office/clear")
@allow(roles=delegation_service.DELEGATING_ROLES)
def clear_out_of_office():
    actor = current_actor()
    tenant_id = arg_id(request.form, "tenant_id")
    delegation_service.delegation_membership(actor, tenant_id, actor.user_id)
    _require_csrf(EmptyForm())
    delegation_service.clear_delegation(actor, tenant_id, actor.user_id)
    flash("Welcome back: out of office ended.", "success")
    return redirect(url_for("account.out_of_office"), code=303)


@account.get("/logo/<slug>")
def logo(slug: str):
    stored = tenants_service.logo_for_member(current_actor(), slug)
    response = Response(stored.data, mimetype=stored.content_type)
    response.headers["Cache-Control"] = "private, max-age=86400"
    response.headers["Content-Disposition"] = "inline"
    response.set_etag(stored.sha256)
    return response.make_conditional(request)
