"""Authenticating people, with throttling that every sign-in path shares, and their
server-side sessions: started at sign-in, recognised on every request, ended by signing out,
from another session, by a password change or by deactivation."""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import joinedload

from app.actors import Actor, ActorType
from app.audit.services import record_event
from app.auth.models import SessionEndReason, UserSession
from app.auth.passkeys import accept_sign_in, PasskeyRefused
from app.auth.passwords import check_password, hash_password
from app.auth.second_factor import enrolled_clause, FactorRefused, requirement_clause, verify_code
from app.errors import NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import LoginThrottle, Membership, MembershipRole, Tenant, User
from app.outbox.services import add_message
from app.types import utcnow


class SignInRefused(PermissionDenied):
    pass


GENERIC_REFUSAL = "That email and password do not match an active account."
SSO_ONLY_REFUSAL = ("Your organisation signs in with single sign-on, not a password: find "
                    "its sign-in under \"Single sign-on\" below.")


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
    """The throttle row of `key`, locked for this transaction. Created by an upsert, so two
    first attempts at once both find one row (neither fails on the primary key)."""
    dialect = db.session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    db.session.execute(insert(LoginThrottle.__table__)
                       .values(key=key, failures=0, window_started_at=utcnow())
                       .on_conflict_do_nothing(index_elements=["key"]))
    return db.session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)


def _keys(email: str, ip: str | None) -> tuple[str, str]:
    digest = hashlib.sha256(email.encode("utf-8")).hexdigest()[:64]
    return f"email:{digest}", f"ip:{ip or 'unknown'}"[:80]


def authenticate(email: str, password: str, ip: str | None, user_agent: str | None) -> User:
    """Check a password and start a session (the user comes back with `login_id` set, what
    Flask-Login keeps in the cookie). After LOGIN_MAX_FAILURES failures in a row for one email
    (whether or not an account has it), or LOGIN_MAX_FAILURES_PER_IP within the lockout period
    from one address, sign-in is refused for LOGIN_LOCKOUT_SECONDS. A right password of a
    member of a tenant whose password sign-in is off is refused (app.auth.sso; its admins with
    a second factor go on to it). Every outcome is audited; the caller commits, also on
    refusal, so counts and events are kept."""
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
    # Imported here: app.auth.sso imports this module.
    from app.auth.sso import password_sign_in_refusal

    refusal = password_sign_in_refusal(user)
    if refusal is not None:
        record_event(actor, "auth.login_refused", tenant_id=None, data={"reason": refusal})
        raise SignInRefused(SSO_ONLY_REFUSAL)
    if has_second_factor(user):
        record_event(actor, "auth.password_accepted", tenant_id=None,
                     data={"second_factor": "asked"})
        raise SecondFactorNeeded(user)
    user.last_login_at = now
    session_id = start_session(user, ip, user_agent)
    record_event(actor, "auth.login", tenant_id=None, data={"session_id": session_id})
    return user


class SecondFactorNeeded(Exception):
    """The password was right and the person has a second factor: sign-in goes on with a
    code (complete_sign_in)."""

    def __init__(self, user: User):
        super().__init__("second factor needed")
        self.user = user


def has_second_factor(user: User) -> bool:
    return bool(db.session.scalar(select(enrolled_clause(user.id))))


def complete_sign_in(user_id: int, code: str, ip: str | None, user_agent: str | None, *,
                     passkey: dict | None = None, origin: str | None = None) -> User:
    """The second step of a sign-in whose password was right: a code of the person's factor
    (or a recovery code), or a passkey's answer (`passkey`, made for the `origin` the request
    came to), starts the session. Wrong codes and refused passkeys count as failed sign-ins
    of that email and lock it the same way. The caller commits, also on refusal."""
    config = current_app.config
    now = utcnow()
    user = db.session.get(User, user_id)
    if user is None or not user.active:
        raise SignInRefused(GENERIC_REFUSAL)
    actor = Actor(ActorType.USER, user=user, label=user.email, ip=ip, user_agent=user_agent)
    by_email = _throttle(_keys(user.email, ip)[0])
    if by_email.locked_until and by_email.locked_until > now:
        minutes = math.ceil((by_email.locked_until - now).total_seconds() / 60)
        record_event(actor, "auth.login_refused", tenant_id=None,
                     data={"reason": "locked", "by": "email"})
        raise SignInRefused(f"Too many failed sign-ins. Sign-in is locked; try again in "
                            f"{minutes} minute{'s' if minutes != 1 else ''}.")
    try:
        method = verify_code(actor, user, code, purpose="sign_in", passkey=passkey,
                             origin=origin)
    except FactorRefused as refused:
        by_email.failures += 1
        record_event(actor, "auth.login_failed", tenant_id=None,
                     data={"reason": "wrong second factor", "failures": by_email.failures})
        if by_email.failures >= config["LOGIN_MAX_FAILURES"]:
            by_email.locked_until = now + timedelta(seconds=config["LOGIN_LOCKOUT_SECONDS"])
            by_email.failures, by_email.window_started_at = 0, now
            record_event(actor, "auth.locked", tenant_id=None,
                         data={"by": "email", "until": by_email.locked_until})
        raise SignInRefused(refused.message) from refused
    by_email.failures = 0
    user.last_login_at = now
    session_id = start_session(user, ip, user_agent)
    record_event(actor, "auth.login", tenant_id=None,
                 data={"session_id": session_id, "second_factor": method})
    return user


