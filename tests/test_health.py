"""Health answers a load balancer and a process manager can act on, and error pages that
render when the database cannot be reached (a real PostgreSQL address nobody listens on)."""
from __future__ import annotations

import pytest

from app import create_app
from app.extensions import db
from app.outbox.services import add_message
from app.unit_of_work import commit
from tests.approvals.conftest import free_port
from tests.conftest import FreshContextClient


def test_livez_and_readyz_answer_when_all_is_well(client):
    assert client.get("/livez").json == {"status": "alive"}
    assert client.get("/readyz").json == {"status": "ready", "database": "ok"}


def test_healthz_is_ok_and_counts_the_outbox(client, make_tenant):
    tenant = make_tenant()
    add_message("item.created", {"item_id": 1}, tenant.id)
    commit()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "redis": "ok",
                             "outbox_waiting": 1}


def test_healthz_with_redis_down_is_degraded_not_failed(app, client):
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app.extensions.pop("cleardesk_redis", None)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "degraded"
    assert response.json["redis"].startswith("error:") and response.json["database"] == "ok"
    assert client.get("/readyz").status_code == 200


@pytest.fixture
def database_down(app, config, auth, make_tenant, make_user):
    """A second app like the test's, whose database cannot be reached, and a client already
    signed in (its session cookie, made by the working app)."""
    tenant = make_tenant()
    make_user("ann@x.test", [tenant], roles=("approver",))
    auth.login("ann@x.test")
    cookie = auth.client.get_cookie("session")
    down = create_app({**config, "SECRET_KEY": app.config["SECRET_KEY"],
                       # As in production: an error reaches the error pages, not the test.
                       "PROPAGATE_EXCEPTIONS": False,
                       "SQLALCHEMY_DATABASE_URI":
                       f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/cleardesk"})
    down.test_client_class = FreshContextClient
    client = down.test_client()
    client.set_cookie("session", cookie.value)
    yield client, down.test_client()
    with down.app_context():
        db.engine.dispose()


def test_with_the_database_down_health_says_so_and_the_process_is_still_alive(database_down):
    _signed_in, probe = database_down  # a load balancer's probe carries no session
    assert probe.get("/livez").status_code == 200
    ready = probe.get("/readyz")
    assert ready.status_code == 503 and ready.json["status"] == "not ready"
    health = probe.get("/healthz")
    assert health.status_code == 503 and health.json["status"] == "error"


def test_with_the_database_down_a_signed_in_page_renders_a_plain_error_page(database_down):
    signed_in, _probe = database_down
    page = signed_in.get("/")
    assert page.status_code == 503
    assert "Cleardesk cannot reach its database" in page.text and "<html" in page.text
    assert "Nothing was changed" in page.text  # a read
    assert page.headers["Retry-After"] == "5"


def test_with_the_database_down_an_htmx_action_gets_a_message_in_place(database_down):
    signed_in, _probe = database_down
    answer = signed_in.post("/items/1/act", data={"action": "claim"},
                            headers={"HX-Request": "true"})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.headers["HX-Retarget"] == "#messages"
    assert 'class="flash flash-error"' in answer.text
    assert "cannot reach its database" in answer.text
    # Its commit may have gone through just before the connection went: not "nothing changed".
    assert "may or may not have been saved" in answer.text and "Nothing" not in answer.text


def test_with_the_database_down_an_api_client_gets_a_503_problem_to_retry(database_down):
    _signed_in, client = database_down
    answer = client.post("/api/v1/items", json={"kind": "approval"},
                         headers={"Authorization": "Bearer cd_00000000_" + "a" * 43})
    assert answer.status_code == 503
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json["type"] == "urn:cleardesk:problem:unavailable"
    assert answer.headers["Retry-After"] == "5"
    # A create may have been saved just before the connection went: retried with the same
    # key it is made once, so the client is told to retry, not that nothing changed.
    assert "may or may not have been saved" in answer.json["detail"]
    assert "same Idempotency-Key" in answer.json["detail"]
    read = client.get("/api/v1/items", headers={"Authorization": "Bearer cd_00000000_" + "a" * 43})
    assert read.status_code == 503 and "changed nothing" in read.json["detail"]
