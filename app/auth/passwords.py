"""Password hashing with Argon2id (argon2-cffi; RFC 9106 low-memory profile by default)."""
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, has_app_context

# The test suite hashes hundreds of passwords; it uses a cheaper (still Argon2id) profile.
PROFILES = {
    "default": {},
    "fast-for-tests": {"time_cost": 1, "memory_cost": 1024, "parallelism": 1},
}


@lru_cache(maxsize=None)
def _hasher(profile: str) -> tuple[PasswordHasher, str]:
    hasher = PasswordHasher(**PROFILES[profile])
    # Verified against when the email is unknown, so both paths cost the same time.
    return hasher, hasher.hash("not-a-real-password")


def _current() -> tuple[PasswordHasher, str]:
    profile = current_app.config.get("ARGON2_PROFILE", "default") if has_app_context() else "default"
    return _hasher(profile)


def hash_password(password: str) -> str:
    return _current()[0].hash(password)


def check_password(password_hash: str | None, password: str) -> bool:
    hasher, dummy = _current()
    try:
        return hasher.verify(password_hash or dummy, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False
