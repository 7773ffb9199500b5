"""Secrets Cleardesk must read back (a TOTP secret, an identity provider's client secret) are
kept encrypted with Fernet under a key derived from SECRET_KEY by HKDF-SHA256, one key per use
(its own salt and info string): a copy of the database alone reads none of them, and rotating
SECRET_KEY makes them all unreadable."""
from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app


@lru_cache(maxsize=16)
def _derived(secret_key: str, salt: bytes, info: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
               info=info).derive(secret_key.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def fernet(salt: bytes, info: bytes) -> Fernet:
    """The Fernet of one use (salt and info name it) under this deployment's SECRET_KEY."""
    return _derived(str(current_app.config["SECRET_KEY"]), salt, info)
