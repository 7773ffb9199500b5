"""API tokens: issuing (the secret is shown once, only its SHA-256 is kept), revoking,
recognising a presented token, noting its use, and the per-token rate limit kept in Redis."""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from app.actors import Actor, ActorType
from app.audit.services import record_event
from app.errors import NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.rate_limits import RateLimit, take
from app.models import ApiToken, Role, Tenant
from app.types import utcnow

log = logging.getLogger(__name__)

SCOPES = {
    "items:read": "Read and list items and their events",
    "items:write": "Create items",
    "decisions:write": "Record decisions on items",
}
# cd_<8 hex prefix>_<43 url-safe characters>: 256 random bits, so one SHA-256 (no slow hash)
# is enough at rest; the prefix finds the row without scanning.
TOKEN_RE = re.compile(r"^cd_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
LAST_USED_EVERY = timedelta(minutes=1)
AUDIT_USE_EVERY = timedelta(hours=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _require_admin(actor: Actor, tenant_id: int) -> None:
    if actor.type is ActorType.SYSTEM:
        return
    if tenant_id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    if Role.ADMIN.value not in actor.roles_in(tenant_id):
        raise PermissionDenied("Only an admin of this tenant manages its API tokens.")


def issue_token(actor: Actor, tenant_id: int, name: str, scopes) -> tuple[ApiToken, str]:
    """Make a token; returns the row and the secret, which is never stored nor shown again."""
    _require_admin(actor, tenant_id)
    if db.session.get(Tenant, tenant_id) is None:
        raise NotFound("No such tenant.")
    name = (name or "").strip()
    scopes = sorted(set(scopes or ()))
    errors = {}
    if not name:
        errors["name"] = "is required"
    elif len(name) > 100:
        errors["name"] = "at most 100 characters"
    if not scopes:
        errors["scopes"] = "choose at least one scope"
    elif set(scopes) - set(SCOPES):
        errors["scopes"] = "unknown scope: " + ", ".join(sorted(set(scopes) - set(SCOPES)))
    if errors:
        raise ValidationFailed("The token is not valid.", errors)
    prefix = secrets.token_hex(4)
    while db.session.scalar(select(ApiToken.id).where(ApiToken.prefix == prefix)):
        prefix = secrets.token_hex(4)
    secret = f"cd_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiToken(tenant_id=tenant_id, name=name, prefix=prefix, token_hash=hash_token(secret),
                   scopes=scopes, created_by_id=actor.user_id)
    db.session.add(row)
    db.session.flush()
    record_event(actor, "api_token.created", tenant_id=tenant_id,
                 data={"token_id": row.id, "prefix": prefix, "name": name, "scopes": scopes})
    return row, secret


def revoke_token(actor: Actor, tenant_id: int, token_id: int) -> ApiToken:
    _require_admin(actor, tenant_id)
    row = db.session.scalars(select(ApiToken).where(
        ApiToken.id == token_id, ApiToken.tenant_id == tenant_id)).one_or_none()
    if row is None:
        raise NotFound("No such token.")
    if row.revoked_at is not None:
        return row  # revoking twice changes nothing
    row.revoked_at = utcnow()
    row.revoked_by_id = actor.user_id
    db.session.flush()
    record_event(actor, "api_token.revoked", tenant_id=tenant_id,
                 data={"token_id": row.id, "prefix": row.prefix, "name": row.name})
    return row


def tenant_tokens(actor: Actor, tenant_id: int) -> list[ApiToken]:
    _require_admin(actor, tenant_id)
    return list(db.session.scalars(
        select(ApiToken).where(ApiToken.tenant_id == tenant_id)
        .order_by(ApiToken.revoked_at.is_not(None), ApiToken.created_at.desc(), ApiToken.id)))


def find_token(presented: str | None) -> ApiToken | None:
    """The live token whose secret was presented, or None (unknown, malformed or revoked)."""
    match = TOKEN_RE.match(presented or "")
    if not match:
        return None
    row = db.session.scalars(select(ApiToken).where(ApiToken.prefix == match.group(1))
                             ).one_or_none()
    if row is None or not hmac.compare_digest(row.token_hash, hash_token(presented)):
        return None
    if row.revoked_at is not None:
        return None
    return row


def token_actor(token: ApiToken, ip: str | None, user_agent: str | None) -> Actor:
    return Actor(ActorType.API, label=f"api-token {token.prefix} ({token.name})"[:254], ip=ip,
                 user_agent=user_agent, tenant_id=token.tenant_id,
                 extra={"token_id": token.id})


def note_use(token: ApiToken, ip: str | None, user_agent: str | None) -> bool:
    """Record that the token was used: last-used time and address at most once a minute, an
    `api_token.used` audit event at most once an hour (with address and user agent). Every
    change made through the API has its own audit event naming the token, so the hourly event
    only has to show reads; writing one per GET would turn every read into a chained write.
    Returns True when something was written (the caller commits it on its own, so the use is
    kept even when the request's work is refused)."""
    now = utcnow()
    wrote = False
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        # Conditional: of several processes seeing a stale time at once, one writes.
        result = db.session.execute(
            update(ApiToken)
            .where(ApiToken.id == token.id,
                   or_(ApiToken.last_used_at.is_(None),
                       ApiToken.last_used_at < now - LAST_USED_EVERY))
            .values(last_used_at=now, last_used_ip=(ip or "")[:64] or None)
            .execution_options(synchronize_session=False))
        wrote = result.rowcount > 0
    if wrote and (token.use_audited_at is None or now - token.use_audited_at >= AUDIT_USE_EVERY):
        db.session.execute(update(ApiToken).where(ApiToken.id == token.id)
                           .values(use_audited_at=now)
                           .execution_options(synchronize_session=False))
        record_event(token_actor(token, ip, user_agent), "api_token.used",
                     tenant_id=token.tenant_id,
                     data={"token_id": token.id, "prefix": token.prefix})
    return wrote


def take_rate_limit(token: ApiToken) -> RateLimit | None:
    """Count one request in the token's current one-minute window (app.rate_limits)."""
    return take("api-rate", str(token.id),
                int(current_app.config.get("API_RATE_LIMIT_PER_MINUTE", 600)))
