"""Server-side sessions: every sign-in is a record the cookie names, so signing out, ending a
session from another browser, a password change and deactivation end it for good, whoever holds
a copy of the cookie. Recognising the session stays one query per request."""
from __future__ import annotations

import hashlib
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from flask_login.utils import encode_cookie
from sqlalchemy import event, select, update

from app.actors import Actor
from app.admin.models import PasswordLinkPurpose
from app.admin.password_links import issue_password_link
from app.audit.models import GLOBAL_CHAIN, AuditEvent
from app.auth.models import SessionEndReason, UserSession
from app.auth.services import end_sessions, recognise_session
from app.extensions import db
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import PASSWORD, FreshContextClient, csrf_from

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")


@pytest.fixture
def northwind(make_tenant):
    return make_tenant("northwind", timezone="America/New_York")


@pytest.fixture
def ann(make_user, northwind):
    return make_user("ann@example.com", tenants=[northwind], roles=("approver",), name="Ann")


@pytest.fixture
def bob(make_user, northwind):
    return make_user("bob@example.com", tenants=[northwind], roles=("approver",), name="Bob")


@pytest.fixture
def browser(app):
    """A new browser (its own cookie jar), signed in as `user` when one is given."""
    def browser(user=None, agent: str = FIREFOX, address: str = "127.0.0.1"):
        app.test_client_class = FreshContextClient
        client = app.test_client()
        client.environ_base.update({"HTTP_USER_AGENT": agent, "REMOTE_ADDR": address})
        if user is not None:
            page = client.get("/login")
            response = client.post("/login", data={"email": user.email, "password": PASSWORD,
                                                   "csrf_token": csrf_from(page.text)})
            assert response.status_code == 303, response.text
        return client

    return browser


def signed_in(client) -> bool:
    response = client.get("/queues/mine")
    if response.status_code == 302:
        assert urlsplit(response.headers["Location"]).path == "/login"
        return False
    assert response.status_code == 200
    return True


def post(client, path: str, data: dict | None = None):
    token = csrf_from(client.get("/account/").text)
    return client.post(path, data={"csrf_token": token, **(data or {})})


def login_id(app, client) -> str:
    """What Flask-Login keeps in the (signed, readable) session cookie."""
    cookie = client.get_cookie("session").value
    return app.session_interface.get_signing_serializer(app).loads(cookie)["_user_id"]


def session_of(app, client) -> UserSession:
    db.session.expire_all()
    return db.session.get(UserSession, login_id(app, client).split(":")[1])


def events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


@pytest.fixture
def statements(app):
    """The SQL statements the app sends while the block runs."""
    class Recorder:
        def __init__(self):
            self.seen: list[str] = []

        def __enter__(self):
            event.listen(db.engine, "before_cursor_execute", self._record)
            return self.seen

        def __exit__(self, *exc):
            event.remove(db.engine, "before_cursor_execute", self._record)

        def _record(self, conn, cursor, statement, parameters, context, executemany):
            self.seen.append(statement)

    return Recorder


# ---------------------------------------------------------------------------------------------
# Signing in and out.


def test_sign_in_records_a_session_keeping_only_a_hash_of_its_secret(app, browser, ann):
    client = browser(ann, address="203.0.113.9")

    user_id, session_id, secret = login_id(app, client).split(":")
    row = session_of(app, client)
    assert int(user_id) == row.user_id == ann.id and row.id == session_id
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(db.session.execute(select(UserSession.__table__)).all())
    assert (row.ip, row.user_agent, row.ended_at) == ("203.0.113.9", FIREFOX, None)
    assert row.browser == "Firefox on Linux"
    assert row.created_at == row.last_seen_at
    [login] = events("auth.login")
    assert login.data["session_id"] == session_id


