"""Single sign-on through a tenant's OpenID Connect provider: its settings (audited; the client
secret encrypted and never shown back), starting the authorization code flow (PKCE S256, state
and nonce), and finishing it: the code exchanged, the ID token's signature checked against the
provider's JWKS and its claims (iss, aud, exp, iat, nonce) checked, the person matched by a
verified email within the tenant's allowed domains, or joined just in time. The provider's
discovery document and key set are kept for DOCUMENT_CACHE_SECONDS per process; an ID token
signed by a key the kept set lacks fetches the set again, once (key rotation). An admin may
forget the provider subject linked to a person (`unlink_subject`); their next sign-in matches
them by verified email again.

Every sign-in, refusal (with its reason), just-in-time join and settings change is an audit
event in the tenant's chain; the caller commits, also after a refusal, so refusals are kept.

An SSO sign-in counts as the provider's authentication: Cleardesk asks no TOTP code after it
(the provider enforces its own factors), and a session it starts is not sent to enrol one."""
from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session
from cryptography.fernet import Fernet, InvalidToken
from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.actors import Actor, ActorType
from app.audit.services import record_event
from app.auth.models import SingleSignOnLink, TenantSingleSignOn, UserSession
from app.auth.sealing import fernet
from app.auth.services import find_user_by_email, has_second_factor, start_session
from app.errors import NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import Role, Tenant, User
from app.types import utcnow
from app.unit_of_work import savepoint

SCOPE = "openid email profile"
# Roles a person joining just in time may get: never admin (an identity provider's say-so
# must not make tenant administrators).
JIT_ROLES = (Role.REQUESTER.value, Role.APPROVER.value, Role.ANALYST.value,
             Role.MANAGER.value, Role.AUDITOR.value)
