"""The TOTP second factor, with real codes from pyotp: enrolment on the account page (secret and
QR code, confirmed by a code), ten recovery codes shown once and kept hashed, sign-in asking for
a code after the password, no code working twice, disabling with a code, tenants requiring a
factor of the roles that decide or administer, and every change, success and failure audited."""
from __future__ import annotations

import re
import time

import pyotp
import pytest
from sqlalchemy import select

from app.audit.models import GLOBAL_CHAIN, AuditEvent
from app.auth.models import RecoveryCode, SecondFactor
from app.auth.second_factor import decrypt_secret
from app.extensions import db
from app.unit_of_work import commit
from tests.conftest import PASSWORD, FreshContextClient, csrf_from


@pytest.fixture
def northwind(make_tenant):
    return make_tenant("northwind")


@pytest.fixture
def ann(make_user, northwind):
    return make_user("ann@example.com", tenants=[northwind], roles=("approver",), name="Ann")


@pytest.fixture(autouse=True)
def fresh_time_step():
    """Start early in a 30-second step, so the codes a test computes stay in the window the
    server accepts while the test runs."""
    if time.time() % 30 > 20:
        time.sleep(30 - time.time() % 30 + 0.2)


def code(secret: str, steps_from_now: int = 0) -> str:
    """The code of the time step `steps_from_now` away (each step's code works once)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_from_now)


def events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def new_client(app):
    app.test_client_class = FreshContextClient
    return app.test_client()


def password_step(client, email="ann@example.com", password=PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": csrf_from(page.text)})


def sign_in(app, email="ann@example.com"):
    client = new_client(app)
    assert password_step(client, email).status_code == 303
    return client


def code_step(client, value: str):
    page = client.get("/login/code")
    return client.post("/login/code", data={"code": value, "csrf_token": csrf_from(page.text)})


def post(client, path: str, data: dict | None = None):
    token = csrf_from(client.get("/account/second-factor").text)
    return client.post(path, data={"csrf_token": token, **(data or {})})


def enrol(client) -> tuple[str, list[str]]:
    """Set up a factor through the pages; returns the secret and the recovery codes. The
    confirming code is the previous step's, so the current one is left for the test."""
    assert post(client, "/account/second-factor/start").status_code == 303
    page = client.get("/account/second-factor")
    secret = re.search(r'<code class="totp-secret">([A-Z2-7 ]+)</code>', page.text).group(1)
    secret = secret.replace(" ", "")
    done = post(client, "/account/second-factor/confirm", {"code": code(secret, -1)})
    assert done.status_code == 200, done.text
    codes = re.findall(r"<li>([a-z0-9]{5}-[a-z0-9]{5})</li>", done.text)
    return secret, codes


def signed_in(client) -> bool:
    return client.get("/queues/mine").status_code == 200


# ---------------------------------------------------------------------------------------------
# Enrolling.


def test_enrolment_shows_a_qr_code_and_secret_and_a_code_turns_it_on(app, ann):
    client = sign_in(app)
    assert "Set up a second factor" in client.get("/account/").text
    assert post(client, "/account/second-factor/start").status_code == 303
    page = client.get("/account/second-factor")
    assert "<svg" in page.text and "QR code for your authenticator app" in page.text
    secret = re.search(r'<code class="totp-secret">([A-Z2-7 ]+)</code>',
                       page.text).group(1).replace(" ", "")
    row = db.session.get(SecondFactor, ann.id)
    # Kept encrypted: the table does not hold the secret, the app's key opens it.
    assert secret not in row.secret_encrypted and decrypt_secret(row.secret_encrypted) == secret
    assert row.confirmed_at is None

    wrong = post(client, "/account/second-factor/confirm", {"code": "000000"})
    assert wrong.status_code == 422 and "does not match" in wrong.text
    assert events("auth.factor_failed")[0].data["purpose"] == "enrol"

    done = post(client, "/account/second-factor/confirm", {"code": code(secret)})
    assert done.status_code == 200
    codes = re.findall(r"<li>([a-z0-9]{5}-[a-z0-9]{5})</li>", done.text)
    assert len(set(codes)) == 10
    db.session.expire_all()
    assert db.session.get(SecondFactor, ann.id).confirmed_at is not None
    stored = db.session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == ann.id)).all()
    assert len(stored) == 10 and len({r.salt for r in stored}) == 10
    kept = " ".join(f"{r.salt} {r.code_hash}" for r in stored)
    assert not any(c.replace("-", "") in kept for c in codes)
    [enrolled] = events("auth.factor_enrolled")
    assert enrolled.chain_id == GLOBAL_CHAIN and enrolled.actor_id == ann.id
    # Shown once: the page now says how many are left, never the codes.
    page = client.get("/account/second-factor")
    assert "10 recovery codes left" in page.text and codes[0] not in page.text


def test_starting_again_replaces_an_unfinished_enrolment_but_not_a_factor(app, ann):
    client = sign_in(app)
    post(client, "/account/second-factor/start")
    first = db.session.get(SecondFactor, ann.id).secret_encrypted
    post(client, "/account/second-factor/start")
    db.session.expire_all()
    assert db.session.get(SecondFactor, ann.id).secret_encrypted != first
    enrol(client)
    again = post(client, "/account/second-factor/start")
    assert again.status_code == 409


# ---------------------------------------------------------------------------------------------
# Signing in.


