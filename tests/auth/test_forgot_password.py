"""Forgot password: a mailed, single-use, expiring link (the invitation's machinery, mailed by a
real worker to a real SMTP server), the same answer for known and unknown addresses, throttling
per address and per client address, and every session of the person ended by the reset."""
from __future__ import annotations

import re
import threading
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import event, func, select, update

from app.admin.models import PasswordLink
from app.audit.models import AuditEvent
from app.auth.services import request_password_reset
from app.extensions import db
from app.models import LoginThrottle
from app.outbox.models import OutboxMessage
from app.types import utcnow
from app.unit_of_work import commit
from tests.approvals.conftest import inbox, relaying, run_worker  # noqa: F401  (fixtures)
from tests.conftest import PASSWORD, FreshContextClient, csrf_from

LINK_RE = re.compile(r"https?://[^\s\"<>]+/account/set-password/[A-Za-z0-9_\-]+")
NEW_PASSWORD = "a brand new and long password"


@pytest.fixture
def northwind(make_tenant):
    return make_tenant("northwind")


@pytest.fixture
def ann(make_user, northwind):
    return make_user("ann@example.com", tenants=[northwind], roles=("approver",), name="Ann")


def _events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def _new_client(app):
    app.test_client_class = FreshContextClient
    return app.test_client()


def _sign_in(app, email="ann@example.com", password=PASSWORD):
    client = _new_client(app)
    page = client.get("/login")
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": csrf_from(page.text)})
    return client if response.status_code == 303 else None


def _ask_for_reset(client, email: str):
    page = client.get("/auth/forgot")
    return client.post("/auth/forgot", data={"email": email,
                                             "csrf_token": csrf_from(page.text)})


def _without_token(html: str) -> str:
    """The page without its per-session CSRF tokens (in the body's headers and any form)."""
    html = re.sub(r'"X-CSRFToken": "[^"]*"', "", html)
    return re.sub(r'name="csrf_token"[^>]*>', "", html)


def test_the_sign_in_page_links_to_the_forgot_password_page(client):
    page = client.get("/login")
    assert 'href="/auth/forgot"' in page.text
    assert client.get("/auth/forgot").status_code == 200


