"""Sign-in, sign-out and switching the tenant the user is working in."""
from __future__ import annotations

import time

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user

from app.access import allow, declare_access
from app.actors import Actor, ActorType
from app.auth import passkeys
from app.auth.forms import (
    EmptyForm,
    ForgotPasswordForm,
    LoginForm,
    PasskeySignInForm,
    SecondStepForm,
)
from app.auth.services import (
    RESET_REQUESTED,
    sign_in_with_passkey,
    ResetThrottled,
    SecondFactorNeeded,
    SignInRefused,
    authenticate,
    complete_sign_in,
    request_password_reset,
    session_id_of,
    sign_out,
)
from app.auth.sso import (
    PendingSignIn,
    SingleSignOnRefused,
    begin_sign_in,
    finish_sign_in,
    sso_tenant_named,
)
from app.errors import NotFound
from app.extensions import db
from app.models import User
from app.params import local_path, whole_number
from app import rate_limits
from app.unit_of_work import commit_now, refused
from app.web import current_actor, request_origin

bp = Blueprint("auth", __name__)
PASSKEY_OPTIONS_PER_MINUTE = 20
declare_access(bp, member=True)


def _safe_next(target: str | None) -> str:
    return local_path(target) or url_for("queues.home")


@bp.route("/login", methods=["GET", "POST"])
@allow(anonymous=True)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("queues.home"))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        ip, agent = request.remote_addr, request.user_agent.string
        try:
            user = authenticate(form.email.data, form.password.data, ip, agent)
        except SignInRefused as refused:
            commit_now("the failure count and its audit event are kept")
            error = refused.message
        except SecondFactorNeeded as needed:
            # The signed session cookie carries who passed the password, for a few minutes.
            session.clear()
            session[PENDING_KEY] = {"user_id": needed.user.id,
                                    "until": time.time() + PENDING_SECONDS,
                                    "next": local_path(request.args.get("next"))}
            return redirect(url_for("auth.login_code"), code=303)
        else:
            session.clear()  # a fresh session (and CSRF token) on sign-in
            login_user(user)
            return redirect(_safe_next(request.args.get("next")), code=303)
    status = 401 if error else (400 if form.errors else 200)
    return render_template("auth/login.html", form=form, error=error,
                           sso_tenant=sso_tenant_named(request.args.get("tenant"))), status


PENDING_KEY = "second_factor_pending"
PENDING_SECONDS = 5 * 60


def _pending_sign_in() -> dict | None:
    """Who passed the password in this browser, while the time for the second step lasts."""
    pending = session.get(PENDING_KEY)
    if not isinstance(pending, dict) or pending.get("until", 0) < time.time():
        return None
    return pending


@bp.route("/login/code", methods=["GET", "POST"])
@allow(anonymous=True)
def login_code():
    """The second step of signing in, for people with a second factor: a code from their app
    or a recovery code, or one of their passkeys."""
    pending = _pending_sign_in()
    if pending is None:
        session.pop(PENDING_KEY, None)
        flash("Sign in again: the time to enter your code ran out.", "info")
        return redirect(url_for("auth.login"), code=303)
    form = SecondStepForm()
    error = None
    if form.validate_on_submit():
        try:
            user = complete_sign_in(
                int(pending["user_id"]), form.code.data or "", request.remote_addr,
                request.user_agent.string, origin=request_origin(),
                passkey=passkeys.parse_answer(form.passkey.data) if form.passkey.data else None)
        except SignInRefused as refused:
            commit_now("the failure and its audit event are kept")
            error = refused.message
        else:
            next_path = pending.get("next")
            session.clear()
            login_user(user)
            return redirect(_safe_next(next_path), code=303)
    elif request.method == "POST" and "csrf_token" in form.errors:
        abort(400)
    user = db.session.get(User, int(pending["user_id"]))
    methods = passkeys.factor_methods([user.id])[user.id] if user else set()
    status = 401 if error else (400 if form.errors else 200)
    return render_template("auth/login_code.html", form=form, error=error,
                           has_totp="totp" in methods, has_passkey="passkey" in methods), status


@bp.post("/login/code/passkey-options")
@allow(anonymous=True)
def login_code_passkey_options():
    """The options for the browser to sign the second step with a passkey (JSON, for
    app/static/passkeys.js); keeps a new challenge for the person who passed the password."""
    pending = _pending_sign_in()
    user = db.session.get(User, int(pending["user_id"])) if pending else None
    if user is None or not user.active:
        return jsonify(error="Sign in again: the time to use your passkey ran out."), 409
    with refused(NotFound, passkeys.PasskeyRefused) as refusal:
        options = passkeys.assertion_options(user, request_origin(), "sign_in")
    if refusal:
        why = refusal.error
        return jsonify(error=why.message), 409
    return jsonify(options)


