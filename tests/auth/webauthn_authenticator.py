"""A software WebAuthn authenticator for the tests: a P-256 key from `cryptography`, and the
authenticator data, attestation object ("none") and client data that a browser and a real
authenticator would send, built with fido2's own types. It answers the options Cleardesk gives,
so the server's checks run on real signatures."""
from __future__ import annotations

import hashlib
import json
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    Aaguid,
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    CollectedClientData,
)

FLAGS_CREATE = AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.UV | AuthenticatorData.FLAG.AT
FLAGS_GET = AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.UV


class SoftAuthenticator:
    """One credential, made by `create` and used by `get`; `counter` is the signature count it
    reports next (a test may set it back, as a cloned authenticator would)."""

    def __init__(self, origin: str = "http://localhost"):
        self.origin = origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.counter = 0

    def create(self, options: dict, *, origin: str | None = None,
               challenge: str | None = None, rp_id: str | None = None) -> dict:
        """The browser's JSON answer to navigator.credentials.create with `options` (the
        server's JSON); `origin`, `challenge` and `rp_id` may be overridden to misbehave."""
        public_key = options["publicKey"]
        rp_id = rp_id or public_key["rp"]["id"]
        credential = AttestedCredentialData.create(
            Aaguid.NONE, self.credential_id, ES256.from_cryptography_key(self.key.public_key()))
        auth_data = AuthenticatorData.create(hashlib.sha256(rp_id.encode()).digest(),
                                             FLAGS_CREATE, self.counter, credential)
        client_data = CollectedClientData.create(
            "webauthn.create", challenge or public_key["challenge"], origin or self.origin)
        attestation = AttestationObject.create("none", auth_data, {})
        return {"id": websafe_encode(self.credential_id),
                "rawId": websafe_encode(self.credential_id), "type": "public-key",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": websafe_encode(client_data),
                             "attestationObject": websafe_encode(attestation)}}

    def get(self, options: dict, *, origin: str | None = None,
            challenge: str | None = None) -> dict:
        """The browser's JSON answer to navigator.credentials.get with `options`; the counter
        goes up by one first."""
        public_key = options["publicKey"]
        allowed = [websafe_decode(d["id"]) for d in public_key.get("allowCredentials") or []]
        assert not allowed or self.credential_id in allowed, "not asked for this credential"
        self.counter += 1
        auth_data = AuthenticatorData.create(
            hashlib.sha256(public_key["rpId"].encode()).digest(), FLAGS_GET, self.counter)
        client_data = CollectedClientData.create(
            "webauthn.get", challenge or public_key["challenge"], origin or self.origin)
        signature = self.key.sign(bytes(auth_data) + client_data.hash,
                                  ec.ECDSA(hashes.SHA256()))
        return {"id": websafe_encode(self.credential_id),
                "rawId": websafe_encode(self.credential_id), "type": "public-key",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": websafe_encode(client_data),
                             "authenticatorData": websafe_encode(auth_data),
                             "signature": websafe_encode(signature)}}


def as_json(answer: dict) -> str:
    return json.dumps(answer)
