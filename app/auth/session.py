"""Flask-Login wiring: loading the user from the session, and what an anonymous request gets."""
from __future__ import annotations

from flask import Flask, current_app, flash, redirect, request, url_for

from app.extensions import db, login_manager
from app.models import User
from app.params import path_of_url


def install_login(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"

    @login_manager.user_loader
    def load_user(session_id: str) -> User | None:
        try:
            user_id, epoch = (int(part) for part in session_id.split(":"))
        except ValueError:
            return None
        user = db.session.get(User, user_id)
        if user is None or not user.active or user.session_epoch != epoch:
            return None
        return user

    @login_manager.unauthorized_handler
    def unauthorized():
        flash(login_manager.login_message, login_manager.login_message_category)
        return sign_in_redirect()


def sign_in_redirect():
    """Send an anonymous request to the sign-in page, coming back to where it was."""
    if request.headers.get("HX-Request") == "true":
        # Come back to the page the fragment belongs to, not the fragment's own URL.
        back = path_of_url(request.headers.get("HX-Current-URL"))
    else:
        back = request.full_path if request.method == "GET" else None
    target = url_for("auth.login", next=back)
    if request.headers.get("HX-Request") == "true":
        # A fragment request must not get the login page swapped into the page.
        response = current_app.response_class(status=401)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target)