# Asymmetric signatures only: a client secret shared with the provider must not sign tokens.
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                       "ES512", "EdDSA"]
CLOCK_LEEWAY_SECONDS = 60
FLOW_SECONDS = 10 * 60  # the time from leaving for the provider to coming back
HTTP_TIMEOUT_SECONDS = 10
# A discovery document or a key set is a few KB; more is not read (a provider cannot make
# Cleardesk hold an endless answer in memory).
MAX_DOCUMENT_BYTES = 512 * 1024
# How long a provider's discovery document and key set are used before they are fetched again
# (an ID token signed by a key not in the set fetches the set again at once: key rotation).
DOCUMENT_CACHE_SECONDS = 10 * 60
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class SingleSignOnRefused(PermissionDenied):
    """A sign-in through the provider that did not succeed: `reason` is for the audit trail,
    the message for the person."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# The client secret at rest: Fernet under a key derived from SECRET_KEY for this use only.


def _fernet() -> Fernet:
    return fernet(b"cleardesk single sign-on", b"oidc client secret encryption v1")


def encrypt_client_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode("utf-8")).decode("ascii")


def decrypt_client_secret(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:  # SECRET_KEY changed: an admin enters the secret again
        return None


# ---------------------------------------------------------------------------------------------
# Settings.


def settings_of(tenant_id: int) -> TenantSingleSignOn | None:
    return db.session.get(TenantSingleSignOn, tenant_id)


def _insecure_issuer_allowed() -> bool:
    return bool(current_app.config.get("SSO_ALLOW_HTTP_ISSUER"))


def clean_issuer(text: str | None) -> str:
    """The issuer as the provider names itself (compared exactly with the ID token's `iss`):
    an https URL without query or fragment; http only for a provider on this machine, and only
    when SSO_ALLOW_HTTP_ISSUER is set (tests, a local provider)."""
    issuer = (text or "").strip()
    try:
        parts = urlsplit(issuer)
    except ValueError:
        parts = None
    if parts is None or not parts.hostname or parts.query or parts.fragment or len(issuer) > 500:
        raise ValueError("an https URL such as https://login.example.com/realms/finance")
    if parts.scheme == "https":
        return issuer
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS and _insecure_issuer_allowed():
        return issuer
    raise ValueError("must start with https://")


def clean_domains(text: str | None) -> list[str]:
    names = [d.strip().lower().lstrip("@") for d in re.split(r"[\s,;]+", text or "")]
    names = sorted({d for d in names if d})
    bad = [d for d in names if not DOMAIN_RE.match(d)]
    if bad:
        raise ValueError(f"not a domain name: {bad[0][:60]}")
    if len(names) > 50:
        raise ValueError("at most 50 domains")
    return names


def _shown(row: TenantSingleSignOn | None) -> dict:
    if row is None:
        return {}
    return {"enabled": row.enabled, "issuer": row.issuer, "client_id": row.client_id,
            "allowed_domains": list(row.allowed_domains or []), "jit_enabled": row.jit_enabled,
            "jit_role": row.jit_role, "password_sign_in_off": row.password_sign_in_off}


def update_single_sign_on(actor: Actor, tenant: Tenant, *, enabled: bool, issuer: str,
                          client_id: str, client_secret: str | None, allowed_domains: str,
                          jit_enabled: bool, jit_role: str,
                          password_sign_in_off: bool) -> TenantSingleSignOn:
    """Save the tenant's provider settings; audited as `tenant.sso_updated` with before and
    after (the client secret only as "changed"). An empty secret keeps the stored one.
    Switching password sign-in off needs SSO on and the acting admin to have a second factor:
    admins with one keep password sign-in as the way in when the provider is down."""
    # Imported here: the admin package, above auth, imports it.
    from app.admin.access import require_admin

    require_admin(actor, tenant)
    row = settings_of(tenant.id)
    errors: dict[str, str] = {}
    try:
        issuer = clean_issuer(issuer)
    except ValueError as error:
        errors["issuer"] = str(error)
    client_id = (client_id or "").strip()
    if not client_id or len(client_id) > 255:
        errors["client_id"] = "the client id the provider gave Cleardesk (up to 255 characters)"
    secret = (client_secret or "").strip()
    if len(secret) > 500:
        errors["client_secret"] = "up to 500 characters"
    elif not secret and (row is None or decrypt_client_secret(row.client_secret_encrypted)
                         is None):
        errors["client_secret"] = "the client secret the provider gave Cleardesk"
    try:
        domains = clean_domains(allowed_domains)
    except ValueError as error:
        errors["allowed_domains"] = str(error)
        domains = []
    if not domains and "allowed_domains" not in errors:
        errors["allowed_domains"] = "at least one email domain, such as example.com"
    if jit_role not in JIT_ROLES:
        errors["jit_role"] = "one of " + ", ".join(JIT_ROLES)
    if password_sign_in_off and not enabled:
        errors["password_sign_in_off"] = "turn single sign-on on first"
    elif password_sign_in_off and actor.user is not None and not has_second_factor(actor.user):
        errors["password_sign_in_off"] = ("set up your own second factor first: admins with "
                                          "one can still sign in with a password if the "
                                          "provider is down")
    if errors:
        raise ValidationFailed("Some single sign-on settings are not valid.", errors)
    before = _shown(row)
    if row is None:
        row = TenantSingleSignOn(tenant_id=tenant.id)
        db.session.add(row)
    row.enabled, row.issuer, row.client_id = bool(enabled), issuer, client_id
    row.allowed_domains, row.jit_enabled, row.jit_role = domains, bool(jit_enabled), jit_role
    row.password_sign_in_off = bool(password_sign_in_off)
    if secret:
        row.client_secret_encrypted = encrypt_client_secret(secret)
    after = _shown(row)
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    if not changed and not secret:
        return row
    row.updated_at = utcnow()
    db.session.flush()
    record_event(actor, "tenant.sso_updated", tenant_id=tenant.id,
                 data={"before": {k: before.get(k) for k in changed},
                       "after": changed, "client_secret": "changed" if secret else "kept"})
    return row


def enabled_tenant(slug: str) -> tuple[Tenant, TenantSingleSignOn]:
    tenant = db.session.scalars(select(Tenant).where(Tenant.slug == (slug or "")[:64])).first()
    row = settings_of(tenant.id) if tenant else None
    if row is None or not row.enabled:
        raise NotFound("There is no single sign-on for that organisation.")
    return tenant, row


def sso_tenant_named(slug: str | None) -> Tenant | None:
    """The tenant a sign-in link names (`/login?tenant=<slug>`), when it has SSO on."""
    if not isinstance(slug, str) or not slug.strip():
        return None
    try:
        return enabled_tenant(slug.strip().lower())[0]
    except NotFound:
        return None


def sso_tenants_of(user: User) -> list[Tenant]:
    """The person's tenants whose password sign-in is off (they sign in through SSO)."""
    ids = [m.tenant_id for m in user.memberships]
    if not ids:
        return []
    return list(db.session.scalars(
        select(Tenant).join(TenantSingleSignOn, TenantSingleSignOn.tenant_id == Tenant.id)
        .where(Tenant.id.in_(ids), TenantSingleSignOn.enabled.is_(True),
               TenantSingleSignOn.password_sign_in_off.is_(True)).order_by(Tenant.id)))


def password_sign_in_refusal(user: User) -> str | None:
    """Why `user` may not sign in with a password, or None. A member of a tenant whose
    password sign-in is off must use its provider; that tenant's admins may (break-glass) if
    they have a second factor, which the password sign-in then asks for."""
    off = db.session.scalars(select(TenantSingleSignOn).where(
        TenantSingleSignOn.tenant_id.in_([m.tenant_id for m in user.memberships] or [0]),
        TenantSingleSignOn.enabled.is_(True),
        TenantSingleSignOn.password_sign_in_off.is_(True))).all()
    for row in off:
        if Role.ADMIN.value in user.roles_in(row.tenant_id):
            if not has_second_factor(user):
                return "password sign-in off; admin without a second factor"
            continue
        return "password sign-in off"
    return None


# ---------------------------------------------------------------------------------------------
# The flow.


def _refuse_private(url: str, what: str) -> None:
    """The provider's URLs (the issuer an admin typed, and the endpoints its discovery names)
    must reach a public address: else a tenant admin could make Cleardesk fetch from its own
    network. Only SSO_ALLOW_HTTP_ISSUER (tests, a provider on this machine) lets them by."""
    # Imported here: the webhooks package, above auth, imports it.
    from app.webhooks.services import is_public_address, resolve_host

    if _insecure_issuer_allowed():
        return
    unreachable = SingleSignOnRefused(
        "Your organisation's sign-in service is set up wrongly. Ask your admin.",
        f"{what} address is not public")
    try:
        parts = urlsplit(url)
        addresses = resolve_host(parts.hostname or "", parts.port or 443)
    except (OSError, ValueError, UnicodeError) as error:
        raise SingleSignOnRefused(
            "Your organisation's sign-in service could not be reached. Try again, or ask "
            "your admin.", f"{what} unavailable: {type(error).__name__}") from error
    if parts.scheme != "https" or not addresses or not all(
            is_public_address(a) for a in addresses):
        raise unreachable


def _fetch_json(url: str, what: str) -> dict:
    _refuse_private(url, what)
    try:
        with requests.get(url, timeout=HTTP_TIMEOUT_SECONDS, stream=True,
                          headers={"Accept": "application/json"}) as response:
            response.raise_for_status()
            raw = response.raw.read(MAX_DOCUMENT_BYTES + 1, decode_content=True)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise SingleSignOnRefused(
                "Your organisation's sign-in service answered something unexpected. Ask "
                "your admin.", f"{what} larger than {MAX_DOCUMENT_BYTES // 1024} KB")
        data = json.loads(raw)
    except (requests.RequestException, ValueError, RecursionError) as error:
        raise SingleSignOnRefused(
            "Your organisation's sign-in service could not be reached. Try again, or ask "
            "your admin.", f"{what} unavailable: {type(error).__name__}") from error
    if not isinstance(data, dict):
        raise SingleSignOnRefused("Your organisation's sign-in service answered something "
                                  "unexpected. Ask your admin.", f"{what} not a JSON object")
    return data


class DocumentCache:
    """The providers' discovery documents and key sets this process fetched, each kept for
    DOCUMENT_CACHE_SECONDS (so a sign-in costs the provider one token request, not three), at
    most MAX_CACHED_DOCUMENTS of them (the oldest go first). One per app: every process keeps
    its own, and a restart starts empty; only documents that passed their checks are kept."""

    def __init__(self, max_entries: int):
        self._entries: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, url: str, max_age: float) -> dict | None:
        with self._lock:
            found = self._entries.get(url)
            if found is None or time.monotonic() - found[0] >= max_age:
                return None
            return found[1]

    def put(self, url: str, data: dict) -> None:
        with self._lock:
            self._entries[url] = (time.monotonic(), data)
            self._entries.move_to_end(url)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


