"""WebAuthn passkeys as a second factor, verified with Yubico's `fido2` library: registering one
(attestation "none"; the relying party is the host the browser asked, and the origin of the
answer must be the one the request came to), listing and removing them, and checking an
assertion wherever a TOTP code is accepted (app.auth.second_factor.verify_code).

Challenges are kept server side (PasskeyChallenge): each is bound to one person and one
purpose, expires after CHALLENGE_SECONDS and is used up by a conditional UPDATE before its answer
is checked, so no answer works twice, also when two arrive at once. A signature counter that
does not move forward (a cloned authenticator) is refused. Registering and removing are audited
as factor changes (method "passkey"); the caller commits, also after a refusal."""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from urllib.parse import urlsplit

from fido2 import cbor
from fido2.cose import CoseKey
from fido2.server import Fido2Server
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    Aaguid,
    AttestedCredentialData,
    AuthenticationResponse,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    RegistrationResponse,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from flask import current_app
from sqlalchemy import delete, select, update

from app.actors import Actor
from app.audit.services import record_event
from app.auth.models import Passkey, PasskeyChallenge, SecondFactor
from app.auth.second_factor import factor_of, factor_required
from app.errors import InvalidTransition, NotFound, ValidationFailed
from app.extensions import db
from app.models import User
from app.types import utcnow

CHALLENGE_SECONDS = 5 * 60
MAX_PASSKEYS = 10
NAME_LENGTH = 60
# The purposes an assertion may be asked for (app.auth.second_factor.verify_code's purposes).
ASSERTION_PURPOSES = frozenset({"sign_in", "step_up_link", "step_up_policy"})
REGISTER = "register"
SIGN_IN = "passkey_sign_in"  # a sign-in with a passkey alone, no password
RP_NAME = "Cleardesk"


class PasskeyRefused(Exception):
    """An answer from an authenticator that is not accepted: `reason` is for the audit trail,
    the message for the person."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.message = message
        self.reason = reason


def parse_answer(text: str | None) -> dict:
    """The browser's JSON answer as a dict ({} when it is not one: refused as unreadable)."""
    try:
        data = json.loads(text or "")
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------------
# Reading.


def passkeys_of(user: User) -> list[Passkey]:
    return list(db.session.scalars(
        select(Passkey).where(Passkey.user_id == user.id).order_by(Passkey.created_at,
                                                                     Passkey.id)))


def factor_methods(user_ids) -> dict[int, set[str]]:
    """user id -> the kinds of second factor they have ("totp", "passkey")."""
    ids = list(user_ids)
    methods: dict[int, set[str]] = {i: set() for i in ids}
    if not ids:
        return methods
    for user_id in db.session.scalars(select(SecondFactor.user_id).where(
            SecondFactor.user_id.in_(ids), SecondFactor.confirmed_at.is_not(None))):
        methods[user_id].add("totp")
    for user_id in db.session.scalars(select(Passkey.user_id).where(
            Passkey.user_id.in_(ids)).distinct()):
        methods[user_id].add("passkey")
    return methods


# ---------------------------------------------------------------------------------------------
# The relying party and its challenges.


def relying_party_id(origin: str) -> str:
    """The RP id of an origin: its host name (a passkey works on the host it was made on)."""
    host = urlsplit(origin).hostname
    if not host:
        raise PasskeyRefused("This page's address cannot use passkeys.", "no host in origin")
    return host


def _server(origin: str) -> Fido2Server:
    # The answer's origin must be the very origin the request came to (scheme, host, port).
    return Fido2Server({"id": relying_party_id(origin), "name": RP_NAME}, attestation="none",
                       verify_origin=lambda theirs: hmac.compare_digest(
                           str(theirs).encode("utf-8", "replace"), origin.encode()))


def user_handle(user: User) -> bytes:
    """The person's WebAuthn user handle: an HMAC of their id, no email or name in it."""
    key = current_app.config["SECRET_KEY"].encode("utf-8")
    return hmac.new(key, f"cleardesk webauthn user {user.id}".encode(),
                    hashlib.sha256).digest()


def _issue(user: User | None, purpose: str, origin: str, state: dict) -> None:
    now = utcnow()
    # Old challenges are of no use to anyone: dropped as new ones are made.
    db.session.execute(delete(PasskeyChallenge).where(
        PasskeyChallenge.expires_at < now - timedelta(hours=1)))
    db.session.add(PasskeyChallenge(
        id=state["challenge"], user_id=user.id if user else None, purpose=purpose,
        origin=origin[:300],
        user_verification=state.get("user_verification"), created_at=now,
        expires_at=now + timedelta(seconds=CHALLENGE_SECONDS)))
    db.session.flush()


