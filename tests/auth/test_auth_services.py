"""The sign-in service: password storage, failure counting, the lock and its expiry, and the
audit events each outcome writes."""
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.actors import Actor
from app.audit.models import GLOBAL_CHAIN, AuditEvent
from app.audit.services import verify_chain
from app.auth.models import UserSession
from app.auth.passwords import check_password
from app.auth.services import SignInRefused, authenticate, create_user, email_throttle
from app.errors import ValidationFailed
from app.extensions import db
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import PASSWORD

IP, AGENT = "203.0.113.7", "pytest-agent"


@pytest.fixture
def user(make_user):
    return make_user("person@example.com")


def _sign_in(email, password=PASSWORD):
    """Authenticate and commit, as the login route does whatever the outcome."""
    try:
        return authenticate(email, password, IP, AGENT)
    finally:
        commit()


def _actions() -> list[str]:
    return list(db.session.scalars(
        select(AuditEvent.action).where(AuditEvent.chain_id == GLOBAL_CHAIN,
                                        AuditEvent.action.like("auth.%"))
        .order_by(AuditEvent.seq)))


def test_passwords_are_stored_as_argon2id_hashes(user):
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert check_password(user.password_hash, PASSWORD)
    assert not check_password(user.password_hash, PASSWORD + "!")


def test_the_same_password_hashes_differently_for_two_users(make_user, user):
    other = make_user("other@example.com")
    assert other.password_hash != user.password_hash


def test_a_user_without_a_password_hash_can_never_sign_in(user):
    user.password_hash = None
    commit()
    with pytest.raises(SignInRefused):
        _sign_in("person@example.com", "not-a-real-password")


def test_create_user_refuses_short_passwords_and_duplicate_emails(app, user):
    system = Actor.system("tests")
    with pytest.raises(ValidationFailed) as short:
        create_user(system, email="new@example.com", name="New", password="short")
    assert "password" in short.value.fields
    with pytest.raises(ValidationFailed) as duplicate:
        create_user(system, email=" PERSON@example.com", name="Dup", password=PASSWORD)
    assert "email" in duplicate.value.fields


def test_right_password_returns_the_user_with_a_new_session_and_records_the_sign_in(user):
    signed_in = _sign_in("person@example.com")

    assert signed_in.id == user.id
    assert signed_in.last_login_at is not None
    session = db.session.scalars(select(UserSession)).one()
    assert signed_in.get_id().startswith(f"{user.id}:{session.id}:")
    event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login")).one()
    assert event.data == {"ip": IP, "user_agent": AGENT, "session_id": session.id}


def test_a_refused_sign_in_starts_no_session(user):
    with pytest.raises(SignInRefused):
        _sign_in("person@example.com", "not the password")
    assert db.session.scalars(select(UserSession)).all() == []


def test_each_failure_is_counted_and_audited(user):
    for expected in (1, 2):
        with pytest.raises(SignInRefused):
            _sign_in("person@example.com", "wrong password here")
        assert email_throttle("person@example.com").failures == expected
    assert _actions() == ["auth.login_failed", "auth.login_failed"]


def test_the_fifth_failure_locks_the_account_for_the_lockout_period(app, user):
    started = utcnow()
    for _ in range(5):
        with pytest.raises(SignInRefused):
            _sign_in("person@example.com", "wrong password here")

    lockout = timedelta(seconds=app.config["LOGIN_LOCKOUT_SECONDS"])
    locked_until = email_throttle("person@example.com").locked_until
    assert started + lockout <= locked_until <= utcnow() + lockout
    assert _actions() == ["auth.login_failed"] * 5 + ["auth.locked"]
    with pytest.raises(SignInRefused, match="locked"):
        _sign_in("person@example.com")
    assert _actions()[-1] == "auth.login_refused"


def test_sign_in_works_again_once_the_lock_has_expired(user):
    for _ in range(5):
        with pytest.raises(SignInRefused):
            _sign_in("person@example.com", "wrong password here")
    commit()
    email_throttle("person@example.com").locked_until = utcnow() - timedelta(seconds=1)
    commit()

    assert _sign_in("person@example.com").id == user.id
    assert email_throttle("person@example.com").locked_until is None


def test_a_success_resets_the_failure_count(user):
    for _ in range(4):
        with pytest.raises(SignInRefused):
            _sign_in("person@example.com", "wrong password here")

    _sign_in("person@example.com")
    assert email_throttle("person@example.com").failures == 0

    with pytest.raises(SignInRefused):
        _sign_in("person@example.com", "wrong password here")
    assert email_throttle("person@example.com").failures == 1
    assert email_throttle("person@example.com").locked_until is None


def test_unknown_email_is_refused_and_audited_without_an_actor(app):
    with pytest.raises(SignInRefused) as refused:
        _sign_in("ghost@example.com")

    assert "do not match" in refused.value.message
    event = db.session.scalars(select(AuditEvent)).one()
    assert (event.action, event.chain_id, event.actor_id) == ("auth.login_failed", 0, None)
    assert event.actor_label == "ghost@example.com"


def test_sign_in_events_keep_the_global_chain_verifiable(user):
    with pytest.raises(SignInRefused):
        _sign_in("ghost@example.com")
    with pytest.raises(SignInRefused):
        _sign_in("person@example.com", "wrong password here")
    _sign_in("person@example.com")

    report = verify_chain(GLOBAL_CHAIN)
    assert report.ok, report.problem
    # user.created by the factory, then the three sign-in attempts.
    assert report.events == 4