@bp.post("/login/passkey/options")
@allow(anonymous=True)
def passkey_sign_in_options():
    """The options for the browser to sign in with a passkey alone (JSON, for
    app/static/passkeys.js); keeps a new challenge, which belongs to no one yet."""
    if current_user.is_authenticated:
        return jsonify(error="You are signed in already. Reload the page."), 409
    # Anyone may ask, and each answer keeps a challenge: a few a minute per address is plenty
    # for a person and bounds what a script can make Cleardesk store.
    limit = rate_limits.take("passkey-options", request.remote_addr or "-",
                             PASSKEY_OPTIONS_PER_MINUTE)
    if limit is not None and limit.exceeded:
        return jsonify(error="Too many passkey sign-ins from this address: try again in a "
                             "minute, or sign in with your password."), 429, {
            "Retry-After": str(limit.retry_after)}
    options = passkeys.sign_in_options(request_origin())
    return jsonify(options)


@bp.post("/login/passkey")
@allow(anonymous=True)
def passkey_sign_in():
    """Sign in with a passkey alone: the browser's answer to the options above."""
    if current_user.is_authenticated:
        return redirect(url_for("queues.home"))
    form = PasskeySignInForm()
    status = 401
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            abort(400)
        error = "Your browser sent no passkey. Try again, or sign in with your password."
        status = 400
    else:
        try:
            user = sign_in_with_passkey(passkeys.parse_answer(form.passkey.data),
                                        request_origin(), request.remote_addr,
                                        request.user_agent.string)
        except SignInRefused as refused:
            commit_now("the failure count and its audit event are kept")
            error = refused.message
        else:
            session.clear()  # a fresh session (and CSRF token) on sign-in
            login_user(user)
            return redirect(_safe_next(request.args.get("next")), code=303)
    return render_template("auth/login.html", form=LoginForm(formdata=None),
                           passkey_error=error,
                           sso_tenant=sso_tenant_named(request.args.get("tenant"))), status


SSO_PENDING_KEY = "sso_pending"


@bp.get("/login/sso/<slug>")
@allow(anonymous=True)
def sso_start(slug: str):
    """Leave for the tenant's identity provider. Only the browser's session changes (what
    the callback needs to check); a provider that cannot be reached is audited."""
    if current_user.is_authenticated:
        return redirect(url_for("queues.home"))
    actor = Actor(ActorType.USER, label="single sign-on", ip=request.remote_addr,
                  user_agent=request.user_agent.string)
    try:
        url, pending = begin_sign_in(actor, slug, url_for("auth.sso_callback", _external=True),
                                     local_path(request.args.get("next")))
    except NotFound as missing:
        return render_template("auth/sso_refused.html", message=missing.message), 404
    except SingleSignOnRefused as refused:
        commit_now("the failure's audit event is kept, with an error page")
        return render_template("auth/sso_refused.html", message=refused.message), 502
    session[SSO_PENDING_KEY] = pending.as_dict()
    return redirect(url, code=303)


@bp.get("/login/sso/callback")
@allow(anonymous=True)
def sso_callback():
    """Where the provider sends the browser back (a GET, as OpenID Connect does it): the
    state ties it to the flow this browser started, which is used once."""
    pending = PendingSignIn.from_dict(session.pop(SSO_PENDING_KEY, None) or {})
    try:
        user = finish_sign_in(pending, request.args.to_dict(), request.remote_addr,
                              request.user_agent.string)
    except SingleSignOnRefused as refused:
        commit_now("the refusal and its audit event are kept, with an error page")
        return render_template("auth/sso_refused.html", message=refused.message), \
            400 if pending is None else 403
    commit_now("the provider's answer comes as a GET (as OpenID Connect does it): the "
               "sign-in it completes is saved")
    session.clear()  # a fresh session (and CSRF token) on sign-in
    login_user(user)
    return redirect(_safe_next(pending.next), code=303)


@bp.route("/auth/forgot", methods=["GET", "POST"])
@allow(anonymous=True)
def forgot_password():
    """The same answer whether or not an account has the address (no enumeration)."""
    form = ForgotPasswordForm()
    status, error, sent = 200, None, False
    if form.validate_on_submit():
        try:
            request_password_reset(form.email.data, request.remote_addr,
                                   request.user_agent.string)
        except ResetThrottled as refused:
            error, status = refused.message, refused.status
        else:
            sent = True
        commit_now("the throttle counts and the audit event are kept, also on refusal")
    elif request.method == "POST":
        if "csrf_token" in form.errors:
            abort(400)
        status = 400
    return render_template("auth/forgot.html", form=form, error=error, sent=sent,
                           message=RESET_REQUESTED), status


@bp.get("/ping")
def ping():
    """The cheapest signed-in page (session and user load, nothing else): the ceiling that
    `make bench` measures the real pages against."""
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.post("/logout")
def logout():
    if not EmptyForm().validate_on_submit():
        abort(400)
    sign_out(current_actor(), session_id_of(current_user.get_id()))
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"), code=303)


@bp.post("/tenant")
def switch_tenant():
    form = EmptyForm()
    tenant_id = whole_number(request.form.get("tenant_id") or "0", "tenant_id")  # 0: all
    if not form.validate_on_submit():
        abort(400)
    if not tenant_id:
        session.pop("tenant_id", None)  # all of my tenants
    elif current_user.membership_in(tenant_id) is None:
        abort(404)
    else:
        session["tenant_id"] = tenant_id
    return redirect(_safe_next(request.form.get("next")), code=303)