def sign_in_with_passkey(response: dict, origin: str, ip: str | None,
                         user_agent: str | None) -> User:
    """Sign in with a passkey alone (app.auth.passkeys.accept_sign_in: one that verified its
    user stands for the password and the second step together). Refused, as a password
    would be, for a deactivated account or a member of a tenant whose password sign-in is
    off (its admins, who have a factor, may). Failures count against the client address's
    throttle and lock it the same way; every outcome is audited. The caller commits, also on
    refusal."""
    # Imported here: app.auth.sso imports this module.
    from app.auth.sso import password_sign_in_refusal

    config = current_app.config
    now = utcnow()
    lockout = timedelta(seconds=config["LOGIN_LOCKOUT_SECONDS"])
    by_ip = _throttle(_keys("", ip)[1])
    if by_ip.window_started_at < now - lockout:
        by_ip.failures, by_ip.window_started_at = 0, now
    anonymous = Actor(ActorType.USER, label="passkey", ip=ip, user_agent=user_agent)
    if by_ip.locked_until and by_ip.locked_until > now:
        minutes = math.ceil((by_ip.locked_until - now).total_seconds() / 60)
        record_event(anonymous, "auth.login_refused", tenant_id=None,
                     data={"reason": "locked", "by": "address", "method": "passkey"})
        raise SignInRefused(f"Too many failed sign-ins. Sign-in is locked; try again in "
                            f"{minutes} minute{'s' if minutes != 1 else ''}.")
    try:
        key = accept_sign_in(origin, response)
    except PasskeyRefused as refused:
        by_ip.failures += 1
        record_event(anonymous, "auth.login_failed", tenant_id=None,
                     data={"reason": refused.reason, "method": "passkey",
                           "failures": by_ip.failures})
        if by_ip.failures >= config["LOGIN_MAX_FAILURES_PER_IP"]:
            by_ip.locked_until = now + lockout
            by_ip.failures, by_ip.window_started_at = 0, now
            record_event(anonymous, "auth.locked", tenant_id=None,
                         data={"by": "address", "until": by_ip.locked_until})
        raise SignInRefused(refused.message) from refused
    user = db.session.get(User, key.user_id)
    actor = Actor(ActorType.USER, user=user, label=user.email, ip=ip, user_agent=user_agent)
    refusal = "deactivated" if not user.active else password_sign_in_refusal(user)
    if refusal is not None:
        record_event(actor, "auth.login_refused", tenant_id=None,
                     data={"reason": refusal, "method": "passkey"})
        raise SignInRefused("This account is deactivated." if not user.active
                            else SSO_ONLY_REFUSAL)
    user.last_login_at = now
    session_id = start_session(user, ip, user_agent)
    db.session.get(UserSession, session_id).sign_in_method = "passkey"
    record_event(actor, "auth.login", tenant_id=None,
                 data={"session_id": session_id, "method": "passkey", "passkey_id": key.id,
                       "passkey_name": key.name})
    return user


# ---------------------------------------------------------------------------------------------
# Forgot password: a mailed reset link (the invitation's single-use link machinery).

RESET_REQUESTED = ("If an active account has that address, a link to set a new password is "
                   "on its way to it. The link works once and expires in a few hours.")


class ResetThrottled(PermissionDenied):
    status = 429


def _counted(throttle: LoginThrottle, window: timedelta, now) -> int:
    """Count one more request in the throttle's window (a new window once it has passed)."""
    if throttle.window_started_at < now - window:
        throttle.failures, throttle.window_started_at = 0, now
    throttle.failures += 1
    return throttle.failures