MAX_CACHED_DOCUMENTS = 256


def _document_cache() -> DocumentCache:
    return current_app.extensions.setdefault("sso_documents",
                                             DocumentCache(MAX_CACHED_DOCUMENTS))


def _cached_json(url: str, what: str, check, *, fresh: bool = False) -> dict:
    """`url`'s JSON from the cache while it is young enough, else fetched, checked by
    `check` (which raises SingleSignOnRefused) and kept; `fresh` fetches in any case."""
    cache = _document_cache()
    max_age = current_app.config.get("SSO_DOCUMENT_CACHE_SECONDS", DOCUMENT_CACHE_SECONDS)
    data = None if fresh else cache.get(url, max_age)
    if data is None:
        data = _fetch_json(url, what)
        check(data)
        cache.put(url, data)
    return data


def discover(row: TenantSingleSignOn) -> dict:
    """The provider's metadata from `<issuer>/.well-known/openid-configuration` (cached for a
    few minutes); its issuer must be the one configured (a mix-up defence)."""
    def check(metadata: dict) -> None:
        if metadata.get("issuer") != row.issuer:
            raise SingleSignOnRefused("Your organisation's sign-in service is set up wrongly. "
                                      "Ask your admin.", "discovery issuer does not match")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(metadata.get(name), str):
                raise SingleSignOnRefused("Your organisation's sign-in service is set up "
                                          "wrongly. Ask your admin.", f"discovery lacks {name}")

    metadata = _cached_json(row.issuer.rstrip("/") + "/.well-known/openid-configuration",
                            "discovery", check)
    # The cache is keyed by URL: a document naming another issuer was never kept for this one.
    check(metadata)
    return metadata


