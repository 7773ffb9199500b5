"""With DATABASE_REPLICA_URL set, the dashboard, audit search and audit exports read from the
replica, and every write (and every other page) stays on the primary."""
import pytest
from sqlalchemy import event

from app.extensions import db
from app.replica import REPLICA, replica_engine
from app.unit_of_work import commit


@pytest.fixture
def config(config):
    # The same database through a second engine stands in for a streaming replica: what is
    # proven is which engine each statement goes to.
    url = config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("postgresql"):
        url += ("&" if "?" in url else "?") + "application_name=cleardesk-replica"
    return {**config, "DATABASE_REPLICA_URL": url}


@pytest.fixture
def statements(app):
    seen = {"primary": [], "replica": []}

    def counter(name):
        def count(conn, cursor, statement, *args):
            seen[name].append(statement)
        return count

    event.listen(db.engine, "before_cursor_execute", counter("primary"))
    event.listen(db.engines[REPLICA], "before_cursor_execute", counter("replica"))
    return seen


@pytest.fixture
def world(make_tenant, make_user, make_item):
    tenant = make_tenant()
    manager = make_user("manager@x.test", [tenant], roles=("manager",))
    auditor = make_user("auditor@x.test", [tenant], roles=("auditor",))
    analyst = make_user("analyst@x.test", [tenant], roles=("analyst",))
    item = make_item(tenant, kind="billing_exception")
    commit()
    return tenant, manager, auditor, analyst, item


def test_the_dashboard_and_audit_search_read_from_the_replica(world, client, auth, statements):
    tenant = world[0]
    auth.login("manager@x.test")
    statements["replica"].clear()
    assert client.get("/dashboard").status_code == 200
    assert any("dashboard_" in s for s in statements["replica"])
    auth.login("auditor@x.test")
    statements["replica"].clear()
    assert client.get(f"/audit/?tenant={tenant.id}").status_code == 200
    assert any("audit_events" in s for s in statements["replica"])


def test_writes_and_the_work_pages_stay_on_the_primary(world, client, auth, statements):
    item = world[4]
    auth.login("analyst@x.test")
    statements["replica"].clear()
    assert client.get("/queues/unassigned").status_code == 200
    token = auth.csrf(f"/items/{item.id}")
    response = client.post(f"/items/{item.id}/act", data={"action": "claim", "csrf_token": token})
    assert response.status_code == 303
    assert statements["replica"] == []
    assert any(s.startswith("UPDATE work_items") for s in statements["primary"])


def test_the_replica_engine_is_the_one_configured(app, config):
    assert replica_engine() is db.engines[REPLICA]
    assert replica_engine() is not db.engine
    assert str(replica_engine().url).split("?")[0] == str(db.engine.url).split("?")[0]


def test_without_a_replica_url_there_is_no_replica_engine(tmp_path, monkeypatch):
    from app.config import load_config

    monkeypatch.delenv("DATABASE_REPLICA_URL", raising=False)
    assert "SQLALCHEMY_BINDS" not in load_config(str(tmp_path))
    with_replica = load_config(str(tmp_path), {"DATABASE_REPLICA_URL": "postgresql://r/db"})
    assert with_replica["SQLALCHEMY_BINDS"] == {REPLICA: "postgresql://r/db"}


def test_a_report_download_that_is_audited_still_works_with_a_replica(world, client, auth):
    from sqlalchemy import select

    from app.audit.models import AuditEvent

    tenant = world[0]
    auth.login("auditor@x.test")
    response = client.get(f"/audit/access-review.csv?tenant={tenant.id}")
    assert response.status_code == 200
    assert "auditor@x.test" in response.get_data(as_text=True)
    db.session.rollback()
    # The download is recorded on the primary, in the same request that read on the replica.
    assert db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.action == "audit.access_review_exported")).all() == [
            "audit.access_review_exported"]
