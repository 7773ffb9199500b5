"""The JSON API through HTTP: tokens and scopes, creating, listing and reading items,
decisions through the write path, events, problem+json errors and the rate limit."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app import create_app
from app.api.schemas import DecisionIn, ItemCreate
from app.api.tokens import revoke_token
from app.audit.models import AuditEvent
from app.extensions import db
from app.models import ApiToken, WorkItem
from app.types import utcnow
from app.unit_of_work import commit
from tests.api.conftest import BearerClient, item_payload
from tests.conftest import SYSTEM, arrange


def _problem(response, status):
    assert response.status_code == status, response.text
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def _fields(body):
    return {e["field"]: e["message"] for e in body["errors"]}


# --- the document ----------------------------------------------------------------------------

def test_openapi_document_is_public_and_made_from_the_request_schemas(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    ref = "#/components/schemas/{model}"
    assert schemas["ItemCreate"] == ItemCreate.model_json_schema(ref_template=ref)
    assert schemas["DecisionIn"] == DecisionIn.model_json_schema(ref_template=ref)
    post = doc["paths"]["/items"]["post"]
    assert set(post["responses"]) >= {"200", "201", "400", "401", "403", "422", "429"}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


# --- tokens ----------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    None, "Bearer", "Bearer nonsense", "Basic abc", "Bearer cd_0000000a_" + "x" * 43,
])
def test_a_missing_malformed_or_unknown_token_is_401(client, make_tenant, header):
    make_tenant()
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/items", headers=headers)
    _problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_with_a_wrong_secret_or_revoked_is_401(client, make_tenant, make_token):
    tenant = make_tenant()
    token = make_token(tenant)
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    _problem(BearerClient(client, wrong).get("/api/v1/items"), 401)
    assert BearerClient(client, token).get("/api/v1/items").status_code == 200
    row = db.session.scalars(select(ApiToken)).one()
    revoke_token(SYSTEM, tenant.id, row.id)
    commit()
    _problem(BearerClient(client, token).get("/api/v1/items"), 401)


def test_only_the_hash_of_a_token_is_stored(app, make_tenant, make_token):
    token = make_token(make_tenant())
    row = db.session.scalars(select(ApiToken)).one()
    assert token not in (row.token_hash, row.prefix, row.name)
    assert len(row.token_hash) == 64 and token.split("_", 2)[2] not in row.token_hash


@pytest.mark.parametrize("scopes, method, path", [
    (("items:read",), "post", "/api/v1/items"),
    (("items:write",), "get", "/api/v1/items"),
    (("items:read", "items:write"), "post", "/api/v1/items/1/decision"),
])
def test_a_token_without_the_scope_is_403(client, make_tenant, make_token, scopes, method, path):
    bearer = BearerClient(client, make_token(make_tenant(), scopes=scopes))
    response = getattr(bearer, method)(path, **({"json": {}} if method == "post" else {}))
    assert "lacks" in _problem(response, 403)["detail"]


def test_token_use_is_audited_at_most_hourly_and_last_use_kept(api):
    for _ in range(3):
        assert api.get("/api/v1/items").status_code == 200
    db.session.expire_all()
    row = db.session.scalars(select(ApiToken)).one()
    assert row.last_used_at is not None and row.last_used_ip == "127.0.0.1"
    used = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "api_token.used")
                              ).all()
    assert len(used) == 1 and used[0].actor_type == "api"
    assert used[0].data["token_id"] == row.id
    # An hour on, the next use is audited again.
    row.last_used_at = row.use_audited_at = utcnow() - timedelta(hours=2)
    commit()
    api.get("/api/v1/items")
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "api_token.used")) == 2


# --- creating items --------------------------------------------------------------------------

def test_posting_an_item_creates_it_once_and_a_repeat_returns_it(api):
    first = api.post("/api/v1/items", json=item_payload())
    assert first.status_code == 201, first.text
    body = first.get_json()
    assert body["state"] == "open" and body["amount"] == "1250.00" and body["tenant"] == "northwind"
    assert first.headers["Location"].endswith(f"/api/v1/items/{body['id']}")
    again = api.post("/api/v1/items", json=item_payload(title="Changed title"))
    assert again.status_code == 200 and again.get_json()["id"] == body["id"]
    assert db.session.scalar(select(func.count()).select_from(WorkItem)) == 1
    event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "item.created")
                               ).one()
    assert event.actor_type == "api" and "api-token" in event.actor_label


@pytest.mark.parametrize("change, field", [
    ({"amount": None}, "amount"),
    ({"amount": "12.345"}, "amount"),
    ({"amount": True}, "amount"),
    ({"kind": "invoice"}, "kind"),
    ({"title": ""}, "title"),
    ({"title": "nul\x00byte"}, "title"),
    ({"subtype": "discount"}, "subtype"),  # an approval subtype on a billing exception
    ({"currency": "EUR"}, "currency"),  # the tenant works in USD
    ({"details": {"colour": "red"}}, "colour"),
    ({"surprise": 1}, "surprise"),
])
def test_an_invalid_item_is_422_naming_the_field(api, change, field):
    body = item_payload(**change)
    body = {k: v for k, v in body.items() if v is not None}
    response = api.post("/api/v1/items", json=body)
    fields = _fields(_problem(response, 422))
    assert any(field in name for name in fields), fields
    assert db.session.scalar(select(func.count()).select_from(WorkItem)) == 0


def test_a_body_that_is_not_json_is_400_and_another_media_type_415(api):
    headers = {"Content-Type": "application/json"}
    _problem(api.post("/api/v1/items", data="{not json", headers=headers), 400)
    _problem(api.post("/api/v1/items", data="a=b",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)


def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(api):
    key = {"Idempotency-Key": "order-77"}
    first = api.post("/api/v1/items", json=item_payload(), headers=key)
    assert first.status_code == 201
    replay = api.post("/api/v1/items", json=item_payload(), headers=key)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    other = api.post("/api/v1/items", json=item_payload(external_ref="INV-2"), headers=key)
    assert "another request" in _problem(other, 422)["detail"]
    _problem(api.post("/api/v1/items", json=item_payload(), headers={"Idempotency-Key": "a b"}),
             400)
    assert db.session.scalar(select(func.count()).select_from(WorkItem)) == 1


# --- reading ---------------------------------------------------------------------------------

def test_listing_pages_by_cursor_through_every_item_once(api, make_item):
    for n in range(7):
        api.post("/api/v1/items", json=item_payload(external_ref=f"R-{n}", amount=f"{n}00.00"))
    seen, cursor = [], None
    while True:
        path = "/api/v1/items?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(path).get_json()
        seen += [i["external_ref"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"R-{n}" for n in range(7)]
    by_amount = api.get("/api/v1/items?sort=amount&min_amount=300&limit=2").get_json()
    assert [i["amount"] for i in by_amount["items"]] == ["600.00", "500.00"]
    second = api.get(f"/api/v1/items?sort=amount&min_amount=300&limit=2"
                     f"&cursor={by_amount['next_cursor']}").get_json()
    assert [i["amount"] for i in second["items"]] == ["400.00", "300.00"]
    assert api.get("/api/v1/items?external_ref=R-4").get_json()["items"][0]["amount"] == "400.00"


@pytest.mark.parametrize("query", ["limit=0", "limit=x", "kind=invoice", "cursor=%%%",
                                   "sort=amount&cursor=WyJhZ2UiLCAiMjAyNi0wMS0wMSIsIDFd",
                                   "limit=1&limit=2", "q=%00", "colour=red"])
def test_a_bad_query_is_400(api, query):
    _problem(api.get(f"/api/v1/items?{query}"), 400)


def test_an_item_of_another_tenant_is_404_like_a_missing_one(api, make_tenant, make_item):
    other = make_item(make_tenant("contoso", "EUR", "Europe/Berlin", "DE"))
    _problem(api.get(f"/api/v1/items/{other.id}"), 404)
    _problem(api.get("/api/v1/items/999999"), 404)
    _problem(api.get(f"/api/v1/items/{2**70}"), 404)
    _problem(api.get(f"/api/v1/items/{other.id}/events"), 404)
    assert api.get("/api/v1/items").get_json()["items"] == []


def test_an_item_shows_the_team_queue_its_policy_routed_it_to(api, make_item):
    plain = make_item(api.tenant)
    routed = make_item(api.tenant)
    arrange(routed, team_queue="Deal desk")  # what the policy worker sets (tests/policy)
    assert api.get(f"/api/v1/items/{routed.id}").get_json()["team_queue"] == "Deal desk"
    assert api.get(f"/api/v1/items/{plain.id}").get_json()["team_queue"] is None


def test_unknown_paths_and_methods_under_the_api_are_problems(api):
    _problem(api.get("/api/v1/nothing-here"), 404)
    _problem(api.client.delete("/api/v1/items",
                               headers={"Authorization": f"Bearer {api.token}"}), 405)


# --- decisions -------------------------------------------------------------------------------

@pytest.fixture
def approval(api, make_user, make_item):
    requester = make_user("req@x.test", [api.tenant], roles=("requester", "approver"))
    make_user("appr@x.test", [api.tenant], roles=("approver",), limit="5000")
    make_user("low@x.test", [api.tenant], roles=("approver",), limit="10")
    return make_item(api.tenant, amount="900.00", requester=requester)


def test_a_decision_goes_through_the_write_path_as_the_named_person(api, approval):
    response = api.post(f"/api/v1/items/{approval.id}/decision",
                        json={"action": "approve", "decided_by": "APPR@x.test",
                              "comment": "ok from ERP", "expected_version": approval.version})
    assert response.status_code == 200, response.text
    assert response.get_json()["state"] == "approved"
    event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "item.approve")
                               ).one()
    assert event.actor_type == "api" and event.actor_id is not None
    assert "api-token" in event.actor_label
    events = api.get(f"/api/v1/items/{approval.id}/events").get_json()["events"]
    assert [e["action"] for e in events] == ["item.created", "item.approve"]
    assert all("ip" not in e["data"] for e in events)
    # Deciding it again changes nothing; the expected version is now stale: a conflict.
    again = api.post(f"/api/v1/items/{approval.id}/decision",
                     json={"action": "reject", "decided_by": "appr@x.test", "comment": "no"})
    _problem(again, 409)


@pytest.mark.parametrize("decided_by, status, words", [
    ("req@x.test", 403, "someone else"),  # segregation of duties: the requester
    ("low@x.test", 403, "approval limit"),
    ("nobody@x.test", 422, "not an active member"),
])
def test_a_decision_obeys_roles_limits_and_segregation(api, approval, decided_by, status, words):
    response = api.post(f"/api/v1/items/{approval.id}/decision",
                        json={"action": "approve", "decided_by": decided_by})
    assert words in _problem(response, status)["detail"] + str(_fields(response.get_json()))
    db.session.expire_all()
    assert db.session.get(WorkItem, approval.id).state == "pending"


def test_a_decision_with_a_stale_version_is_409(api, approval):
    response = api.post(f"/api/v1/items/{approval.id}/decision",
                        json={"action": "approve", "decided_by": "appr@x.test",
                              "expected_version": approval.version + 5})
    _problem(response, 409)


# --- the rate limit --------------------------------------------------------------------------

def test_the_rate_limit_is_per_token_and_shared_by_every_process(config, api, make_token):
    token = api.token
    config = {**config, "API_RATE_LIMIT_PER_MINUTE": 3}
    # Two app instances stand for two web processes: they share only Redis.
    first, second = create_app(config), create_app(config)
    # The limit counts per clock minute: four requests that straddle a minute's end would be
    # counted in two windows.
    if time.time() % 60 > 40:
        time.sleep(60.5 - time.time() % 60)
    statuses = []
    for app_ in (first, second, first, second):
        with app_.test_client() as c:
            statuses.append(c.get("/api/v1/items", headers={"Authorization": f"Bearer {token}"}))
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    limited = _problem(statuses[3], 429)
    assert int(statuses[3].headers["Retry-After"]) >= 1 and "3 requests" in limited["detail"]
    other = make_token(api.tenant, name="crm")
    with second.test_client() as c:
        assert c.get("/api/v1/items", headers={"Authorization": f"Bearer {other}"}
                     ).status_code == 200
    for app_ in (first, second):
        with app_.app_context():
            db.engine.dispose()