def test_a_copied_cookie_is_refused_after_sign_out(app, browser, ann):
    mine = browser(ann)
    copy = browser()
    copy.set_cookie("session", mine.get_cookie("session").value)
    assert signed_in(copy)  # the copy works while the session lives

    token = csrf_from(mine.get("/queues/mine").text)
    assert mine.post("/logout", data={"csrf_token": token}).status_code == 303

    assert not signed_in(copy)
    assert not signed_in(mine)
    row = db.session.scalars(select(UserSession)).one()
    assert row.ended_reason == SessionEndReason.SIGNED_OUT.value and row.ended_at is not None
    [logout] = events("auth.logout")
    assert logout.data["session_id"] == row.id and logout.chain_id == GLOBAL_CHAIN


def test_a_remember_cookie_names_the_same_session_and_dies_with_it(app, browser, ann):
    mine = browser(ann)
    remember = browser()
    remember.set_cookie("remember_token", encode_cookie(login_id(app, mine)))
    assert signed_in(remember)
    assert login_id(app, remember) == login_id(app, mine)

    forgetful = browser()
    forgetful.set_cookie("remember_token", encode_cookie(login_id(app, mine)))
    mine.post("/logout", data={"csrf_token": csrf_from(mine.get("/queues/mine").text)})

    assert not signed_in(forgetful)
    assert not signed_in(remember)


def test_a_wrong_secret_another_users_id_or_an_unknown_session_is_not_recognised(
        app, browser, ann, bob):
    user_id, session_id, secret = login_id(app, browser(ann)).split(":")

    assert recognise_session(f"{user_id}:{session_id}:{secret}") is not None
    assert recognise_session(f"{user_id}:{session_id}:{secret[:-1]}x") is None
    assert recognise_session(f"{bob.id}:{session_id}:{secret}") is None
    assert recognise_session(f"{user_id}:unknown:{secret}") is None
    assert recognise_session(f"{user_id}:{secret}") is None
    assert recognise_session("not a login id") is None


def test_a_forged_cookie_for_another_users_session_is_refused(app, browser, ann, bob):
    """A cookie signed with the app's key (as by someone holding SECRET_KEY) naming Bob with
    Ann's session and secret."""
    mine = browser(ann)
    forged = browser()
    serializer = app.session_interface.get_signing_serializer(app)
    content = serializer.loads(mine.get_cookie("session").value)
    _user_id, session_id, secret = content["_user_id"].split(":")
    content["_user_id"] = f"{bob.id}:{session_id}:{secret}"
    forged.set_cookie("session", serializer.dumps(content))

    assert not signed_in(forged)
    assert signed_in(mine)


# ---------------------------------------------------------------------------------------------
# The cost of recognising a session.


def test_recognising_the_signed_in_user_is_one_query(app, browser, ann, statements):
    client = browser(ann)
    client.get("/ping")

    with statements() as seen:
        response = client.get("/ping")

    assert response.status_code == 200
    assert len(seen) == 1, seen
    assert "user_sessions" in seen[0] and "users" in seen[0]


def test_last_seen_moves_at_most_once_a_minute(app, browser, ann, statements):
    client = browser(ann)
    row = session_of(app, client)
    signed_in_at = row.created_at
    client.get("/ping")
    assert session_of(app, client).last_seen_at == signed_in_at  # not a write per request

    db.session.execute(update(UserSession).where(UserSession.id == row.id)
                       .values(last_seen_at=utcnow() - timedelta(minutes=2)))
    commit()
    with statements() as seen:
        assert client.get("/ping").status_code == 200
    # The user and session, the one UPDATE (committed on its own, so the user is read again
    # when next used).
    assert [s.split()[0] for s in seen] == ["SELECT", "UPDATE", "SELECT"], seen
    assert "user_sessions" in seen[1]
    moved = session_of(app, client).last_seen_at
    assert utcnow() - moved < timedelta(minutes=1)

    client.get("/ping")
    assert session_of(app, client).last_seen_at == moved


# ---------------------------------------------------------------------------------------------
# The account page: one's sessions, ending them.


