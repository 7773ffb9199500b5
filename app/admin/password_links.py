"""Set-password links (invitations and resets): issued single-use with only their hash kept, read
back from the token, and spent by setting a password. Never commits."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from app.actors import Actor, ActorType
from app.admin.models import PasswordLink, PasswordLinkPurpose
from app.audit.services import record_event
from app.auth.models import SessionEndReason
from app.auth.passwords import hash_password
from app.auth.services import end_sessions
from app.errors import InvalidTransition, NotFound, ValidationFailed
from app.extensions import db
from app.models import User
from app.types import utcnow

LINK_TTL = {PasswordLinkPurpose.INVITATION.value: ("INVITATION_TTL_HOURS", 72),
            PasswordLinkPurpose.RESET.value: ("PASSWORD_RESET_TTL_HOURS", 2)}
MIN_PASSWORD = 12


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_password_link(user: User, tenant_id: int | None,
                        purpose: str) -> tuple[str, PasswordLink]:
    """A new link (its secret returned once, only its hash kept); the person's older unused
    links stop working."""
    now = utcnow()
    db.session.execute(update(PasswordLink).where(
        PasswordLink.user_id == user.id, PasswordLink.used_at.is_(None),
        PasswordLink.revoked_at.is_(None)).values(revoked_at=now))
    key, default = LINK_TTL[purpose]
    hours = int(current_app.config.get(key, default))
    token = secrets.token_urlsafe(32)
    row = PasswordLink(token_hash=_token_hash(token), user_id=user.id, tenant_id=tenant_id,
                       purpose=purpose, created_at=now, expires_at=now + timedelta(hours=hours))
    db.session.add(row)
    db.session.flush()
    return token, row


class LinkRefused(InvalidTransition):
    status = 410


def password_link(token: str) -> PasswordLink:
    """The link a token names, if it can still be used; LinkRefused says why not."""
    row = db.session.scalars(select(PasswordLink).where(
        PasswordLink.token_hash == _token_hash(token or ""))).one_or_none()
    if row is None:
        raise NotFound("This link is not valid. Ask for a new one from the sign-in page "
                       "(Forgot your password?) or from your admin.")
    if row.used_at is not None:
        raise LinkRefused("This link was already used. Sign in, or ask your admin for a new one.")
    if row.revoked_at is not None:
        raise LinkRefused("A newer link was sent, or the account was deactivated; this one no "
                          "longer works.")
    if row.expires_at <= utcnow():
        raise LinkRefused("This link has expired. Ask for a new one from the sign-in page "
                          "(Forgot your password?) or from your admin.")
    if not row.user.active:
        raise LinkRefused("This account is deactivated.")
    return row


def set_password_with_link(token: str, password: str, confirm: str, ip: str | None,
                           user_agent: str | None, keep_session_id: str | None = None) -> User:
    """Set the password a link is for; every other session of the person ends (the one the
    request came with, `keep_session_id`, stays if it is theirs)."""
    row = password_link(token)
    if len(password or "") < MIN_PASSWORD:
        raise ValidationFailed(f"Passwords need at least {MIN_PASSWORD} characters.",
                               {"password": f"at least {MIN_PASSWORD} characters"})
    if len(password) > 1024:
        raise ValidationFailed("That password is too long.", {"password": "too long"})
    if password != confirm:
        raise ValidationFailed("The two passwords differ.", {"confirm": "does not match"})
    user = row.user
    now = utcnow()
    # Single use even when two requests race: only one UPDATE finds it unused.
    used = db.session.execute(update(PasswordLink).where(
        PasswordLink.id == row.id, PasswordLink.used_at.is_(None)).values(used_at=now))
    if used.rowcount != 1:
        raise LinkRefused("This link was already used.")
    user.password_hash = hash_password(password)
    actor = Actor(ActorType.USER, user=user, label=user.email, ip=ip, user_agent=user_agent)
    ended = end_sessions(actor, user, SessionEndReason.PASSWORD_CHANGED, keep=keep_session_id)
    db.session.flush()
    record_event(actor, "user.password_set", tenant_id=row.tenant_id,
                 data={"user_id": user.id, "via": row.purpose, "link_id": row.id,
                       "sessions_ended": len(ended)})
    if row.purpose == PasswordLinkPurpose.RESET.value:
        record_event(actor, "auth.password_reset", tenant_id=None,
                     data={"user_id": user.id, "link_id": row.id, "sessions_ended": ended})
    return user