@dataclass(frozen=True)
class PendingSignIn:
    """What the browser's session keeps between leaving for the provider and coming back."""

    tenant_id: int
    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    until: float
    next: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data) -> PendingSignIn | None:
        try:
            pending = cls(**data)
        except TypeError:
            return None
        return pending if pending.until >= time.time() else None


def _client(row: TenantSingleSignOn, redirect_uri: str) -> OAuth2Session:
    return OAuth2Session(client_id=row.client_id,
                         client_secret=decrypt_client_secret(row.client_secret_encrypted),
                         token_endpoint_auth_method="client_secret_basic", scope=SCOPE,
                         redirect_uri=redirect_uri, code_challenge_method="S256",
                         default_timeout=HTTP_TIMEOUT_SECONDS)


def begin_sign_in(actor: Actor, slug: str, redirect_uri: str,
                  next_path: str | None) -> tuple[str, PendingSignIn]:
    """The provider's authorization URL to send the browser to, and what to keep until it
    comes back. NotFound when the tenant has no SSO; SingleSignOnRefused (audited) when its
    provider cannot be reached."""
    tenant, row = enabled_tenant(slug)
    try:
        metadata = discover(row)
    except SingleSignOnRefused as refused:
        record_event(actor, "auth.sso_failed", tenant_id=tenant.id,
                     data={"reason": refused.reason, "stage": "start"})
        raise
    pending = PendingSignIn(tenant_id=tenant.id, state=secrets.token_urlsafe(32),
                            nonce=secrets.token_urlsafe(32),
                            code_verifier=secrets.token_urlsafe(64),
                            redirect_uri=redirect_uri, until=time.time() + FLOW_SECONDS,
                            next=next_path)
    with _client(row, redirect_uri) as client:
        url, _state = client.create_authorization_url(
            metadata["authorization_endpoint"], state=pending.state,
            code_verifier=pending.code_verifier, nonce=pending.nonce)
    return url, pending