def request_password_reset(email: str, ip: str | None, user_agent: str | None) -> None:
    """Someone asks for a reset link for `email`. Known or not, the request does the same
    work (throttles, an audit event; the link is made and mailed later by the worker), so
    neither the answer nor its time tells whether an account has the address. At most
    RESET_MAX_PER_EMAIL requests per address and RESET_MAX_PER_IP per client address in
    RESET_WINDOW_SECONDS; ResetThrottled beyond. The caller commits, also on refusal."""
    # Imported here: the admin package, above auth, imports it (its sessions).
    from app.admin.models import PasswordLinkPurpose

    config = current_app.config
    now = utcnow()
    email = (email or "").strip().lower()[:254]
    user = find_user_by_email(email)
    actor = Actor(ActorType.USER, user=user, label=email, ip=ip, user_agent=user_agent)
    window = timedelta(seconds=config["RESET_WINDOW_SECONDS"])
    email_key, ip_key = _keys(email, ip)
    by_email, by_ip = _throttle("reset-" + email_key), _throttle(("reset-" + ip_key)[:80])
    counts = {"email": _counted(by_email, window, now), "address": _counted(by_ip, window, now)}
    over = [kind for kind, limit in (("email", config["RESET_MAX_PER_EMAIL"]),
                                     ("address", config["RESET_MAX_PER_IP"]))
            if counts[kind] > limit]
    known = user is not None and user.active
    record_event(actor, "auth.reset_requested", tenant_id=None,
                 data={"known": known, "throttled": over[0] if over else None})
    if over:
        started = min(t.window_started_at for t in (by_email, by_ip))
        minutes = max(1, math.ceil((started + window - now).total_seconds() / 60))
        raise ResetThrottled(f"Too many reset requests. Try again in {minutes} minute"
                             f"{'s' if minutes != 1 else ''}.")
    if known:
        # The tenant's branding when the person works in one tenant only.
        tenant_id = user.memberships[0].tenant_id if len(user.memberships) == 1 else None
        add_message("account.password_link",
                    {"user_id": user.id, "tenant_id": tenant_id,
                     "purpose": PasswordLinkPurpose.RESET.value, "self_service": True},
                    tenant_id)


# ---------------------------------------------------------------------------------------------
# Sessions.

# How stale a session's last-seen time may get before a request moves it: a write at most once
# a minute per session, not one per request. An idle timeout may so end a session up to this
# much early, never late.
SEEN_EVERY = timedelta(minutes=1)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def start_session(user: User, ip: str | None, user_agent: str | None) -> str:
    """Record a new session of `user` and set `user.login_id` ("user id:session id:secret")
    for the cookie; the secret is not kept. Returns the session id."""
    session_id, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(UserSession(id=session_id, user_id=user.id, secret_hash=_secret_hash(secret),
                               created_at=now, last_seen_at=now, ip=(ip or "")[:64] or None,
                               user_agent=(user_agent or "")[:300] or None))
    db.session.flush()
    user.login_id = f"{user.id}:{session_id}:{secret}"
    return session_id


def session_id_of(login_id: str | None) -> str | None:
    parts = (login_id or "").split(":")
    return parts[1] if len(parts) == 3 else None


@dataclass(frozen=True)
class SessionLimits:
    """The strictest timeouts of the tenants a person works in (None: no limit)."""

    idle_minutes: int | None = None
    max_hours: int | None = None
    # A tenant requires a second factor of this person's roles and they have none yet.
    must_enrol: bool = False

    def reason_to_end(self, row: UserSession, now) -> SessionEndReason | None:
        if self.max_hours is not None and now - row.created_at >= timedelta(hours=self.max_hours):
            return SessionEndReason.ABSOLUTE_TIMEOUT
        if (self.idle_minutes is not None
                and now - row.last_seen_at >= timedelta(minutes=self.idle_minutes)):
            return SessionEndReason.IDLE_TIMEOUT
        return None


def _strictest(column, user_id):
    return (select(func.min(column)).join(Membership, Membership.tenant_id == Tenant.id)
            .where(Membership.user_id == user_id).scalar_subquery())


def recognise_session(login_id: str) -> tuple[User, UserSession, SessionLimits] | None:
    """The active user and open session a cookie's login id names, with the timeouts of the
    person's tenants, or None: unknown, ended, another user's, a wrong secret, a deactivated
    user. One query, run on every request, with the user's memberships and their roles
    (every page reads them: the tenant switcher, the queues a person works, what they may see),
    joined in rather than fetched by two more statements when first used. Whether the session
    has timed out is the caller's to check (SessionLimits)."""
    try:
        user_id, session_id, secret = login_id.split(":")
        user_id = int(user_id)
    except (AttributeError, ValueError):
        return None

    found = db.session.execute(
        select(User, UserSession, _strictest(Tenant.session_idle_minutes, user_id),
               _strictest(Tenant.session_max_hours, user_id),
               requirement_clause(user_id), enrolled_clause(user_id))
        .join(UserSession, UserSession.user_id == User.id)
        .where(UserSession.id == session_id, User.id == user_id,
               UserSession.ended_at.is_(None), User.active.is_(True))
        .options(joinedload(User.memberships).joinedload(Membership.roles))
    ).unique().first()
    if found is None or not hmac.compare_digest(found.UserSession.secret_hash,
                                                _secret_hash(secret)):
        return None
    found.User.login_id = login_id
    # A sign-in through a tenant's provider counts as the provider's authentication: its
    # session is not sent to enrol a TOTP factor (app.auth.sso).
    must_enrol = bool(found[4]) and not found[5] and found[1].sign_in_method != "sso"
    return found[0], found[1], SessionLimits(found[2], found[3], must_enrol)


