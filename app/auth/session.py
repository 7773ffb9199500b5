"""Flask-Login wiring: loading the user from the session, and what an anonymous request gets."""
from __future__ import annotations

from flask import Flask, redirect, request, url_for
from flask_login import current_user

from app.extensions import db, login_manager
from app.models import User


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
        target = url_for("auth.login", next=request.full_path if request.method == "GET" else None)
        if request.headers.get("HX-Request") == "true":
            # A fragment request must not get the login page swapped into the page.
            response = app.response_class(status=401)
            response.headers["HX-Redirect"] = target
            return response
        return redirect(target)

    app.jinja_env.globals["current_user"] = current_user