def _take_challenge(user: User | None, purpose: str, origin: str, challenge: bytes) -> dict:
    """Use up the challenge the answer was made for: it must be one issued to this person (to
    no one, for a sign-in with a passkey alone) for this purpose, unused and not expired.
    Returns fido2's state for it."""
    challenge_id = websafe_encode(challenge)
    row = db.session.get(PasskeyChallenge, challenge_id) if len(challenge_id) <= 64 else None
    if row is None or row.user_id != (user.id if user else None) or row.purpose != purpose:
        raise PasskeyRefused("This passkey answer was not asked for here. Try again.",
                             "challenge not issued")
    if row.origin != origin[:300]:
        raise PasskeyRefused("This passkey answer was asked for at another address. Try "
                             "again.", "challenge issued for another origin")
    taken = db.session.execute(
        update(PasskeyChallenge)
        .where(PasskeyChallenge.id == row.id, PasskeyChallenge.used_at.is_(None),
               PasskeyChallenge.expires_at > utcnow())
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if taken != 1:
        raise PasskeyRefused("This passkey answer was used already or took too long. Try "
                             "again.", "challenge used or expired")
    return {"challenge": row.id, "user_verification": row.user_verification}


def _descriptor(row: Passkey) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(type=PublicKeyCredentialType.PUBLIC_KEY,
                                         id=websafe_decode(row.credential_id))


def _credential(row: Passkey) -> AttestedCredentialData:
    return AttestedCredentialData.create(Aaguid.NONE, websafe_decode(row.credential_id),
                                         CoseKey.parse(cbor.decode(row.public_key)))


# ---------------------------------------------------------------------------------------------
# Registering and removing.


def registration_options(actor: Actor, origin: str) -> dict:
    """The options for navigator.credentials.create (JSON, base64url), with a new challenge;
    the person's passkeys are excluded (an authenticator holds one of theirs at most)."""
    user = actor.user
    existing = passkeys_of(user)
    if len(existing) >= MAX_PASSKEYS:
        raise InvalidTransition(f"You have {MAX_PASSKEYS} passkeys, the most Cleardesk keeps. "
                                "Remove one to add another.")
    options, state = _server(origin).register_begin(
        PublicKeyCredentialUserEntity(id=user_handle(user), name=user.email,
                                      display_name=user.name or user.email),
        credentials=[_descriptor(p) for p in existing],
        resident_key_requirement=ResidentKeyRequirement.PREFERRED,
        user_verification=UserVerificationRequirement.PREFERRED)
    _issue(user, REGISTER, origin, state)
    return dict(options)


def clean_name(name: str | None) -> str:
    name = " ".join((name or "").split())
    if not name or len(name) > NAME_LENGTH:
        raise ValidationFailed("Give the passkey a name.",
                               {"name": f"a name of up to {NAME_LENGTH} characters, such as "
                                        "\"Work laptop\""})
    return name


def register_passkey(actor: Actor, origin: str, name: str, response: dict) -> Passkey:
    """Keep the passkey the browser made (its answer to registration_options). A refused
    answer is audited (`auth.factor_failed`) and raises PasskeyRefused."""
    user = actor.user
    name = clean_name(name)
    try:
        try:
            registration = RegistrationResponse.from_dict(response)
            challenge = registration.response.client_data.challenge
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise PasskeyRefused("Your browser's answer could not be read. Try again.",
                                 f"malformed registration: {type(error).__name__}") from error
        state = _take_challenge(user, REGISTER, origin, challenge)
        try:
            auth_data = _server(origin).register_complete(state, registration)
        except (ValueError, TypeError, KeyError) as error:
            raise PasskeyRefused("The passkey could not be checked. Try again.",
                                 f"registration: {str(error)[:80]}") from error
        credential = auth_data.credential_data
        credential_id = websafe_encode(credential.credential_id)
        if len(credential_id) > 1400 or db.session.scalar(
                select(Passkey.id).where(Passkey.credential_id == credential_id)):
            raise PasskeyRefused("That passkey is registered already.",
                                 "credential registered already")
    except PasskeyRefused as refused:
        record_event(actor, "auth.factor_failed", tenant_id=None,
                     data={"user_id": user.id, "purpose": "enrol", "method": "passkey",
                           "reason": refused.reason})
        raise
    row = Passkey(user_id=user.id, credential_id=credential_id,
                  public_key=cbor.encode(dict(credential.public_key)),
                  sign_count=auth_data.counter, name=name, created_at=utcnow())
    db.session.add(row)
    db.session.flush()
    record_event(actor, "auth.factor_enrolled", tenant_id=None,
                 data={"user_id": user.id, "method": "passkey", "passkey_id": row.id,
                       "name": name, "rp_id": relying_party_id(origin)})
    return row


def remove_passkey(actor: Actor, passkey_id: int) -> Passkey:
    """Remove one of the actor's passkeys. Refused when it is their last second factor and a
    tenant of theirs requires one."""
    user = actor.user
    row = db.session.get(Passkey, passkey_id, with_for_update=True)
    if row is None or row.user_id != user.id:
        raise NotFound("There is no such passkey of yours.")
    others = db.session.scalar(select(Passkey.id).where(Passkey.user_id == user.id,
                                                        Passkey.id != row.id).limit(1))
    if others is None and factor_of(user) is None and factor_required(user):
        raise InvalidTransition("This is your last second factor, and your organisation "
                                "requires one for your role. Add another passkey or an "
                                "authenticator app first.")
    db.session.delete(row)
    db.session.flush()
    record_event(actor, "auth.factor_disabled", tenant_id=None,
                 data={"user_id": user.id, "method": "passkey", "passkey_id": row.id,
                       "name": row.name})
    return row


# ---------------------------------------------------------------------------------------------
# Checking an assertion.


def assertion_options(user: User, origin: str, purpose: str) -> dict:
    """The options for navigator.credentials.get (JSON, base64url) for `purpose`, naming the
    person's passkeys, with a new challenge."""
    if purpose not in ASSERTION_PURPOSES:
        raise ValueError(f"not a passkey purpose: {purpose}")
    keys = passkeys_of(user)
    if not keys:
        raise NotFound("There is no passkey to use.")
    options, state = _server(origin).authenticate_begin(
        [_descriptor(p) for p in keys], user_verification=UserVerificationRequirement.PREFERRED)
    _issue(user, purpose, origin, state)
    return dict(options)


def accept_assertion(user: User, origin: str, purpose: str, response: dict) -> Passkey:
    """The passkey of `user` that signed `response` (an answer to assertion_options for
    `purpose`), its counter moved forward; PasskeyRefused otherwise (the caller audits)."""
    authentication, challenge = _parse_assertion(response)
    state = _take_challenge(user, purpose, origin, challenge)
    row = _passkey_named(authentication)
    if row is None or row.user_id != user.id:
        raise PasskeyRefused("That passkey is not one of yours here.",
                             "unknown credential" if row is None
                             else "credential of another person")
    return _check_assertion(row, origin, state, authentication)


def _parse_assertion(response: dict) -> tuple[AuthenticationResponse, bytes]:
    try:
        authentication = AuthenticationResponse.from_dict(response)
        challenge = authentication.response.client_data.challenge
        authentication.response.authenticator_data.counter  # noqa: B018 (parsed here)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise PasskeyRefused("Your browser's answer could not be read. Try again.",
                             f"malformed assertion: {type(error).__name__}") from error
    return authentication, challenge


