"""The TOTP second factor: enrolling (secret and QR code, confirmed by a code), recovery codes,
disabling, and checking a code for sign-in and step-up. Every change, success and failure is
an audit event in the global chain; the caller commits, also after a refusal, so failures are
kept.

At rest: the TOTP secret is encrypted with Fernet (AES-128-CBC with HMAC-SHA256) under a key
derived from SECRET_KEY by HKDF-SHA256 (its own salt and info, so the key is used for nothing
else); a recovery code is kept as SHA-256 of a random per-code salt and the code."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, exists, func, or_, select, update

from app.actors import Actor
from app.audit.services import record_event
from app.auth.models import Passkey, RecoveryCode, SecondFactor
from app.auth.sealing import fernet
from app.errors import InvalidTransition, PermissionDenied
from app.extensions import db
from app.models import Membership, MembershipRole, Role, Tenant, User
from app.types import utcnow

# Roles that decide or administer: a tenant may require them to have a second factor.
FACTOR_ROLES = frozenset({Role.APPROVER.value, Role.ANALYST.value, Role.MANAGER.value,
                          Role.ADMIN.value})
RECOVERY_CODE_COUNT = 10
ISSUER = "Cleardesk"
STEP_SECONDS = 30
# A code of the step before or after is accepted too (clocks drift).
VALID_WINDOW = 1


class FactorRefused(PermissionDenied):
    pass


# ---------------------------------------------------------------------------------------------
# Encryption of the TOTP secret.


def _fernet() -> Fernet:
    return fernet(b"cleardesk second factor", b"totp secret encryption v1")


def encrypt_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode("ascii")).decode("ascii")


def decrypt_secret(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("ascii")
    except InvalidToken as error:  # SECRET_KEY changed: the factor cannot be checked
        raise FactorRefused("Your second factor cannot be checked; ask an admin.") from error


# ---------------------------------------------------------------------------------------------
# Reading.


def factor_of(user: User) -> SecondFactor | None:
    """The person's confirmed factor, or None (an enrolment in progress is not a factor)."""
    row = db.session.get(SecondFactor, user.id)
    return row if row is not None and row.confirmed_at is not None else None


def pending_enrolment(user: User) -> SecondFactor | None:
    row = db.session.get(SecondFactor, user.id)
    return row if row is not None and row.confirmed_at is None else None


def recovery_codes_left(user_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))) or 0


def requirement_clause(user_id):
    """SQL: the person holds a deciding or administering role in a tenant that requires a
    second factor."""
    return exists().where(
        Membership.user_id == user_id, Membership.tenant_id == Tenant.id,
        Tenant.require_second_factor.is_(True),
        MembershipRole.membership_id == Membership.id,
        MembershipRole.role.in_(sorted(FACTOR_ROLES)))


def enrolled_clause(user_id):
    """SQL: the person has a second factor: a confirmed TOTP app or a passkey."""
    return or_(exists().where(SecondFactor.user_id == user_id,
                              SecondFactor.confirmed_at.is_not(None)),
               exists().where(Passkey.user_id == user_id))


def factor_required(user: User) -> bool:
    return bool(db.session.scalar(select(requirement_clause(user.id))))


def factor_required_in(user: User, tenant_id: int) -> bool:
    """Whether this tenant requires the person to have a second factor."""
    tenant = db.session.get(Tenant, tenant_id)
    return bool(tenant and tenant.require_second_factor
                and user.roles_in(tenant_id) & FACTOR_ROLES)


def provisioning_uri(user: User, row: SecondFactor) -> str:
    return pyotp.TOTP(decrypt_secret(row.secret_encrypted)).provisioning_uri(
        name=user.email, issuer_name=ISSUER)


def qr_code_svg(uri: str) -> str:
    """The QR code of an otpauth URI as inline SVG (no file, no request to anywhere)."""
    return segno.make(uri, error="m").svg_inline(scale=5, dark="#111827", light="#ffffff",
                                                  title="QR code for your authenticator app")


