"""Fixtures: the app on a real database (SQLite or PostgreSQL, chosen by CLEARDESK_TEST_DB),
a real Redis, and factories for tenants, users and items.

`make test` starts the servers and sets CLEARDESK_TEST_REDIS_URL, CLEARDESK_TEST_POSTGRES_URL
and CLEARDESK_TEST_CHROMIUM; the suite runs once per database."""
from __future__ import annotations

import os
import re
import threading
import uuid
from contextlib import contextmanager
from decimal import Decimal

import pytest
from flask.globals import _cv_app
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import bindparam, text
from werkzeug.serving import make_server

from app import create_app
from app.actors import Actor
from app.admin.people import grant_membership
from app.auth.services import create_user
from app.extensions import db
from app.models import Tenant
from app.unit_of_work import commit
from app.work.ledger import change_item, issued_by_ledger
from app.work.services import create_item

DATABASE = os.environ.get("CLEARDESK_TEST_DB", "sqlite")
PASSWORD = "correct horse battery staple"


def _require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the suite with `make test`", returncode=2)
    return value


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    if DATABASE == "postgresql":
        url = _require_env("CLEARDESK_TEST_POSTGRES_URL")
    else:
        url = "sqlite:///" + str(tmp_path_factory.mktemp("db") / "test.sqlite3")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _require_env("CLEARDESK_TEST_REDIS_URL")


@pytest.fixture
def config(database_url, redis_url, tmp_path) -> dict:
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "RQ_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
        "TESTING": True,
        "SERVER_NAME": None,
        # Tests that exercise the relay turn it on; the rest need no queue traffic.
        "OUTBOX_RELAY_ON_COMMIT": False,
        "ARGON2_PROFILE": "fast-for-tests",
        # Any write of work items that did not come through the ledger fails the test.
        "LEDGER_GUARD": True,
    }


def empty_queues(app) -> None:
    """Drop what a test left in its own queues (every urgency) from the shared Redis."""
    from app.jobs import worker_queues

    with app.app_context():
        for queue in worker_queues():
            queue.empty()


@pytest.fixture
def app(config):
    app = create_app(config)
    with app.app_context():
        yield app
        db.session.remove()
        _empty_tables()
        for engine in db.engines.values():  # the primary's, and a replica's where one is set
            engine.dispose()