def _kid_of(id_token: str) -> str | None:
    """The `kid` of a compact JWS's protected header, or None (the decode refuses a token
    that is not one)."""
    try:
        segment = id_token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, RecursionError):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def verify_id_token(row: TenantSingleSignOn, metadata: dict, id_token: str,
                    nonce: str) -> dict:
    """The ID token's claims, once its signature (a key of the provider's JWKS) and its iss,
    aud (and azp), exp, iat and nonce are right; SingleSignOnRefused otherwise."""
    refused = "Your organisation's sign-in service sent a sign-in Cleardesk cannot accept."

    def check(keys: dict) -> None:
        try:
            KeySet.import_key_set(keys)
        except (JoseError, ValueError, TypeError, KeyError) as error:
            raise SingleSignOnRefused(refused, f"jwks: {type(error).__name__}") from error

    keys = _cached_json(metadata["jwks_uri"], "jwks", check)
    kid = _kid_of(id_token)
    if kid is not None and kid not in {k.get("kid") for k in keys.get("keys") or []
                                       if isinstance(k, dict)}:
        # A key this copy of the set does not have: the provider may have rotated its keys
        # since it was fetched. Fetched again, once.
        keys = _cached_json(metadata["jwks_uri"], "jwks", check, fresh=True)
    try:
        key_set = KeySet.import_key_set(keys)
        token = jwt.decode(id_token, key_set, algorithms=ID_TOKEN_ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise SingleSignOnRefused(refused, f"id token signature: {type(error).__name__}") \
            from error
    claims = token.claims
    if claims.get("iss") != row.issuer:
        raise SingleSignOnRefused(refused, "id token issuer does not match")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or row.client_id not in audiences:
        raise SingleSignOnRefused(refused, "id token audience does not match")
    if len(audiences) > 1 and claims.get("azp") != row.client_id:
        raise SingleSignOnRefused(refused, "id token authorized party does not match")
    try:
        jwt.JWTClaimsRegistry(leeway=CLOCK_LEEWAY_SECONDS, exp={"essential": True},
                              iat={"essential": True}).validate(claims)
    except JoseError as error:
        reason = "id token expired" if "exp" in str(error) or error.error == "expired_token" \
            else f"id token times: {error.error}"
        raise SingleSignOnRefused(refused, reason) from error
    if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(
            claims["nonce"].encode(), nonce.encode()):
        raise SingleSignOnRefused(refused, "id token nonce does not match")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise SingleSignOnRefused(refused, "id token has no subject")
    return claims


def finish_sign_in(pending: PendingSignIn | None, args: dict, ip: str | None,
                   user_agent: str | None) -> User:
    """Finish the flow the provider sent the browser back from: the user, signed in (with
    `login_id` set), or SingleSignOnRefused, audited with its reason. The caller commits."""
    if pending is None:
        raise SingleSignOnRefused("This sign-in is not in progress here, or it took too "
                                  "long. Start again from the sign-in page.", "no flow")
    tenant = db.session.get(Tenant, pending.tenant_id)
    row = settings_of(pending.tenant_id)
    actor = Actor(ActorType.USER, label="single sign-on", ip=ip, user_agent=user_agent)
    details: dict = {"issuer": row.issuer if row else None}
    try:
        if tenant is None or row is None or not row.enabled:
            raise SingleSignOnRefused("Single sign-on is off for this organisation.", "sso off")
        state = args.get("state")
        if not isinstance(state, str) or not hmac.compare_digest(
                state.encode("utf-8", "replace"), pending.state.encode()):
            raise SingleSignOnRefused("This sign-in did not start here (its state does not "
                                      "match). Start again from the sign-in page.",
                                      "state mismatch")
        if args.get("error"):
            raise SingleSignOnRefused(
                "Your organisation's sign-in service did not sign you in.",
                f"provider error: {str(args.get('error'))[:60]}")
        code = args.get("code")
        if not isinstance(code, str) or not code or len(code) > 2048:
            raise SingleSignOnRefused("The sign-in service sent no code. Start again.",
                                      "no code")
        metadata = discover(row)
        _refuse_private(metadata["token_endpoint"], "token endpoint")
        with _client(row, pending.redirect_uri) as client:
            try:
                token = client.fetch_token(metadata["token_endpoint"],
                                           grant_type="authorization_code", code=code,
                                           code_verifier=pending.code_verifier)
            except (AuthlibBaseError, requests.RequestException, ValueError) as error:
                raise SingleSignOnRefused(
                    "Your organisation's sign-in service refused this sign-in. Start again.",
                    f"token exchange: {getattr(error, 'error', None) or type(error).__name__}"
                ) from error
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SingleSignOnRefused("Your organisation's sign-in service sent no ID token.",
                                      "no id token")
        claims = verify_id_token(row, metadata, id_token, pending.nonce)
        email = str(claims.get("email") or "").strip().lower()[:254]
        details.update(email=email or None, subject=claims["sub"][:255])
        actor = Actor(ActorType.USER, label=email or "single sign-on", ip=ip,
                      user_agent=user_agent)
        return _sign_in(actor, tenant, row, claims, email, ip, user_agent)
    except SingleSignOnRefused as refused:
        record_event(actor, "auth.sso_failed", tenant_id=tenant.id if tenant else None,
                     data={"reason": refused.reason, **details})
        raise


def _sign_in(actor: Actor, tenant: Tenant, row: TenantSingleSignOn, claims: dict, email: str,
             ip: str | None, user_agent: str | None) -> User:
    if claims.get("email_verified") not in (True, "true"):
        raise SingleSignOnRefused("Your organisation's sign-in service has not verified your "
                                  "email address, so Cleardesk cannot match it to a person.",
                                  "email not verified")
    domain = email.rpartition("@")[2]
    if "@" not in email or domain not in (row.allowed_domains or []):
        raise SingleSignOnRefused(f"{tenant.display_name} does not sign in people with that "
                                  "email address through single sign-on.",
                                  "email domain not allowed")
    user = find_user_by_email(email)
    joined = False
    if user is None:
        if not row.jit_enabled:
            raise SingleSignOnRefused(
                f"There is no Cleardesk account for {email} in {tenant.display_name}. Ask "
                "your admin to add you.", "unknown email")
        user = _join_just_in_time(actor, tenant, row, email, claims)
        joined = True
    elif not user.active:
        raise SingleSignOnRefused("This account is deactivated.", "deactivated")
    elif user.membership_in(tenant.id) is None:
        # Just-in-time membership makes new people only: an existing account belongs to
        # other tenants, whose admins decide who it is.
        raise SingleSignOnRefused(
            f"{email} is not a member of {tenant.display_name}. Ask your admin to add you.",
            "not a member")
    untrusting = _tenants_not_trusting(user, row)
    if untrusting:
        raise SingleSignOnRefused(
            "You also work in organisations that do not use this sign-in service; sign in "
            "with your password (or through their single sign-on) instead.",
            "member of tenants that do not trust this provider")
    now = utcnow()
    link = db.session.scalars(select(SingleSignOnLink).where(
        SingleSignOnLink.tenant_id == tenant.id, SingleSignOnLink.user_id == user.id)).first()
    previous_subject = None
    if link is None:
        link = SingleSignOnLink(tenant_id=tenant.id, user_id=user.id, subject=claims["sub"],
                                created_at=now)
        db.session.add(link)
    elif link.subject != claims["sub"]:
        previous_subject, link.subject = link.subject, claims["sub"][:255]
    link.last_sign_in_at = now
    user.last_login_at = now
    session_id = start_session(user, ip, user_agent)
    db.session.get(UserSession, session_id).sign_in_method = "sso"
    db.session.flush()
    record_event(Actor(ActorType.USER, user=user, label=user.email, ip=ip,
                       user_agent=user_agent),
                 "auth.login", tenant_id=tenant.id,
                 data={"session_id": session_id, "method": "sso", "issuer": row.issuer,
                       "subject": link.subject, "joined": joined,
                       **({"previous_subject": previous_subject} if previous_subject else {})})
    return user


def _join_just_in_time(actor: Actor, tenant: Tenant, row: TenantSingleSignOn, email: str,
                       claims: dict) -> User:
    # Imported here: the admin package, above auth, imports it.
    from app.admin.people import grant_membership

    name = str(claims.get("name") or "").strip()[:200] or email.split("@")[0]
    user = User(email=email, name=name, password_hash=None)
    try:
        with savepoint():  # two first sign-ins of one person at once: one makes the account
            db.session.add(user)
            db.session.flush()
    except IntegrityError as error:
        raise SingleSignOnRefused("Your account was being made by another sign-in at the same "
                                  "moment. Sign in again.", "joined concurrently") from error
    record_event(actor, "user.created", tenant_id=None,
                 data={"user_id": user.id, "email": email, "by": "single sign-on"})
    grant_membership(actor, user=user, tenant=tenant, roles=[row.jit_role])
    record_event(actor, "auth.sso_joined", tenant_id=tenant.id,
                 data={"user_id": user.id, "email": email, "role": row.jit_role,
                       "issuer": row.issuer, "subject": claims["sub"][:255]})
    db.session.refresh(user)
    return user


def _tenants_not_trusting(user: User, row: TenantSingleSignOn) -> list[int]:
    """The person's other tenants that do not use this provider: a provider vouches for
    people in the tenants that chose it, so one tenant's provider cannot open another's data
    (its admin could otherwise add anyone's email and have the provider assert it)."""
    others = [m.tenant_id for m in user.memberships if m.tenant_id != row.tenant_id]
    if not others:
        return []
    trusting = set(db.session.scalars(select(TenantSingleSignOn.tenant_id).where(
        TenantSingleSignOn.tenant_id.in_(others), TenantSingleSignOn.enabled.is_(True),
        TenantSingleSignOn.issuer == row.issuer)))
    return sorted(set(others) - trusting)


# ---------------------------------------------------------------------------------------------
# The access review.


def link_of(tenant_id: int, user_id: int) -> SingleSignOnLink | None:
    """The person's link to the tenant's provider, once they signed in through it."""
    return db.session.scalars(select(SingleSignOnLink).where(
        SingleSignOnLink.tenant_id == tenant_id, SingleSignOnLink.user_id == user_id)).first()


def unlink_subject(actor: Actor, tenant: Tenant, user: User) -> SingleSignOnLink | None:
    """Forget the provider's subject linked to `user` in `tenant` (an admin's action, audited
    as `auth.sso_unlinked` with the subject): their next sign-in through the provider matches
    them again by verified email and links whatever subject it then names. None, changing
    nothing, when no subject is linked (a second click)."""
    # Imported here: the admin package, above auth, imports it.
    from app.admin.access import require_admin

    require_admin(actor, tenant)
    link = link_of(tenant.id, user.id)
    if link is None:
        return None
    row = settings_of(tenant.id)
    db.session.delete(link)
    db.session.flush()
    record_event(actor, "auth.sso_unlinked", tenant_id=tenant.id,
                 data={"user_id": user.id, "subject": link.subject,
                       "issuer": row.issuer if row else None,
                       "linked_at": link.created_at, "last_sign_in_at": link.last_sign_in_at})
    return link


def sso_status_by_user(tenant: Tenant) -> dict[int, SingleSignOnLink]:
    """The tenant's people who have signed in through its provider, with their link."""
    return {link.user_id: link for link in db.session.scalars(
        select(SingleSignOnLink).where(SingleSignOnLink.tenant_id == tenant.id))}