def test_sign_in_asks_for_a_code_after_the_password(app, ann):
    secret, _codes = enrol(sign_in(app))
    client = new_client(app)

    first = password_step(client)
    assert first.status_code == 303 and first.headers["Location"] == "/login/code"
    assert not signed_in(client)  # the password alone does not sign in
    assert events("auth.password_accepted")[-1].data["second_factor"] == "asked"

    wrong = code_step(client, "123456")
    assert wrong.status_code == 401 and not signed_in(client)
    assert events("auth.login_failed")[-1].data["reason"] == "wrong second factor"

    right = code_step(client, code(secret))
    assert right.status_code == 303 and signed_in(client)
    login = events("auth.login")[-1]
    assert login.data["second_factor"] == "totp" and login.actor_id == ann.id
    assert events("auth.factor_verified")[-1].data["purpose"] == "sign_in"


def test_a_code_works_once(app, ann):
    secret, _codes = enrol(sign_in(app))
    first, second = new_client(app), new_client(app)
    password_step(first)
    password_step(second)
    current = code(secret)

    assert code_step(first, current).status_code == 303
    replayed = code_step(second, current)
    assert replayed.status_code == 401 and "used already" in replayed.text
    # An earlier step's code is refused too once a later one was used.
    assert code_step(second, code(secret, -1)).status_code == 401
    assert code_step(second, code(secret, 1)).status_code == 303


def test_a_recovery_code_signs_in_once(app, ann):
    _secret, codes = enrol(sign_in(app))
    client = new_client(app)
    password_step(client)
    assert code_step(client, codes[3].upper()).status_code == 303
    assert events("auth.factor_verified")[-1].data["recovery_codes_left"] == 9

    again = new_client(app)
    password_step(again)
    assert code_step(again, codes[3]).status_code == 401
    assert "9 recovery codes left" in client.get("/account/second-factor").text


def test_wrong_codes_lock_sign_in_like_wrong_passwords(app, ann):
    secret, _codes = enrol(sign_in(app))
    client = new_client(app)
    password_step(client)
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        code_step(client, "999999")
    locked = code_step(client, code(secret))
    assert locked.status_code == 401 and "locked" in locked.text
    assert not signed_in(client)
    assert events("auth.locked")


def test_the_code_step_needs_a_password_first_and_its_csrf_token(app, ann):
    client = new_client(app)
    response = client.get("/login/code")
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    enrol(sign_in(app))
    password_step(client)
    assert client.post("/login/code", data={"code": "123456"}).status_code == 400


def test_the_code_step_runs_out_after_a_few_minutes(app, ann):
    secret, _codes = enrol(sign_in(app))
    client = new_client(app)
    password_step(client)
    with client.session_transaction() as stored:
        pending = stored["second_factor_pending"]
        pending["until"] = time.time() - 1
        stored["second_factor_pending"] = pending

    response = client.get("/login/code")
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert "the time to enter your code ran out" in client.get("/login").text
    assert client.get("/login/code").status_code == 303  # gone for good
    assert not signed_in(client)


# ---------------------------------------------------------------------------------------------
# Disabling, new recovery codes.


def test_disabling_needs_a_valid_code_and_is_audited(app, ann):
    client = sign_in(app)
    secret, _codes = enrol(client)

    refused = post(client, "/account/second-factor/disable", {"code": "000000"})
    assert refused.status_code == 422
    assert db.session.get(SecondFactor, ann.id) is not None
    assert events("auth.factor_failed")[-1].data["purpose"] == "disable"

    done = post(client, "/account/second-factor/disable", {"code": code(secret)})
    assert done.status_code == 303
    db.session.expire_all()
    assert db.session.get(SecondFactor, ann.id) is None
    assert db.session.scalars(select(RecoveryCode)).all() == []
    assert events("auth.factor_disabled")[0].data["confirmed_with"] == "totp"
    # The password alone signs in again.
    assert password_step(new_client(app)).headers["Location"] == "/"


def test_new_recovery_codes_replace_the_old_ones(app, ann):
    client = sign_in(app)
    secret, old = enrol(client)
    page = post(client, "/account/second-factor/recovery-codes", {"code": code(secret)})
    assert page.status_code == 200
    new = re.findall(r"<li>([a-z0-9]{5}-[a-z0-9]{5})</li>", page.text)
    assert len(new) == 10 and not set(new) & set(old)
    other = new_client(app)
    password_step(other)
    assert code_step(other, old[0]).status_code == 401
    assert code_step(other, new[0]).status_code == 303
    assert events("auth.recovery_codes_renewed")


def test_the_second_factor_pages_need_csrf_tokens(app, ann):
    client = sign_in(app)
    assert client.post("/account/second-factor/start").status_code == 400
    assert db.session.get(SecondFactor, ann.id) is None


# ---------------------------------------------------------------------------------------------
# Tenants requiring a factor.


def test_a_tenant_requiring_a_factor_sends_deciding_roles_to_enrol_first(
        app, ann, make_user, northwind):
    northwind.require_second_factor = True
    commit()
    rita = make_user("rita@example.com", tenants=[northwind], roles=("requester",))
    client = sign_in(app)

    response = client.get("/queues/mine")
    assert response.status_code == 303
    assert response.headers["Location"] == "/account/second-factor"
    fragment = client.get("/queues/mine", headers={"HX-Request": "true"})
    assert fragment.headers["HX-Redirect"] == "/account/second-factor"
    assert "requires a second factor" in client.get("/account/second-factor").text

    enrol(client)
    assert signed_in(client)
    # A requester decides nothing: not asked.
    assert signed_in(sign_in(app, rita.email))