def _empty_tables() -> None:
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    # Emptying every table between tests is no change of an item: the guard lets it through.
    with issued_by_ledger(), db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # A worker process the test killed leaves its server backend running its
            # transaction until it next writes to the socket; its locks would deadlock the
            # TRUNCATE. End every session of this database that is not idle, and wait for it.
            conn.execute(text(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' AND state <> 'idle'"))
            # The audit tables' triggers refuse TRUNCATE; replica mode skips user triggers for
            # this transaction only (the test role is a superuser).
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            with audit_triggers_dropped(conn):
                for name in tables:
                    conn.execute(text(f"DELETE FROM {name}"))
            conn.execute(text("DELETE FROM sqlite_sequence")) if conn.execute(
                text("SELECT name FROM sqlite_master WHERE name='sqlite_sequence'")
            ).first() else None


APPEND_ONLY_TABLES = ("audit_events", "audit_anchors")


def drop_audit_triggers(conn) -> list[str]:
    """Drop the append-only triggers of the audit tables, as someone with the owner's rights
    could; return their stored definitions, to create them again."""
    if conn.dialect.name == "postgresql":
        query = ("SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                 "JOIN pg_class c ON c.oid = t.tgrelid "
                 "WHERE NOT t.tgisinternal AND c.relname IN :tables")
        drop = "DROP TRIGGER {name} ON {table}"
    else:
        query = ("SELECT name, tbl_name, sql FROM sqlite_master "
                 "WHERE type = 'trigger' AND tbl_name IN :tables")
        drop = "DROP TRIGGER {name}"
    triggers = conn.execute(text(query).bindparams(bindparam("tables", expanding=True)),
                            {"tables": list(APPEND_ONLY_TABLES)}).all()
    assert triggers, "the audit tables have no append-only triggers"
    for name, table, _definition in triggers:
        conn.execute(text(drop.format(name=name, table=table)))
    return [definition for _name, _table, definition in triggers]


def create_triggers(conn, definitions: list[str]) -> None:
    for definition in definitions:
        conn.execute(text(definition))


@contextmanager
def audit_triggers_dropped(conn):
    definitions = drop_audit_triggers(conn)
    try:
        yield
    finally:
        create_triggers(conn, definitions)


@pytest.fixture
def without_audit_triggers(app):
    """For tampering tests: the audit rows may be changed and removed through SQL during the
    test; the triggers are back afterwards."""
    commit()  # hold no lock on the audit tables while their triggers go
    with db.engine.begin() as conn:
        definitions = drop_audit_triggers(conn)
    try:
        yield
    finally:
        db.session.rollback()
        with db.engine.begin() as conn:
            create_triggers(conn, definitions)


class FreshContextClient(FlaskClient):
    """Each request in its own app context, as on a real server: the `app` fixture keeps a
    context pushed for the test body, which Flask would otherwise reuse for requests, sharing
    `g` (Flask-Login's user, Flask-WTF's token) between them."""

    def open(self, *args, **kwargs):
        token = _cv_app.set(None)
        try:
            return super().open(*args, **kwargs)
        finally:
            _cv_app.reset(token)


@pytest.fixture
def client(app):
    app.test_client_class = FreshContextClient
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


SYSTEM = Actor.system("tests")


@pytest.fixture
def make_tenant(app):
    def make(slug="northwind", currency="USD", timezone="America/New_York", country="US"):
        tenant = Tenant(slug=slug, name=slug.title(), currency=currency, timezone=timezone,
                        calendar_country=country)
        db.session.add(tenant)
        commit()
        return tenant

    return make


@pytest.fixture
def make_user(app):
    def make(email, tenants=None, roles=("approver",), limit="100000", name=None):
        """tenants: Tenant objects the user gets `roles` and `limit` in."""
        user = create_user(SYSTEM, email=email, name=name or email.split("@")[0].title(),
                           password=PASSWORD)
        for tenant in tenants or []:
            grant_membership(SYSTEM, user=user, tenant=tenant, roles=list(roles),
                             approval_limit=limit)
        commit()
        db.session.refresh(user)
        return user

    return make


_refs = iter(range(1, 10**9))


@pytest.fixture
def make_item(app):
    def make(tenant, kind="approval", amount="1000.00", requester=None, subtype=None, **extra):
        defaults = {"approval": "discount", "billing_exception": "payment_failed",
                    "settlement_dispute": "commission"}
        if kind == "settlement_dispute":
            extra.setdefault("claimed_amount", amount)
            extra.setdefault("calculated_amount", str(Decimal(amount) * Decimal("0.6")))
        item, _created = create_item(
            SYSTEM, tenant_id=tenant.id, kind=kind, subtype=subtype or defaults[kind],
            title=f"Test {kind}", external_ref=f"T-{next(_refs)}", source_system="tests",
            counterparty="Acme Labs", amount=amount,
            requester_id=requester.id if requester else None, **extra)
        commit()
        return item

    return make


def arrange(item, **values) -> None:
    """Set up an item's circumstances for a test (a title, a due time already passed, an older
    arrival) and commit: through the ledger, like every write of an item, so the rollups and
    the version follow."""
    change_item(SYSTEM, item, values)
    commit()


def actor(user) -> Actor:
    return Actor.for_user(user, ip="127.0.0.1", user_agent="pytest")


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|"X-CSRFToken": "([^"]+)"')


def statements_sent(run) -> list[str]:
    """The SQL statements `run()` sends to the database, in order."""
    from sqlalchemy import event

    seen: list[str] = []

    def note(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        run()
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    return seen


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1) or match.group(2)


class AuthActions:
    def __init__(self, client):
        self.client = client

    def login(self, email, password=PASSWORD):
        self.client.delete_cookie("session")  # sign in afresh, also when switching users
        page = self.client.get("/login")
        return self.client.post("/login", data={"email": email, "password": password,
                                                "csrf_token": csrf_from(page.text)})

    def csrf(self, path="/"):
        return csrf_from(self.client.get(path, follow_redirects=True).text)


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def live_server(app):
    """The base URL of the app served on a free port by werkzeug's threaded server (each
    request in its own app context, as under gunicorn); stopped before the tables are emptied."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        # The test's own session may still hold a snapshot from before the browser acted.
        db.session.rollback()