def test_a_forgotten_password_is_reset_from_the_mailed_link_and_every_session_ends(
        app, ann, relaying, inbox, client):
    signed_in = _sign_in(app)
    assert signed_in.get("/queues/mine").status_code == 200

    answer = _ask_for_reset(client, "  Ann@Example.com ")
    assert answer.status_code == 200
    assert "If an active account has that address" in answer.text
    run_worker(app)
    [mail] = inbox.to("ann@example.com")
    assert "from the sign-in page" in inbox.text(mail)
    path = urlsplit(LINK_RE.search(inbox.text(mail)).group(0)).path
    assert _sign_in(app) is not None  # the old password works until the link is used

    page = client.get(path)
    assert page.status_code == 200
    done = client.post(path, data={"csrf_token": csrf_from(page.text),
                                   "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert done.status_code == 303

    assert _sign_in(app) is None
    assert _sign_in(app, password=NEW_PASSWORD) is not None
    assert signed_in.get("/queues/mine").status_code == 302  # that session ended
    [requested] = _events("auth.reset_requested")
    assert requested.tenant_id is None and requested.data["known"] is True
    [reset] = _events("auth.password_reset")
    assert reset.actor_id == ann.id and len(reset.data["sessions_ended"]) == 2
    # Single use.
    again = client.get(path)
    assert again.status_code == 410 and "already used" in again.text


def test_a_reset_link_expires(app, ann, relaying, inbox, client):
    _ask_for_reset(client, "ann@example.com")
    run_worker(app)
    path = urlsplit(LINK_RE.search(inbox.text(inbox.to("ann@example.com")[0])).group(0)).path
    db.session.execute(update(PasswordLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    commit()
    page = client.get(path)
    assert page.status_code == 410 and "expired" in page.text


def test_known_and_unknown_addresses_get_the_same_answer_and_only_the_known_a_mail(
        app, ann, make_user, northwind, relaying, inbox):
    gone = make_user("gone@example.com", tenants=[northwind])
    gone.active = False
    commit()
    answers = {email: _ask_for_reset(_new_client(app), email)
               for email in ("ann@example.com", "nobody@example.com", "gone@example.com")}

    statuses = {response.status_code for response in answers.values()}
    pages = {_without_token(response.text) for response in answers.values()}
    assert statuses == {200} and len(pages) == 1
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
    run_worker(app)
    assert [rcpts for _, rcpts in inbox.envelopes] == [["ann@example.com"]]
    assert sorted(e.data["known"] for e in _events("auth.reset_requested")) == [
        False, False, True]


def test_reset_requests_are_throttled_per_address_known_or_not(app, ann):
    client = _new_client(app)
    for email in ("ann@example.com", "nobody@example.com"):
        for _ in range(app.config["RESET_MAX_PER_EMAIL"]):
            assert _ask_for_reset(client, email).status_code == 200
        refused = _ask_for_reset(client, email)
        assert refused.status_code == 429
        assert "Too many reset requests" in refused.text
    # Only the requests within the limit queued a mail.
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == \
        app.config["RESET_MAX_PER_EMAIL"]
    throttled = [e.data["throttled"] for e in _events("auth.reset_requested")]
    assert throttled.count("email") == 2


def test_reset_requests_are_throttled_per_client_address(app, ann):
    app.config["RESET_MAX_PER_IP"] = 3
    client = _new_client(app)
    for n in range(3):
        assert _ask_for_reset(client, f"person{n}@example.com").status_code == 200
    assert _ask_for_reset(client, "ann@example.com").status_code == 429
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    # Another client address is not held back.
    other = _new_client(app)
    page = other.get("/auth/forgot")
    response = other.post("/auth/forgot", data={"email": "ann@example.com",
                                                "csrf_token": csrf_from(page.text)},
                          environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 200


def test_the_forgot_password_form_needs_its_csrf_token(client, ann):
    response = client.post("/auth/forgot", data={"email": "ann@example.com"})
    assert response.status_code == 400
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_concurrent_first_requests_for_one_address_both_count_and_neither_fails(app, ann):
    """Both requests read the throttle before either has written it: the upsert makes one
    row, the other request waits for it instead of failing on the primary key."""
    barrier = threading.Barrier(2, timeout=20)
    local = threading.local()
    results = [None, None]

    def wait_before_throttle(conn, cursor, statement, parameters, context, executemany):
        if "login_throttles" in statement and not getattr(local, "waited", True):
            local.waited = True
            barrier.wait()

    def run(index):
        with app.app_context():
            local.waited = False
            try:
                request_password_reset("ann@example.com", "198.51.100.1", "test")
                commit()
                results[index] = "ok"
            except Exception as error:  # what the old read-then-insert raised
                db.session.rollback()
                results[index] = repr(error)
            finally:
                db.session.remove()

    event.listen(db.engine, "before_cursor_execute", wait_before_throttle)
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        event.remove(db.engine, "before_cursor_execute", wait_before_throttle)
    assert results == ["ok", "ok"]
    db.session.expire_all()
    rows = db.session.scalars(select(LoginThrottle).where(
        LoginThrottle.key.like("reset-email:%"))).all()
    assert [row.failures for row in rows] == [2]


def test_a_member_whose_organisation_signs_in_through_sso_is_mailed_the_way_in_not_a_link(
        app, ann, northwind, relaying, inbox, client):
    """Password sign-in is off in Ann's tenant: a password would give her nothing, so the reset
    mails her the tenant's single sign-on link and issues no password link. The page answers
    as for anyone else."""
    from app.actors import Actor
    from app.auth.sso import update_single_sign_on

    update_single_sign_on(Actor.system("tests"), northwind, enabled=True,
                          issuer="https://login.example.com", client_id="cleardesk",
                          client_secret="s3cret", allowed_domains="example.com",
                          jit_enabled=False, jit_role="requester", password_sign_in_off=True)
    commit()
    answer = _ask_for_reset(client, "ann@example.com")
    assert answer.status_code == 200 and "If an active account has that address" in answer.text
    run_worker(app)
    [mail] = inbox.to("ann@example.com")
    text = inbox.text(mail)
    assert "single sign-on" in mail["Subject"]
    assert "/login?tenant=northwind" in text and "no password to reset" in text
    assert not LINK_RE.search(text)
    assert db.session.scalar(select(func.count()).select_from(PasswordLink)) == 0
