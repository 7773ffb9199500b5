"""Signing in and out through the browser routes: throttling, lockout, CSRF, htmx-aware
redirects, safe `next` targets, session rotation and cookie flags."""
from urllib.parse import urljoin, urlsplit

import pytest
from sqlalchemy import select

from app import create_app
from app.actors import Actor
from app.audit.models import GLOBAL_CHAIN, AuditEvent
from app.auth.models import SessionEndReason
from app.auth.services import email_throttle, end_sessions
from app.extensions import db
from app.models import WorkItem
from app.unit_of_work import commit
from tests.conftest import PASSWORD, csrf_from

GENERIC_REFUSAL = "That email and password do not match an active account."


@pytest.fixture
def northwind(make_tenant):
    return make_tenant("northwind")


@pytest.fixture
def approver(make_user, northwind):
    return make_user("approver@example.com", tenants=[northwind], roles=("approver",))


def _events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def _is_signed_in(client) -> bool:
    response = client.get("/queues/mine")
    return response.status_code == 200


def _set_cookie(response, name: str = "session") -> str:
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]
    assert headers, f"no {name} cookie was set"
    return headers[-1]


def _where_a_browser_goes(location: str, base: str = "http://localhost/") -> str:
    """The host a browser lands on for a Location header: the URL standard drops tabs and
    newlines and reads a backslash as a slash in http(s) URLs."""
    cleaned = "".join(c for c in location if c not in "\t\n\r").replace("\\", "/")
    return urlsplit(urljoin(base, cleaned)).netloc


# ---------------------------------------------------------------------------------------------
# Signing in.


def test_sign_in_with_email_and_password_sends_the_user_to_their_work(client, auth, approver):
    response = auth.login("approver@example.com")

    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    work = client.get("/", follow_redirects=True)
    assert work.status_code == 200
    assert work.request.path == "/queues/mine"
    assert "My work" in work.text


def test_sign_in_accepts_the_email_in_any_case(client, auth, approver):
    response = auth.login("  Approver@Example.COM ")
    assert response.status_code == 303


def test_sign_in_rotates_the_session_and_its_csrf_token(client, approver):
    page = client.get("/login")
    before_cookie = client.get_cookie("session").value
    old_token = csrf_from(page.text)

    response = client.post("/login", data={"email": "approver@example.com",
                                           "password": PASSWORD, "csrf_token": old_token})

    assert response.status_code == 303
    assert client.get_cookie("session").value != before_cookie
    # A token harvested before sign-in (e.g. planted by an attacker) is worthless afterwards.
    refused = client.post("/logout", data={"csrf_token": old_token})
    assert refused.status_code == 400
    assert _is_signed_in(client)


def test_signed_in_user_visiting_login_is_sent_to_their_work(client, auth, approver):
    auth.login("approver@example.com")
    response = client.get("/login")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_wrong_password_is_refused_with_401_and_a_message_that_names_no_part(
        client, auth, approver):
    response = auth.login("approver@example.com", "not the password at all")

    assert response.status_code == 401
    assert GENERIC_REFUSAL in response.text
    assert "wrong password" not in response.text.lower()
    assert not _is_signed_in(client)


def test_unknown_email_gets_the_same_refusal_as_a_wrong_password(client, auth, approver):
    unknown = auth.login("nobody@example.com", PASSWORD)
    wrong = auth.login("approver@example.com", "not the password at all")

    assert unknown.status_code == wrong.status_code == 401
    assert GENERIC_REFUSAL in unknown.text
    assert unknown.text.count("flash-error") == wrong.text.count("flash-error") == 1


def test_unknown_email_sign_in_is_audited_in_the_global_chain(client, auth, approver):
    auth.login("Nobody@Example.com", "whatever password")

    [event] = _events("auth.login_failed")
    assert event.chain_id == GLOBAL_CHAIN
    assert event.tenant_id is None
    assert event.actor_id is None
    assert event.actor_label == "nobody@example.com"
    assert event.data["reason"] == "unknown email"
    assert event.data["ip"] == "127.0.0.1"


def test_successful_sign_in_is_audited(client, auth, approver):
    auth.login("approver@example.com")

    [event] = _events("auth.login")
    assert event.chain_id == GLOBAL_CHAIN
    assert event.actor_id == approver.id