def test_the_account_page_lists_ones_open_sessions_in_local_time(app, browser, ann, bob):
    here = browser(ann, address="198.51.100.4")
    browser(ann, agent=SAFARI, address="203.0.113.20")
    ended = browser(ann)
    ended.post("/logout", data={"csrf_token": csrf_from(ended.get("/queues/mine").text)})
    browser(bob, address="192.0.2.99")

    page = here.get("/account/")

    assert page.status_code == 200
    assert "Your sessions" in page.text
    assert page.text.count("<tr>") - 1 == 2  # Ann's two open sessions, not Bob's
    assert "198.51.100.4" in page.text and "203.0.113.20" in page.text
    assert "192.0.2.99" not in page.text
    assert "Firefox on Linux" in page.text and "Safari on iOS" in page.text
    assert "this browser" in page.text
    assert "America/New_York" in page.text and (" EST" in page.text or " EDT" in page.text)
    assert "Sign out everywhere else" in page.text


def test_the_header_name_leads_to_the_account_page(browser, ann):
    page = browser(ann).get("/queues/mine")
    assert 'href="/account/"' in page.text


def test_sign_out_everywhere_else_ends_every_other_session_and_keeps_this_one(
        app, browser, ann, bob):
    here, laptop, phone = browser(ann), browser(ann), browser(ann, agent=SAFARI)
    bobs = browser(bob)
    others = sorted([session_of(app, laptop).id, session_of(app, phone).id])

    response = post(here, "/account/sessions/end-others")

    assert response.status_code == 303 and response.headers["Location"] == "/account/"
    assert "2 other sessions ended" in here.get("/account/").text
    assert signed_in(here)
    assert not signed_in(laptop) and not signed_in(phone)
    assert signed_in(bobs)
    assert {session_of(app, c).ended_reason for c in (laptop, phone)} == {"ended_by_user"}
    [ended] = events("auth.sessions_ended")
    assert ended.actor_id == ann.id and ended.chain_id == GLOBAL_CHAIN
    assert ended.data["session_ids"] == others and ended.data["reason"] == "ended_by_user"


def test_ending_one_session_signs_out_only_that_browser(app, browser, ann):
    here, lost, kept = browser(ann), browser(ann), browser(ann)
    lost_id = session_of(app, lost).id

    response = post(here, f"/account/sessions/{lost_id}/end")

    assert response.status_code == 303
    assert not signed_in(lost)
    assert signed_in(here) and signed_in(kept)
    [ended] = events("auth.session_ended")
    assert ended.data["session_id"] == lost_id and ended.data["reason"] == "ended_by_user"


def test_ending_the_session_one_is_using_signs_one_out(app, browser, ann):
    here = browser(ann)
    response = post(here, f"/account/sessions/{session_of(app, here).id}/end")
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/login"
    assert not signed_in(here)


def test_ending_another_persons_session_is_refused_and_changes_nothing(app, browser, ann, bob):
    anns = browser(ann)
    bobs = browser(bob)
    anns_id = session_of(app, anns).id

    refused = post(bobs, f"/account/sessions/{anns_id}/end")
    unknown = post(bobs, "/account/sessions/no-such-session/end")

    assert refused.status_code == unknown.status_code == 404
    assert signed_in(anns)
    assert session_of(app, anns).ended_at is None
    assert events("auth.session_ended") == []
    # Bob's "everywhere else" is his own sessions only.
    post(bobs, "/account/sessions/end-others")
    assert signed_in(anns)


def test_ending_a_session_without_a_csrf_token_changes_nothing(app, browser, ann):
    here, other = browser(ann), browser(ann)
    assert here.post(f"/account/sessions/{session_of(app, other).id}/end").status_code == 400
    assert here.post("/account/sessions/end-others").status_code == 400
    assert signed_in(other)


