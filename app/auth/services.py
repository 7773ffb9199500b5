"""Authenticating people, with throttling that every sign-in path shares."""
from __future__ import annotations

import hashlib
import math
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select

from app.actors import Actor, ActorType
from app.audit.services import record_event
from app.auth.passwords import check_password, hash_password
from app.errors import PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import LoginThrottle, Membership, MembershipRole, User
from app.types import utcnow


class SignInRefused(PermissionDenied):
    pass


GENERIC_REFUSAL = "That email and password do not match an active account."


def people_with_role(role: str, tenant_id: int | None = None) -> list[User]:
    """The active people holding `role` in a tenant (in any tenant when none is given), once
    each: who is told when something needs that role's attention."""
    query = (select(User).join(Membership, Membership.user_id == User.id)
             .join(MembershipRole, MembershipRole.membership_id == Membership.id)
             .where(MembershipRole.role == role, User.active.is_(True)))
    if tenant_id is not None:
        query = query.where(Membership.tenant_id == tenant_id)
    return list(db.session.scalars(query.distinct().order_by(User.id)))


def find_user_by_email(email: str) -> User | None:
    return db.session.scalars(
        select(User).where(func.lower(User.email) == (email or "").strip().lower())
    ).one_or_none()


def _throttle(key: str) -> LoginThrottle:
    row = db.session.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        row = LoginThrottle(key=key, failures=0, window_started_at=utcnow())
        db.session.add(row)
    return row


def _keys(email: str, ip: str | None) -> tuple[str, str]:
    digest = hashlib.sha256(email.encode("utf-8")).hexdigest()[:64]
    return f"email:{digest}", f"ip:{ip or 'unknown'}"[:80]


def authenticate(email: str, password: str, ip: str | None, user_agent: str | None) -> User:
    """Check a password. After LOGIN_MAX_FAILURES failures in a row for one email (whether or
    not an account has it), or LOGIN_MAX_FAILURES_PER_IP within the lockout period from one
    address, sign-in is refused for LOGIN_LOCKOUT_SECONDS. Every outcome is audited; the
    caller commits, also on refusal, so counts and events are kept."""
    config = current_app.config
    now = utcnow()
    email = (email or "").strip().lower()[:254]
    user = find_user_by_email(email)
    actor = Actor(ActorType.USER, user=user, label=email, ip=ip, user_agent=user_agent)
    lockout = timedelta(seconds=config["LOGIN_LOCKOUT_SECONDS"])
    email_key, ip_key = _keys(email, ip)
    by_email, by_ip = _throttle(email_key), _throttle(ip_key)
    if by_ip.window_started_at < now - lockout:
        by_ip.failures, by_ip.window_started_at = 0, now

    locked = [t.locked_until for t in (by_email, by_ip) if t.locked_until and t.locked_until > now]
    if locked:
        minutes = math.ceil((max(locked) - now).total_seconds() / 60)
        record_event(actor, "auth.login_refused", tenant_id=None,
                     data={"reason": "locked", "by": "email" if by_email.locked_until in locked
                           else "address"})
        raise SignInRefused(
            f"Too many failed sign-ins. Sign-in is locked; try again in {minutes} minute"
            f"{'s' if minutes != 1 else ''}."
        )
    if user is None or not user.active or not check_password(user.password_hash, password):
        if user is None:
            check_password(None, password)  # the same time as a real check
        reason = "unknown email" if user is None else (
            "deactivated" if not user.active else "wrong password")
        by_email.failures += 1
        by_ip.failures += 1
        record_event(actor, "auth.login_failed", tenant_id=None,
                     data={"reason": reason, "failures": by_email.failures})
        for throttle, limit, kind in ((by_email, config["LOGIN_MAX_FAILURES"], "email"),
                                      (by_ip, config["LOGIN_MAX_FAILURES_PER_IP"], "address")):
            if throttle.failures >= limit:
                throttle.locked_until = now + lockout
                throttle.failures = 0
                throttle.window_started_at = now
                record_event(actor, "auth.locked", tenant_id=None,
                             data={"by": kind, "until": throttle.locked_until})
        raise SignInRefused(GENERIC_REFUSAL)
    by_email.failures = 0
    by_email.locked_until = None
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


def email_throttle(email: str) -> LoginThrottle | None:
    """The throttle row of an email (for admins' views and tests)."""
    return db.session.get(LoginThrottle, _keys(email.strip().lower(), None)[0])