def _passkey_named(authentication: AuthenticationResponse) -> Passkey | None:
    return db.session.scalars(select(Passkey).where(
        Passkey.credential_id == websafe_encode(authentication.raw_id))).first()


def _check_assertion(row: Passkey, origin: str, state: dict,
                     authentication: AuthenticationResponse) -> Passkey:
    """fido2's checks of the answer against the stored public key, then the counter."""
    counter = authentication.response.authenticator_data.counter
    try:
        _server(origin).authenticate_complete(state, [_credential(row)], authentication)
    except (ValueError, TypeError, KeyError) as error:
        raise PasskeyRefused("The passkey could not be checked. Try again.",
                             f"assertion: {str(error)[:80]}") from error
    # Both counters zero: an authenticator that keeps none (many synced passkeys).
    if (counter or row.sign_count) and counter <= row.sign_count:
        raise PasskeyRefused("This passkey reported an old signature count, as a copy of it "
                             "would. Use another factor, and tell your admin.",
                             "sign count did not increase")
    # Conditional, so two answers of one count cannot both pass.
    forward = Passkey.sign_count == 0 if counter == 0 else Passkey.sign_count < counter
    moved = db.session.execute(
        update(Passkey)
        .where(Passkey.id == row.id, forward)
        .values(sign_count=counter, last_used_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if moved != 1:
        raise PasskeyRefused("This passkey reported an old signature count, as a copy of it "
                             "would. Use another factor, and tell your admin.",
                             "sign count did not increase")
    db.session.refresh(row)
    return row


# ---------------------------------------------------------------------------------------------
# Signing in with a passkey alone.
#
# A passkey that verified its user (a fingerprint, a face, the device's PIN: the UV flag) is
# two factors in one: something held and something known or been. So it may stand in for the
# password and the second step together; one that only proves presence may not.


def sign_in_options(origin: str) -> dict:
    """The options for navigator.credentials.get to sign in with a passkey: no person named
    (the authenticator offers the passkeys it holds for this site), user verification
    required. The challenge belongs to no one until the answer names its passkey."""
    options, state = _server(origin).authenticate_begin(
        [], user_verification=UserVerificationRequirement.REQUIRED)
    _issue(None, SIGN_IN, origin, state)
    return dict(options)


def accept_sign_in(origin: str, response: dict) -> Passkey:
    """The passkey that signed `response` (an answer to sign_in_options), checked, its
    counter moved forward; PasskeyRefused otherwise (the caller audits and throttles)."""
    authentication, challenge = _parse_assertion(response)
    state = _take_challenge(None, SIGN_IN, origin, challenge)
    row = _passkey_named(authentication)
    if row is None:
        raise PasskeyRefused("Cleardesk does not know that passkey. Sign in with your "
                             "password, then add the passkey on your account page.",
                             "unknown credential")
    # The credential id names the passkey and so its person; the user handle the authenticator
    # may send is not compared (it is derived from SECRET_KEY, which may be changed).
    return _check_assertion(row, origin, state, authentication)
