"""Idle and absolute session timeouts per tenant: set by the tenant's admin, enforced when the
session is recognised (the strictest of the person's tenants), each ended session audited."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from app.audit.models import GLOBAL_CHAIN, AuditEvent
from app.auth.models import UserSession
from app.extensions import db
from app.models import Tenant
from app.types import utcnow
from app.unit_of_work import commit
from tests.auth.test_sessions import FIREFOX, events, session_of, signed_in
from tests.conftest import PASSWORD, FreshContextClient, csrf_from


@pytest.fixture
def northwind(make_tenant):
    return make_tenant("northwind")


@pytest.fixture
def contoso(make_tenant):
    return make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")


@pytest.fixture
def ann(make_user, northwind):
    return make_user("ann@example.com", tenants=[northwind], roles=("approver",), name="Ann")


@pytest.fixture
def browser(app):
    def browser(user=None):
        app.test_client_class = FreshContextClient
        client = app.test_client()
        client.environ_base.update({"HTTP_USER_AGENT": FIREFOX})
        if user is not None:
            page = client.get("/login")
            response = client.post("/login", data={"email": user.email, "password": PASSWORD,
                                                   "csrf_token": csrf_from(page.text)})
            assert response.status_code == 303, response.text
        return client

    return browser


def _limits(tenant: Tenant, idle: int | None = None, max_hours: int | None = None) -> None:
    tenant.session_idle_minutes, tenant.session_max_hours = idle, max_hours
    commit()


def _age(row: UserSession, *, idle: timedelta = timedelta(0),
         since_sign_in: timedelta | None = None) -> None:
    now = utcnow()
    db.session.execute(update(UserSession).where(UserSession.id == row.id).values(
        last_seen_at=now - idle, created_at=now - (since_sign_in or idle)))
    commit()


def test_a_session_idle_longer_than_the_tenant_allows_ends_and_is_audited(
        app, browser, ann, northwind):
    _limits(northwind, idle=30)
    client = browser(ann)
    row = session_of(app, client)
    _age(row, idle=timedelta(minutes=31))

    response = client.get("/queues/mine")

    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/login"
    assert "no activity for longer than your organisation allows" in client.get("/login").text
    ended = session_of(app, client)
    assert ended.ended_reason == "idle_timeout" and ended.ended_at is not None
    [event] = events("auth.session_ended")
    assert event.chain_id == GLOBAL_CHAIN and event.actor_type == "system"
    assert event.data["reason"] == "idle_timeout" and event.data["session_id"] == row.id
    assert event.data["user_id"] == ann.id and event.data["idle_minutes"] == 30
    assert not signed_in(client)
    assert len(events("auth.session_ended")) == 1  # ended once, audited once


def test_a_session_used_within_the_idle_limit_stays_and_its_clock_restarts(
        app, browser, ann, northwind):
    _limits(northwind, idle=30)
    client = browser(ann)
    _age(session_of(app, client), idle=timedelta(minutes=29))

    assert signed_in(client)
    assert utcnow() - session_of(app, client).last_seen_at < timedelta(minutes=1)
    assert events("auth.session_ended") == []


def test_a_busy_session_ends_when_its_absolute_limit_is_reached(app, browser, ann, northwind):
    _limits(northwind, idle=30, max_hours=8)
    client = browser(ann)
    _age(session_of(app, client), idle=timedelta(seconds=5),
         since_sign_in=timedelta(hours=8, minutes=1))

    response = client.get("/queues/mine", headers={"HX-Request": "true"})

    assert response.status_code == 401  # an htmx request is sent to sign in, not swapped
    assert session_of(app, client).ended_reason == "absolute_timeout"
    [event] = events("auth.session_ended")
    assert event.data["reason"] == "absolute_timeout" and event.data["max_hours"] == 8


def test_someone_in_several_tenants_gets_the_strictest_limits(
        app, browser, make_user, northwind, contoso):
    _limits(northwind, idle=60)
    _limits(contoso, idle=15)  # and northwind sets no absolute limit, contoso none either
    rita = make_user("rita@example.com", tenants=[northwind, contoso], roles=("requester",))
    ann = make_user("ann@example.com", tenants=[northwind], roles=("approver",))
    ritas, anns = browser(rita), browser(ann)
    for client in (ritas, anns):
        _age(session_of(app, client), idle=timedelta(minutes=20))

    assert not signed_in(ritas)
    assert signed_in(anns)
    assert session_of(app, ritas).ended_reason == "idle_timeout"


def test_without_limits_a_session_lives_until_it_is_ended(app, browser, ann):
    client = browser(ann)
    _age(session_of(app, client), idle=timedelta(days=60))
    assert signed_in(client)


def test_recognising_a_session_with_its_limits_stays_one_query(app, browser, ann, northwind):
    _limits(northwind, idle=30, max_hours=12)
    client = browser(ann)
    client.get("/ping")
    seen = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    from sqlalchemy import event

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert client.get("/ping").status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(seen) == 1, seen


# ---------------------------------------------------------------------------------------------
# The admin's settings page.


def _post_settings(client, data: dict):
    page = client.get("/admin/t/northwind/sign-in")
    return client.post("/admin/t/northwind/sign-in",
                       data={"csrf_token": csrf_from(page.text), **data})


def test_an_admin_sets_the_timeouts_and_the_change_is_audited(
        app, browser, make_user, northwind):
    admin = browser(make_user("ada@example.com", tenants=[northwind], roles=("admin",),
                              limit="0"))
    response = _post_settings(admin, {"session_idle_minutes": "45",
                                      "session_max_hours": "10"})
    assert response.status_code == 303
    db.session.expire_all()
    assert (northwind.session_idle_minutes, northwind.session_max_hours) == (45, 10)
    [event] = events("tenant.sign_in_updated")
    assert event.tenant_id == northwind.id
    assert event.data["before"] == {"session_idle_minutes": None, "session_max_hours": None}
    assert event.data["after"] == {"session_idle_minutes": 45, "session_max_hours": 10}
    page = admin.get("/admin/t/northwind/sign-in")
    assert 'value="45"' in page.text and 'value="10"' in page.text

    cleared = _post_settings(admin, {"session_idle_minutes": "", "session_max_hours": "10"})
    assert cleared.status_code == 303
    db.session.expire_all()
    assert northwind.session_idle_minutes is None


@pytest.mark.parametrize("data, field", [
    ({"session_idle_minutes": "2"}, "session_idle_minutes"),
    ({"session_idle_minutes": "ten"}, "session_idle_minutes"),
    ({"session_max_hours": "0"}, "session_max_hours"),
    ({"session_max_hours": "99999999999999"}, "session_max_hours"),
    ({"session_max_hours": "-3"}, "session_max_hours"),
])
def test_timeouts_out_of_bounds_are_refused_with_a_message(
        app, browser, make_user, northwind, data, field):
    admin = browser(make_user("ada@example.com", tenants=[northwind], roles=("admin",),
                              limit="0"))
    response = _post_settings(admin, data)
    assert response.status_code == 422
    assert "a whole number of" in response.text
    db.session.expire_all()
    assert northwind.session_idle_minutes is None and northwind.session_max_hours is None
    assert db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "tenant.sign_in_updated")).all() == []


def test_only_an_admin_of_the_tenant_changes_its_timeouts(app, browser, ann, northwind):
    approver = browser(ann)
    token = csrf_from(approver.get("/queues/mine").text)
    response = approver.post("/admin/t/northwind/sign-in",
                             data={"csrf_token": token, "session_idle_minutes": "5"})
    assert response.status_code == 403
    db.session.expire_all()
    assert northwind.session_idle_minutes is None
