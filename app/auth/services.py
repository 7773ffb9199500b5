"""Authenticating people, with throttling that every sign-in path shares."""
from __future__ import annotations

import math
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select

from app.actors import Actor, ActorType
from app.audit.services import record_event
from app.auth.passwords import check_password, hash_password
from app.errors import PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import User
from app.types import utcnow


class SignInRefused(PermissionDenied):
    pass


def find_user_by_email(email: str) -> User | None:
    return db.session.scalars(
        select(User).where(func.lower(User.email) == (email or "").strip().lower())
    ).one_or_none()


def authenticate(email: str, password: str, ip: str | None, user_agent: str | None) -> User:
    """Check a password. Failures count per account; after LOGIN_MAX_FAILURES in a row the
    account is locked for LOGIN_LOCKOUT_SECONDS. Every outcome is audited (caller commits)."""
    now = utcnow()
    user = find_user_by_email(email)
    label = (email or "").strip().lower()[:254]
    actor = Actor(ActorType.USER, user=user, label=label, ip=ip, user_agent=user_agent)
    generic = "That email and password do not match an active account."
    if user is None:
        check_password(None, password)
        record_event(actor, "auth.login_failed", tenant_id=None, data={"reason": "unknown email"})
        raise SignInRefused(generic)
    if user.locked_until and user.locked_until > now:
        minutes = math.ceil((user.locked_until - now).total_seconds() / 60)
        record_event(actor, "auth.login_refused", tenant_id=None, data={"reason": "locked"})
        raise SignInRefused(
            f"Too many failed sign-ins. This account is locked; try again in {minutes} minute"
            f"{'s' if minutes != 1 else ''}."
        )
    if not check_password(user.password_hash, password) or not user.active:
        reason = "wrong password" if user.active else "deactivated"
        user.failed_logins += 1
        data = {"reason": reason, "failures": user.failed_logins}
        record_event(actor, "auth.login_failed", tenant_id=None, data=data)
        if user.failed_logins >= current_app.config["LOGIN_MAX_FAILURES"]:
            user.locked_until = now + timedelta(seconds=current_app.config["LOGIN_LOCKOUT_SECONDS"])
            user.failed_logins = 0
            record_event(actor, "auth.locked", tenant_id=None,
                         data={"until": user.locked_until})
        raise SignInRefused(generic)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    record_event(actor, "auth.login", tenant_id=None)
    return user


def record_logout(user: User, ip: str | None, user_agent: str | None) -> None:
    record_event(Actor.for_user(user, ip, user_agent), "auth.logout", tenant_id=None)


def create_user(actor: Actor, *, email: str, name: str, password: str) -> User:
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 254:
        raise ValidationFailed("Enter a valid email address.", {"email": "not an email address"})
    if len(password or "") < 12:
        raise ValidationFailed("Passwords need at least 12 characters.",
                               {"password": "at least 12 characters"})
    if find_user_by_email(email):
        raise ValidationFailed("A user with that email exists.", {"email": "already in use"})
    user = User(email=email, name=(name or email).strip(), password_hash=hash_password(password))
    db.session.add(user)
    db.session.flush()
    record_event(actor, "user.created", tenant_id=None, data={"user_id": user.id, "email": email})
    return user
