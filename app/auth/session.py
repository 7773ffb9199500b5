"""Flask-Login wiring: loading the user from the session cookie (and the server-side session
record it names), and what an anonymous request gets."""
from __future__ import annotations

from flask import Flask, flash, g, redirect, request, session, url_for
from flask_htmx import make_response as htmx_response
from flask_login import current_user

from app.auth.models import SessionEndReason, UserSession
from app.auth.services import end_timed_out_session, note_session_seen, recognise_session
from app.extensions import htmx, login_manager
from app.models import User
from app.params import path_of_url
from app.types import utcnow
from app.unit_of_work import commit_now


def install_login(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"

    # Also what a remember cookie holds (Flask-Login copies the session's id into it), so one
    # would name the same session record and die with it.
    @login_manager.user_loader
    def load_user(login_id: str) -> User | None:
        recognised = recognise_session(login_id)
        if recognised is None:
            return None
        user, row, limits = recognised
        reason = limits.reason_to_end(row, utcnow())
        if reason is not None:
            end_timed_out_session(row, reason, limits)
            g.session_timed_out = reason
            return None
        g.user_session = row
        g.must_enrol = limits.must_enrol
        return user

    @app.before_request
    def _note_session_seen():
        # Before the view has changed anything, so the write (a last-seen time, or the end of
        # a timed-out session) can be committed on its own (as an API token's last use).
        # Static files need no user.
        if request.endpoint == "static" or (
                "_user_id" not in session
                and app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
                not in request.cookies):
            return
        if current_user.is_authenticated:
            if note_session_seen(g.user_session):
                commit_now("a session's last use is kept whatever the request does")
            if g.get("must_enrol") and request.endpoint not in ENROLMENT_ENDPOINTS:
                return enrolment_redirect()
        elif "session_timed_out" in g:
            commit_now("the timed-out session's end is kept")
            flash("Your session ended: "
                  + ("it was open longer than your organisation allows."
                     if g.session_timed_out is SessionEndReason.ABSOLUTE_TIMEOUT
                     else "no activity for longer than your organisation allows."), "info")

    @login_manager.unauthorized_handler
    def unauthorized():
        flash(login_manager.login_message, login_manager.login_message_category)
        return sign_in_redirect()


# What someone who must enrol a second factor may still do.
ENROLMENT_ENDPOINTS = frozenset({"account.second_factor", "account.start_second_factor",
                                 "account.confirm_second_factor", "auth.logout",
                                 "account.passkey_options", "account.add_passkey",
                                 "account.logo", "static"})


def enrolment_redirect():
    target = url_for("account.second_factor")
    flash("Your organisation requires a second factor for your role. Set it up to go on.",
          "info")
    if htmx:
        return htmx_response("", 403, redirect=target)
    return redirect(target, code=303)


def current_session() -> UserSession | None:
    """The session record the signed-in request came with."""
    return g.get("user_session") if current_user.is_authenticated else None


def sign_in_redirect():
    """Send an anonymous request to the sign-in page, coming back to where it was."""
    if htmx:
        # Come back to the page the fragment belongs to, not the fragment's own URL.
        back = path_of_url(htmx.current_url)
    else:
        back = request.full_path if request.method == "GET" else None
    target = url_for("auth.login", next=back)
    if htmx:
        # A fragment request must not get the login page swapped into the page.
        return htmx_response("", 401, redirect=target)
    return redirect(target)
