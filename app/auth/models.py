"""Server-side sign-in sessions: one row per sign-in, so signing out, a password change and
deactivation end a session for good, whatever copies of its cookie exist."""
from __future__ import annotations

import enum
import re
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models import User
from app.types import UTCDateTime, utcnow


class SessionEndReason(str, enum.Enum):
    SIGNED_OUT = "signed_out"  # the person signed out in that browser
    ENDED_BY_USER = "ended_by_user"  # ended from another of their sessions
    PASSWORD_CHANGED = "password_changed"
    DEACTIVATED = "deactivated"
    IDLE_TIMEOUT = "idle_timeout"  # no request for longer than the tenant allows
    ABSOLUTE_TIMEOUT = "absolute_timeout"  # signed in for longer than the tenant allows


class UserSession(db.Model):
    """One sign-in. The cookie carries the id and a secret; only the secret's SHA-256 is kept
    (256 random bits need no slow hash), so a copy of the table cannot sign anyone in."""

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user_ended", "user_id", "ended_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Moved forward at most once a minute (app.auth.services.SEEN_EVERY), not per request.
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_reason: Mapped[str | None] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    # "sso" when a tenant's identity provider vouched for the person (app.auth.sso),
    # "passkey" for a passkey alone (app.auth.passkeys); None for a password sign-in (with or
    # without the second factor).
    sign_in_method: Mapped[str | None] = mapped_column(String(16))

    user: Mapped[User] = relationship()

    @property
    def browser(self) -> str:
        """A short name for the browser and system ("Firefox on Linux"), or the raw agent."""
        return describe_user_agent(self.user_agent)


class SecondFactor(db.Model):
    """A person's TOTP authenticator. The shared secret is kept encrypted (Fernet, with a key
    derived from SECRET_KEY: app.auth.second_factor); until the person confirms it with a code
    it is only an enrolment in progress. `last_used_step` is the 30-second time step of the
    last accepted code, so no code works twice."""

    __tablename__ = "second_factors"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    secret_encrypted: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RecoveryCode(db.Model):
    """One single-use recovery code: only SHA-256 of a per-code salt and the code is kept (the
    code has 50 random bits, so a fast hash with a salt is enough)."""

    __tablename__ = "recovery_codes"
    __table_args__ = (Index("ix_recovery_codes_user_used", "user_id", "used_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    salt: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Passkey(db.Model):
    """A WebAuthn credential (a passkey) a person registered as a second factor
    (app.auth.passkeys): its id at the authenticator (base64url), its public key as the COSE
    bytes the authenticator gave, and the signature counter last seen, so a cloned
    authenticator that reports an older count is refused."""

    __tablename__ = "passkeys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(60))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PasskeyChallenge(db.Model):
    """A WebAuthn challenge Cleardesk issued, kept server side until it is answered: bound to
    one person and one purpose, used once (`used_at`, set by a conditional UPDATE), and good
    for a few minutes. Its id is the challenge itself (base64url), which the browser's answer
    carries back in its client data."""

    __tablename__ = "passkey_challenges"
    __table_args__ = (Index("ix_passkey_challenges_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # None for a sign-in with a passkey alone: the answer says whose passkey it is.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    purpose: Mapped[str] = mapped_column(String(32))
    origin: Mapped[str] = mapped_column(String(300))
    user_verification: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TenantSingleSignOn(db.Model):
    """A tenant's OpenID Connect identity provider (app.auth.sso). The client secret is kept
    encrypted (Fernet, a key derived from SECRET_KEY by HKDF for this use only) and is never
    shown back; `allowed_domains` are the email domains the provider may vouch for."""

    __tablename__ = "tenant_single_sign_on"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret_encrypted: Mapped[str | None] = mapped_column(String(1000))
    allowed_domains: Mapped[list] = mapped_column(JSON, default=list)
    # Just-in-time membership: a verified email of an allowed domain with no account yet
    # becomes a new person with this role in the tenant.
    jit_enabled: Mapped[bool] = mapped_column(Boolean, default=False,
                                              server_default=text("false"))
    jit_role: Mapped[str] = mapped_column(String(20), default="requester",
                                          server_default="requester")
    # Members must sign in through the provider; the tenant's admins keep password + second
    # factor as a way in when the provider is down (break-glass).
    password_sign_in_off: Mapped[bool] = mapped_column(Boolean, default=False,
                                                       server_default=text("false"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SingleSignOnLink(db.Model):
    """A person's identity at a tenant's provider (its `sub`), kept from their first SSO
    sign-in there, and the time of their last one: the access review shows both. People are
    matched by verified email; a changed subject is kept and audited."""

    __tablename__ = "single_sign_on_links"
    __table_args__ = (UniqueConstraint("tenant_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_sign_in_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Order matters: Edge and Opera say "Chrome" too, Chrome says "Safari".
_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
             ("Chromium/", "Chromium"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (("Android", "Android"), (r"iPhone|iPad", "iOS"), ("Windows", "Windows"),
            ("Mac OS X|Macintosh", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"))


def describe_user_agent(agent: str | None) -> str:
    if not agent:
        return "Unknown browser"
    browser = next((name for marker, name in _BROWSERS if marker in agent), None)
    system = next((name for pattern, name in _SYSTEMS if re.search(pattern, agent)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or agent[:60]