def test_five_failed_sign_ins_lock_the_account_even_against_the_right_password(
        client, auth, approver, app):
    assert app.config["LOGIN_MAX_FAILURES"] == 5
    for _ in range(5):
        assert auth.login("approver@example.com", "not the password at all").status_code == 401

    response = auth.login("approver@example.com", PASSWORD)

    assert response.status_code == 401
    assert "locked" in response.text
    assert GENERIC_REFUSAL not in response.text
    assert not _is_signed_in(client)
    assert email_throttle("approver@example.com").locked_until is not None


def test_failed_sign_ins_and_the_lock_are_audited_in_the_global_chain(client, auth, approver):
    for _ in range(5):
        auth.login("approver@example.com", "not the password at all")
    auth.login("approver@example.com", PASSWORD)

    failures = _events("auth.login_failed")
    locks = _events("auth.locked")
    assert [e.data["failures"] for e in failures] == [1, 2, 3, 4, 5]
    assert {e.chain_id for e in failures + locks} == {GLOBAL_CHAIN}
    assert {e.actor_id for e in failures + locks} == {approver.id}
    assert len(locks) == 1
    assert locks[0].seq == failures[-1].seq + 1
    assert [e.data["reason"] for e in _events("auth.login_refused")] == ["locked"]
    assert _events("auth.login") == []


def test_four_failures_do_not_lock(client, auth, approver):
    for _ in range(4):
        auth.login("approver@example.com", "not the password at all")
    assert auth.login("approver@example.com").status_code == 303


def test_successful_sign_in_resets_the_failure_count(client, auth, approver):
    for _ in range(3):
        auth.login("approver@example.com", "not the password at all")
    assert email_throttle("approver@example.com").failures == 3

    assert auth.login("approver@example.com").status_code == 303
    db.session.expire_all()
    assert email_throttle("approver@example.com").failures == 0

    client.post("/logout", data={"csrf_token": auth.csrf("/queues/mine")})
    # Had the count not been reset, the second of these would lock the account.
    for _ in range(2):
        auth.login("approver@example.com", "not the password at all")
    assert auth.login("approver@example.com").status_code == 303
    assert _events("auth.locked") == []


def test_an_unknown_email_locks_like_a_known_one_so_locks_reveal_no_accounts(client, auth):
    for _ in range(5):
        assert auth.login("nobody@example.com", "guess guess guess").status_code == 401
    response = auth.login("nobody@example.com", "guess guess guess")
    assert response.status_code == 401 and "locked" in response.text


def test_one_address_spraying_many_accounts_is_locked_out(client, auth, app, approver):
    app.config["LOGIN_MAX_FAILURES_PER_IP"] = 6
    for n in range(6):
        auth.login(f"target{n}@example.com", "guess guess guess")
    response = auth.login("approver@example.com")
    assert response.status_code == 401 and "locked" in response.text
    assert [e.data["by"] for e in _events("auth.locked")] == ["address"]


def test_deactivated_user_cannot_sign_in(client, auth, approver):
    approver.active = False
    commit()

    response = auth.login("approver@example.com")

    assert response.status_code == 401
    assert GENERIC_REFUSAL in response.text
    assert not _is_signed_in(client)


def test_sign_in_with_empty_fields_is_a_400_form_error_and_not_audited(client):
    page = client.get("/login")
    response = client.post("/login", data={"email": "", "password": "",
                                           "csrf_token": csrf_from(page.text)})
    assert response.status_code == 400
    assert 'aria-invalid="true"' in response.text
    assert _events("auth.login_failed") == []


# ---------------------------------------------------------------------------------------------
# CSRF.


def test_sign_in_without_csrf_token_is_refused_and_changes_nothing(client, approver):
    client.get("/login")

    right = client.post("/login", data={"email": "approver@example.com", "password": PASSWORD})
    wrong = client.post("/login", data={"email": "approver@example.com", "password": "nope!"})

    assert right.status_code == wrong.status_code == 400
    assert not _is_signed_in(client)
    db.session.refresh(approver)
    assert email_throttle("approver@example.com") is None
    assert approver.last_login_at is None
    auth_events = select(AuditEvent).where(AuditEvent.action.like("auth.%"))
    assert db.session.scalars(auth_events).all() == []


def test_item_action_without_csrf_token_is_refused_and_changes_nothing(
        client, auth, approver, northwind, make_item):
    item = make_item(northwind)
    version = item.version
    auth.login("approver@example.com")
    events_before = db.session.query(AuditEvent).count()

    response = client.post(f"/items/{item.id}/act", data={"action": "claim",
                                                          "version": version})

    assert response.status_code == 400
    db.session.expire_all()
    item = db.session.get(WorkItem, item.id)
    assert item.assignee_id is None
    assert item.version == version
    assert db.session.query(AuditEvent).count() == events_before


