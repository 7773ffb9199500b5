"""Whatever a client sends (query values, page cursors, path ids, `next`, headers) is read by
app.params: nonsense is a 400 page or problem naming what was wrong, or a message beside the
filter it concerns, never a server error; on either database."""
from __future__ import annotations

import base64
import json
import re

import pytest

from app.unit_of_work import commit
from tests.conftest import csrf_from

HUGE = "9" * 23  # beyond a 64-bit integer


@pytest.fixture
def world(make_tenant, make_user, make_item):
    nw = make_tenant("northwind")
    co = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    make_user("manager@x.test", [nw, co], roles=("manager", "approver"), limit="1000000")
    make_user("auditor@x.test", [nw, co], roles=("auditor",))
    make_user("admin@x.test", [nw, co], roles=("admin",))
    for n in range(3):
        make_item(nw, amount=f"{100 + n}.00")
    commit()
    return nw, co


@pytest.fixture
def make_token(app):
    from app.api.tokens import issue_token
    from tests.conftest import SYSTEM

    def make(tenant):
        _row, secret = issue_token(SYSTEM, tenant.id, "fuzz",
                                   ("items:read", "items:write", "decisions:write"))
        commit()
        return secret

    return make


def _cursor(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


QUEUE_FILTERS = [
    ("assignee", "²"), ("assignee", HUGE), ("decided_by", "²"), ("decided_by", HUGE),
    ("tenant", "²"), ("tenant", HUGE), ("min_amount", "1e999999999"),
    ("max_amount", "-1E+999999"), ("min_amount", "NaN"), ("min_amount", "１２"),
    ("created_from", "0001-01-01"), ("created_to", "9999-12-31"), ("resolved_from", "0001-01-01"),
    ("resolved_to", "9999-12-31"), ("aged", "²-"), ("aged", f"{HUGE}-"), ("aged", f"1-{HUGE}"),
]


@pytest.mark.parametrize("name,value", QUEUE_FILTERS)
def test_a_nonsense_queue_filter_is_named_beside_the_filters_not_a_server_error(
        world, client, auth, name, value):
    auth.login("manager@x.test")
    response = client.get("/queues/team", query_string={name: value})
    assert response.status_code == 200
    assert "Some filters were ignored" in response.text
    assert name.replace("_", " ") in response.text.split("Some filters were ignored")[1][:300]
    if name in ("tenant", "assignee", "min_amount", "max_amount"):  # fields on the page
        assert re.search(rf'<(input|select) name="{name}"[^>]*aria-invalid="true"',
                         response.text)


BAD_CURSORS = {
    "time without a timezone": _cursor("sla", "2026-01-31T10:00:00", 1),
    "id beyond 64 bits": _cursor("sla", "2026-01-31T10:00:00+00:00", 10**30),
    "amount Infinity": _cursor("amount", "Infinity", 1),
    "amount NaN": _cursor("amount", "NaN", 1),
    "amount 1e999999999": _cursor("amount", "1e999999999", 1),
    "year 1": _cursor("sla", "0001-01-01T00:00:00+14:00", 1),
    "too long": _cursor("sla", "2026-01-31T10:00:00+00:00", 1) + "A" * 5000,
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_a_queue_page_cursor_that_we_did_not_make_is_a_400(world, client, auth, cursor):
    auth.login("manager@x.test")
    sort = "amount" if "amount" in base64.urlsafe_b64decode(cursor[:40] + "==").decode(
        errors="replace") else "sla"
    response = client.get("/queues/team", query_string={"after": cursor, "sort": sort})
    assert response.status_code == 400
    assert "page link is not valid" in response.text


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_an_api_cursor_that_we_did_not_make_is_a_400_problem(world, client, make_token,
                                                               cursor):
    from tests.api.conftest import BearerClient

    api = BearerClient(client, make_token(world[0]))
    sort = "amount" if "amount" in base64.urlsafe_b64decode(cursor[:40] + "==").decode(
        errors="replace") else "sla"
    response = api.get("/api/v1/items", query_string={"cursor": cursor, "sort": sort})
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.json["errors"][0]["field"] == "cursor"


def test_an_api_events_cursor_beyond_64_bits_is_a_400_problem(world, client, make_token,
                                                               make_item):
    from tests.api.conftest import BearerClient

    api = BearerClient(client, make_token(world[0]))
    item = make_item(world[0])
    response = api.get(f"/api/v1/items/{item.id}/events",
                       query_string={"cursor": _cursor("events", 10**30)})
    assert response.status_code == 400
    assert response.json["errors"][0]["field"] == "cursor"


DASHBOARD = [("tenant", "²"), ("tenant", HUGE), ("from", "0001-01-01"), ("to", "9999-12-31"),
             ("from", "0001-01-01T00:00"), ("days", "²"), ("days", HUGE)]


@pytest.mark.parametrize("name,value", DASHBOARD)
def test_a_nonsense_dashboard_scope_is_named_not_a_server_error(world, client, auth, name,
                                                                value):
    auth.login("manager@x.test")
    response = client.get("/dashboard", query_string={name: value})
    assert response.status_code == 200
    assert "flash-error" in response.text


AUDIT = [("item", HUGE), ("item", "²"), ("before", HUGE), ("tenant", HUGE),
         ("date_from", "0001-01-01"), ("date_to", "9999-12-31")]


@pytest.mark.parametrize("name,value", AUDIT)
def test_a_nonsense_audit_search_is_a_400_with_the_message_beside_the_field(
        world, client, auth, name, value):
    auth.login("auditor@x.test")
    response = client.get("/audit/", query_string={"tenant": world[0].id, name: value})
    assert response.status_code == 400
    assert f'id="{name}-error"' in response.text
    if name not in ("tenant", "before"):  # the search's own hidden fields
        assert 'aria-invalid="true"' in response.text


@pytest.mark.parametrize("path", [
    f"/items/{HUGE}", f"/audit/items/{HUGE}", f"/audit/events/{HUGE}", f"/imports/{HUGE}",
    f"/audit/exports/{HUGE}", f"/admin/integrations/webhooks/{HUGE}",
    f"/admin/policy/{HUGE}/versions/{HUGE}", f"/admin/t/northwind/policy/versions/{HUGE}",
    f"/admin/t/northwind/people/{HUGE}",
    f"/api/v1/items/{HUGE}", f"/api/v1/items/-{HUGE}", "/items/١٢",
])
def test_an_id_beyond_64_bits_in_a_path_is_a_404(world, client, auth, make_token, path):
    from tests.api.conftest import BearerClient

    auth.login("admin@x.test")
    if path.startswith("/api/"):
        response = BearerClient(client, make_token(world[0])).get(path)
    else:
        response = client.get(path)
    assert response.status_code == 404


@pytest.mark.parametrize("url", [
    f"/admin/mail/?before={HUGE}", f"/admin/policy/?tenant={HUGE}",
    f"/admin/integrations/webhooks/?tenant={HUGE}", f"/admin/integrations/tokens?tenant={HUGE}",
    f"/imports/?tenant={HUGE}", f"/audit/access-review?tenant={HUGE}", "/admin/mail/?before=²",
])
def test_an_id_beyond_64_bits_in_a_query_is_a_400_naming_it(world, client, auth, url):
    # The import pages are a manager's or an analyst's; the rest an admin's or an auditor's.
    auth.login("manager@x.test" if url.startswith("/imports/") else "admin@x.test")
    response = client.get(url)
    assert response.status_code == 400
    name = url.split("?")[1].split("=")[0]
    assert name in response.text


@pytest.mark.parametrize("target", ["/%0d%0aSet-Cookie:%20x=1", "/queues/mine%0a", "/\\evil.test",
                                    "/%09/evil.test"])
def test_sign_in_with_a_next_holding_control_characters_goes_home(world, client, target):
    page = client.get("/login")
    response = client.post(f"/login?next={target}", data={
        "email": "manager@x.test", "password": "correct horse battery staple",
        "csrf_token": csrf_from(page.text)})
    assert response.status_code == 303
    assert response.headers["Location"] == "/queues/mine" or \
        response.headers["Location"].endswith("/")
    assert "\n" not in response.headers["Location"] and "evil" not in response.headers["Location"]


@pytest.mark.parametrize("current", ["http://[::1", "http://x/%0d%0a", "\x00", "//evil.test/x"])
def test_an_anonymous_htmx_request_with_a_crafted_current_url_is_sent_to_sign_in(client,
                                                                                  current):
    response = client.get("/queues/mine", headers={"HX-Request": "true",
                                                   "HX-Current-URL": current})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")