def secret_for_display(row: SecondFactor) -> str:
    """The secret in groups of four, for typing into an app by hand."""
    secret = decrypt_secret(row.secret_encrypted)
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


# ---------------------------------------------------------------------------------------------
# Enrolling and disabling.


def start_enrolment(actor: Actor) -> SecondFactor:
    """A new secret for the actor to add to their authenticator app; a previous unfinished
    enrolment is replaced. Refused when a factor is already on (disable it first)."""
    user = actor.user
    row = db.session.get(SecondFactor, user.id, with_for_update=True)
    if row is not None and row.confirmed_at is not None:
        raise InvalidTransition("You already have a second factor. Disable it first to "
                                "set up another.")
    if row is not None:
        db.session.delete(row)
        db.session.flush()
    row = SecondFactor(user_id=user.id, secret_encrypted=encrypt_secret(pyotp.random_base32()),
                       created_at=utcnow())
    db.session.add(row)
    db.session.flush()
    record_event(actor, "auth.factor_enrolment_started", tenant_id=None,
                 data={"user_id": user.id, "method": "totp"})
    return row


def confirm_enrolment(actor: Actor, code: str) -> list[str]:
    """Turn the enrolment on with a code from the app; returns the new recovery codes, to show
    once. A wrong code is audited and refused (FactorRefused)."""
    user = actor.user
    row = db.session.get(SecondFactor, user.id, with_for_update=True)
    if row is None or row.confirmed_at is not None:
        raise InvalidTransition("There is no second factor being set up. Start again.")
    if not _accept_totp(row, code):
        record_event(actor, "auth.factor_failed", tenant_id=None,
                     data={"user_id": user.id, "purpose": "enrol"})
        raise FactorRefused("That code does not match. Check the time on your phone and "
                            "enter the current code.")
    row.confirmed_at = utcnow()
    codes = _new_recovery_codes(user.id)
    db.session.flush()
    record_event(actor, "auth.factor_enrolled", tenant_id=None,
                 data={"user_id": user.id, "method": "totp",
                       "recovery_codes": RECOVERY_CODE_COUNT})
    return codes


def disable_factor(actor: Actor, code: str) -> None:
    """Turn the actor's factor off; needs a current code or a recovery code. Refused when it
    is their last second factor and a tenant of theirs requires one."""
    user = actor.user
    if factor_required(user) and not db.session.scalar(
            select(exists().where(Passkey.user_id == user.id))):
        raise InvalidTransition("This is your last second factor, and your organisation "
                                "requires one for your role. Add a passkey first.")
    method = verify_code(actor, user, code, purpose="disable")
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.session.execute(delete(SecondFactor).where(SecondFactor.user_id == user.id))
    record_event(actor, "auth.factor_disabled", tenant_id=None,
                 data={"user_id": user.id, "method": "totp", "confirmed_with": method})


def regenerate_recovery_codes(actor: Actor, code: str) -> list[str]:
    """New recovery codes (the old ones stop working); needs a current code."""
    user = actor.user
    method = verify_code(actor, user, code, purpose="recovery_codes")
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = _new_recovery_codes(user.id)
    record_event(actor, "auth.recovery_codes_renewed", tenant_id=None,
                 data={"user_id": user.id, "recovery_codes": RECOVERY_CODE_COUNT,
                       "confirmed_with": method})
    return codes


def _code_hash(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode("ascii")).hexdigest()


def _new_recovery_codes(user_id: int) -> list[str]:
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))  # ~49 bits
        salt = secrets.token_hex(16)
        db.session.add(RecoveryCode(user_id=user_id, salt=salt, code_hash=_code_hash(salt, raw),
                                    created_at=utcnow()))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


# ---------------------------------------------------------------------------------------------
# Checking a code.


def _now_step() -> int:
    return int(time.time()) // STEP_SECONDS