def end_timed_out_session(row: UserSession, reason: SessionEndReason,
                          limits: SessionLimits) -> None:
    """End a session its tenants' timeouts no longer allow; audited as `auth.session_ended`."""
    now = utcnow()
    ended = db.session.execute(
        update(UserSession).where(UserSession.id == row.id, UserSession.ended_at.is_(None))
        .values(ended_at=now, ended_reason=reason.value)
        .execution_options(synchronize_session=False))
    if ended.rowcount != 1:
        return  # another request ended it first
    actor = Actor(ActorType.SYSTEM, label="session timeout")
    record_event(actor, "auth.session_ended", tenant_id=None,
                 data={"user_id": row.user_id, "session_id": row.id, "reason": reason.value,
                       "idle_minutes": limits.idle_minutes, "max_hours": limits.max_hours,
                       "session_started_at": row.created_at, "last_seen_at": row.last_seen_at,
                       "session_ip": row.ip})


def note_session_seen(row: UserSession) -> bool:
    """Move the session's last-seen time to now when it is older than SEEN_EVERY. Returns
    True when it wrote (the caller commits that on its own, as a token's last use)."""
    now = utcnow()
    if now - row.last_seen_at < SEEN_EVERY:
        return False
    # Conditional: of several requests seeing a stale time at once, one writes; an ended
    # session stays as it ended.
    result = db.session.execute(
        update(UserSession)
        .where(UserSession.id == row.id, UserSession.ended_at.is_(None),
               UserSession.last_seen_at < now - SEEN_EVERY)
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False))
    return result.rowcount > 0


def open_sessions(user: User) -> list[UserSession]:
    """The person's sessions that have not ended, the most recently seen first."""
    return list(db.session.scalars(
        select(UserSession).where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
        .order_by(UserSession.last_seen_at.desc(), UserSession.created_at.desc())))


def end_sessions(actor: Actor, user: User, reason: SessionEndReason, *,
                 keep: str | None = None) -> list[str]:
    """End every open session of `user` (but `keep`, the one the request came with, if it is
    theirs); audited as one `auth.sessions_ended` event when any ended. Returns their ids."""
    query = select(UserSession.id).where(UserSession.user_id == user.id,
                                         UserSession.ended_at.is_(None))
    if keep is not None:
        query = query.where(UserSession.id != keep)
    ids = sorted(db.session.scalars(query))
    if not ids:
        return []
    db.session.execute(
        update(UserSession)
        .where(UserSession.id.in_(ids), UserSession.ended_at.is_(None))
        .values(ended_at=utcnow(), ended_reason=reason.value)
        .execution_options(synchronize_session="fetch"))
    record_event(actor, "auth.sessions_ended", tenant_id=None,
                 data={"user_id": user.id, "reason": reason.value, "session_ids": ids})
    return ids


def _own_open_session(actor: Actor, session_id: str | None) -> UserSession:
    row = db.session.get(UserSession, session_id) if session_id else None
    if row is None or actor.user is None or row.user_id != actor.user_id or row.ended_at:
        raise NotFound("There is no such session of yours, or it has already ended.")
    return row


def end_session(actor: Actor, session_id: str) -> UserSession:
    """End one of the actor's own sessions (another browser, a lost device)."""
    row = _own_open_session(actor, session_id)
    row.ended_at, row.ended_reason = utcnow(), SessionEndReason.ENDED_BY_USER.value
    db.session.flush()
    record_event(actor, "auth.session_ended", tenant_id=None,
                 data={"user_id": row.user_id, "session_id": row.id,
                       "reason": SessionEndReason.ENDED_BY_USER.value,
                       "session_ip": row.ip, "session_started_at": row.created_at})
    return row


def end_other_sessions(actor: Actor, current_session_id: str) -> list[str]:
    """Sign the actor out everywhere but the session they ask from."""
    _own_open_session(actor, current_session_id)
    return end_sessions(actor, actor.user, SessionEndReason.ENDED_BY_USER,
                        keep=current_session_id)


def sign_out(actor: Actor, session_id: str | None) -> None:
    """End the session the request came with; audited as `auth.logout`."""
    row = db.session.get(UserSession, session_id) if session_id else None
    if row is not None and row.user_id == actor.user_id and row.ended_at is None:
        row.ended_at, row.ended_reason = utcnow(), SessionEndReason.SIGNED_OUT.value
        db.session.flush()
    record_event(actor, "auth.logout", tenant_id=None, data={"session_id": session_id})


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