def test_the_account_page_and_its_actions_need_a_signed_in_person(browser):
    anonymous = browser()
    assert anonymous.get("/account/").status_code == 302
    assert anonymous.post("/account/sessions/end-others").status_code in (302, 400)


# ---------------------------------------------------------------------------------------------
# A password change and deactivation.


def _set_password(client, token: str, password: str = "a brand new password for ann"):
    page = client.get(f"/account/set-password/{token}")
    return client.post(f"/account/set-password/{token}", data={
        "csrf_token": csrf_from(page.text), "password": password, "confirm": password})


def test_a_password_change_ends_every_other_session_and_keeps_the_current_one(
        app, browser, ann, northwind):
    here, elsewhere = browser(ann), browser(ann)
    copy = browser()
    copy.set_cookie("session", elsewhere.get_cookie("session").value)
    token, _link = issue_password_link(ann, northwind.id, PasswordLinkPurpose.RESET.value)
    commit()

    assert _set_password(here, token).status_code == 303

    assert signed_in(here)
    assert not signed_in(elsewhere) and not signed_in(copy)
    assert session_of(app, elsewhere).ended_reason == "password_changed"
    [password_set] = events("user.password_set")
    assert password_set.data["sessions_ended"] == 1
    [ended] = events("auth.sessions_ended")
    assert ended.data["reason"] == "password_changed"
    assert ended.data["session_ids"] == [session_of(app, elsewhere).id]


def test_a_password_set_from_a_signed_out_browser_ends_every_session(
        app, browser, ann, bob, northwind):
    anns, bobs = browser(ann), browser(bob)
    token, _link = issue_password_link(ann, northwind.id, PasswordLinkPurpose.RESET.value)
    commit()

    assert _set_password(browser(), token).status_code == 303

    assert not signed_in(anns)
    assert signed_in(bobs)


def test_a_password_set_in_someone_elses_session_keeps_none_of_the_persons_sessions(
        app, browser, ann, bob, northwind):
    anns, bobs = browser(ann), browser(bob)
    token, _link = issue_password_link(ann, northwind.id, PasswordLinkPurpose.RESET.value)
    commit()

    assert _set_password(bobs, token).status_code == 303

    assert not signed_in(anns)
    assert signed_in(bobs)


def test_deactivation_ends_every_session_of_the_person(app, browser, make_user, northwind, ann):
    admin = make_user("ada@example.com", tenants=[northwind], roles=("admin",), limit="0")
    anns = [browser(ann), browser(ann, agent=SAFARI)]
    admins = browser(admin)
    token = csrf_from(admins.get(f"/admin/t/northwind/people/{ann.id}").text)

    response = admins.post(f"/admin/t/northwind/people/{ann.id}/deactivate",
                           data={"csrf_token": token})

    assert response.status_code == 303
    assert not any(signed_in(c) for c in anns)
    assert signed_in(admins)
    assert {session_of(app, c).ended_reason for c in anns} == {"deactivated"}
    [deactivated] = events("user.deactivated")
    assert deactivated.data["sessions_ended"] == 2
    [ended] = events("auth.sessions_ended")
    assert ended.actor_id == admin.id and ended.data["reason"] == "deactivated"
    # Reactivated, the old sessions stay ended.
    reactivate = csrf_from(admins.get(f"/admin/t/northwind/people/{ann.id}").text)
    admins.post(f"/admin/t/northwind/people/{ann.id}/reactivate",
                data={"csrf_token": reactivate})
    assert not any(signed_in(c) for c in anns)


def test_ending_sessions_from_elsewhere_signs_out_on_the_next_request(app, browser, ann):
    client = browser(ann)
    end_sessions(Actor.system("tests"), ann, SessionEndReason.DEACTIVATED)
    commit()

    response = client.get("/queues/mine", headers={"HX-Request": "true"})

    assert response.status_code == 401
    assert urlsplit(response.headers["HX-Redirect"]).path == "/login"
