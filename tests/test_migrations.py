"""`flask db upgrade` from an empty database gives exactly the models: no drift."""
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade
from sqlalchemy import create_engine, text

from app import create_app
from app.extensions import db
from tests.conftest import DATABASE


@pytest.fixture
def empty_database_url(database_url, tmp_path):
    if DATABASE != "postgresql":
        yield "sqlite:///" + str(tmp_path / "empty.sqlite3")
        return
    name = f"migr_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield database_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


def test_upgrade_from_empty_matches_the_models(empty_database_url):
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "TESTING": True})
    with app.app_context():
        upgrade()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, db.metadata)
        db.engine.dispose()
    assert diff == []


def test_upgrade_of_a_database_holding_work_keeps_it_on_both_databases(empty_database_url):
    """Last release's schema (7388fbc84852) with a tenant, a person and an item in it: this
    release's migrations rebuild tables that others point at (SQLite rebuilds a table to alter
    it), and must neither fail on those references nor lose a row."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "TESTING": True})
    with app.app_context():
        upgrade(revision="7388fbc84852")
        with db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO tenants (id, slug, name, currency, timezone, calendar_country, "
                "working_days, work_start, work_end, is_reseller, created_at) VALUES (1, 'acme', "
                "'Acme', 'USD', 'UTC', 'US', '[1,2,3,4,5]', '09:00', '17:00', false, "
                "'2026-11-02 09:00:00')"))
            conn.execute(text(
                "INSERT INTO users (id, email, name, password_hash, active, session_epoch, "
                "created_at) VALUES (1, 'a@x.test', 'A', 'x', true, 0, '2026-11-02 09:00:00')"))
            conn.execute(text(
                "INSERT INTO memberships (id, user_id, tenant_id, approval_limit, created_at) "
                "VALUES (1, 1, 1, '1000', '2026-11-02 09:00:00')"))
        upgrade()
        with db.engine.connect() as conn:
            counts = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                      for t in ("tenants", "users", "memberships")]
            if DATABASE != "postgresql":
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        db.engine.dispose()
    assert counts == [1, 1, 1]


@pytest.mark.skipif(DATABASE != "sqlite", reason="PostgreSQL's DDL is transactional anyway")
def test_a_failing_upgrade_on_sqlite_leaves_the_database_as_it_was(empty_database_url):
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "TESTING": True})
    with app.app_context():
        upgrade(revision="7388fbc84852")
        with db.engine.begin() as conn:
            # A table the next migration creates is in the way: that migration fails part-way.
            conn.execute(text("CREATE TABLE dashboard_open (x INTEGER)"))
        with pytest.raises(Exception, match="already exists"):
            upgrade()
        with db.engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            tables = {r[0] for r in conn.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'table'"))}
        db.engine.dispose()
    assert version == "7388fbc84852"
    assert "dashboard_daily" not in tables  # created before the failure, rolled back with it