# ---------------------------------------------------------------------------------------------
# Signed-out requests.


@pytest.mark.parametrize("path", ["/", "/queues/mine", "/queues/unassigned", "/items/1"])
def test_signed_out_page_request_is_redirected_to_login_with_next(client, path):
    response = client.get(path)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert "next=" in location.query


@pytest.mark.parametrize("path", ["/queues/mine", "/items/1"])
def test_signed_out_htmx_request_gets_401_with_hx_redirect_not_the_login_page(client, path):
    response = client.get(path, headers={"HX-Request": "true"})

    assert response.status_code == 401
    assert urlsplit(response.headers["HX-Redirect"]).path == "/login"
    assert "Location" not in response.headers
    assert "<form" not in response.text and "Sign in" not in response.text


def test_next_parameter_returns_the_user_to_the_page_they_asked_for(client, approver):
    page = client.get("/login?next=/queues/unassigned")
    response = client.post("/login?next=/queues/unassigned", data={
        "email": "approver@example.com", "password": PASSWORD,
        "csrf_token": csrf_from(page.text)})
    assert response.status_code == 303
    assert response.headers["Location"] == "/queues/unassigned"


@pytest.mark.parametrize("target", [
    "//evil.example",
    "//evil.example/queues/mine",
    "https://evil.example",
    "https://evil.example/queues/mine",
    "http:evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "javascript:alert(1)",
])
def test_next_parameter_cannot_send_the_user_off_site(client, approver, target):
    page = client.get("/login")
    response = client.post("/login", query_string={"next": target}, data={
        "email": "approver@example.com", "password": PASSWORD,
        "csrf_token": csrf_from(page.text)})

    assert response.status_code == 303
    location = response.headers["Location"]
    assert _where_a_browser_goes(location) == "localhost"
    assert not location.lower().startswith("javascript:")


# ---------------------------------------------------------------------------------------------
# Signing out, and sessions ended from elsewhere.


def test_logout_is_post_only(client, auth, approver):
    auth.login("approver@example.com")
    assert client.get("/logout").status_code == 405
    assert _is_signed_in(client)


def test_logout_ends_the_session_and_is_audited(client, auth, approver):
    auth.login("approver@example.com")

    response = client.post("/logout", data={"csrf_token": auth.csrf("/queues/mine")})

    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/login"
    assert not _is_signed_in(client)
    [event] = _events("auth.logout")
    assert event.actor_id == approver.id


def test_logout_without_csrf_token_keeps_the_session(client, auth, approver):
    auth.login("approver@example.com")
    assert client.post("/logout").status_code == 400
    assert _is_signed_in(client)


def test_ending_the_session_record_signs_the_user_out_on_their_next_request(
        client, auth, approver):
    auth.login("approver@example.com")
    assert _is_signed_in(client)

    end_sessions(Actor.system("tests"), approver, SessionEndReason.PASSWORD_CHANGED)
    commit()

    response = client.get("/queues/mine")
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/login"


def test_deactivating_a_user_signs_them_out_on_their_next_request(client, auth, approver):
    auth.login("approver@example.com")
    assert _is_signed_in(client)

    approver.active = False
    commit()

    response = client.get("/queues/mine", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert urlsplit(response.headers["HX-Redirect"]).path == "/login"


# ---------------------------------------------------------------------------------------------
# Cookie flags.


def test_session_cookie_is_httponly_and_samesite_lax(client, approver):
    page = client.get("/login")
    for response in (page, client.post("/login", data={
            "email": "approver@example.com", "password": PASSWORD,
            "csrf_token": csrf_from(page.text)})):
        cookie = _set_cookie(response)
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert "httponly" in attributes
        assert "samesite=lax" in attributes


def test_session_cookie_is_secure_in_production(config, monkeypatch, approver):
    monkeypatch.setenv("SECRET_KEY", "a-production-secret-for-this-test-only")
    production = create_app({**config, "APP_ENV": "production"})
    try:
        response = production.test_client().get("/login")
        cookie = _set_cookie(response)
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=lax"} <= attributes
    finally:
        with production.app_context():
            db.session.remove()
            db.engine.dispose()


def test_ping_answers_ok_only_when_signed_in(client, auth, approver):
    signed_out = client.get("/ping")
    assert signed_out.status_code == 302 and "/login" in signed_out.headers["Location"]
    auth.login("approver@example.com")
    signed_in = client.get("/ping")
    assert signed_in.status_code == 200 and signed_in.text == "ok"