def _accept_totp(row: SecondFactor, code: str) -> bool:
    """Whether `code` is the TOTP of a time step near now that is later than the last one
    accepted; if so, that step is remembered (each code works once)."""
    code = re.sub(r"\s", "", code or "")
    if not re.fullmatch(r"\d{6}", code):
        return False
    totp = pyotp.TOTP(decrypt_secret(row.secret_encrypted))
    now = _now_step()
    for step in range(now - VALID_WINDOW, now + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            if row.last_used_step is not None and step <= row.last_used_step:
                return False  # this code (or an earlier one) was used already
            # Conditional, so two requests with one code cannot both win.
            won = db.session.execute(
                update(SecondFactor).where(
                    SecondFactor.user_id == row.user_id,
                    (SecondFactor.last_used_step.is_(None))
                    | (SecondFactor.last_used_step < step))
                .values(last_used_step=step, last_used_at=utcnow())
                .execution_options(synchronize_session=False)).rowcount == 1
            if won:
                row.last_used_step = step
            return won
    return False


def _accept_recovery_code(user_id: int, code: str) -> bool:
    raw = re.sub(r"[\s-]", "", code or "").lower()
    if not re.fullmatch(r"[a-z0-9]{10}", raw):
        return False
    for row in db.session.scalars(select(RecoveryCode).where(
            RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))):
        if hmac.compare_digest(row.code_hash, _code_hash(row.salt, raw)):
            return db.session.execute(
                update(RecoveryCode).where(RecoveryCode.id == row.id,
                                           RecoveryCode.used_at.is_(None))
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)).rowcount == 1
    return False


def verify_code(actor: Actor, user: User, code: str, *, purpose: str,
                tenant_id: int | None = None, data: dict | None = None,
                passkey: dict | None = None, origin: str | None = None) -> str:
    """Check a second factor of `user` for `purpose` (sign_in, disable, step_up_link,
    step_up_policy, ...): a code of their TOTP app or one of their recovery codes, or, given
    `passkey` (the browser's answer to app.auth.passkeys.assertion_options for this purpose)
    and the `origin` the request came to, a passkey of theirs. Returns "totp",
    "recovery_code" or "passkey"; raises FactorRefused. Both outcomes are audited."""
    # Imported here: app.auth.passkeys imports this module.
    from app.auth.passkeys import PasskeyRefused, accept_assertion

    details = {"user_id": user.id, "purpose": purpose, **(data or {})}
    if passkey is not None:
        try:
            key = accept_assertion(user, origin or "", purpose, passkey)
        except PasskeyRefused as refused:
            record_event(actor, "auth.factor_failed", tenant_id=tenant_id,
                         data={**details, "method": "passkey", "reason": refused.reason})
            raise FactorRefused(refused.message) from refused
        record_event(actor, "auth.factor_verified", tenant_id=tenant_id,
                     data={**details, "method": "passkey", "passkey_id": key.id,
                           "passkey_name": key.name})
        return "passkey"
    row = db.session.get(SecondFactor, user.id, with_for_update=True)
    if row is None or row.confirmed_at is None:
        record_event(actor, "auth.factor_failed", tenant_id=tenant_id,
                     data={**details, "reason": "no authenticator app"})
        raise FactorRefused("You have no authenticator app set up: use your passkey."
                            if db.session.scalar(select(enrolled_clause(user.id)))
                            else "There is no second factor to check.")
    method = None
    if _accept_totp(row, code):
        method = "totp"
    elif _accept_recovery_code(user.id, code):
        method = "recovery_code"
    if method is None:
        record_event(actor, "auth.factor_failed", tenant_id=tenant_id, data=details)
        raise FactorRefused("That code is not valid, or it was used already. Enter the "
                            "current code from your app, or one of your recovery codes.")
    left = recovery_codes_left(user.id) if method == "recovery_code" else None
    record_event(actor, "auth.factor_verified", tenant_id=tenant_id,
                 data={**details, "method": method,
                       **({"recovery_codes_left": left} if left is not None else {})})
    return method
