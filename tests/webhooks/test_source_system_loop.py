"""The request-info loop of an item no person requested, end to end over real HTTP: a billing
system creates an approval through the API and attaches its evidence; the approver, mailed a
link, asks for information in the app; the system's receiver gets `item.info_requested`, signed;
it answers through `POST /api/v1/items/{id}/resubmit` with a lower amount; the link mailed
before is refused, the fresh one approves, and the outcome arrives as `item.state_changed`."""
from __future__ import annotations

import hashlib
import io
from urllib.parse import urlsplit

import pytest

from app.unit_of_work import commit
from app.webhooks import services
from tests.api.conftest import BearerClient, make_token  # noqa: F401 (a fixture)
from tests.conftest import SYSTEM, csrf_from
from tests.webhooks.conftest import run_worker
from tests.work.test_attachments import PDF


@pytest.fixture
def system(app, relaying, inbox, make_tenant, make_user, receiver, client, make_token):
    app.config.update(WEBHOOK_RETRY_BASE_SECONDS=0, WEBHOOK_MAX_ATTEMPTS=3,
                      WEBHOOK_PAUSE_AFTER=4, WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
    tenant = make_tenant()
    make_user("ann@x.test", [tenant], roles=("approver",), limit="50000", name="Ann Approver")
    _sub, secret = services.create_subscription(
        SYSTEM, tenant.id, url=receiver.url,
        events=["item.info_requested", "item.state_changed"])
    commit()
    receiver.secret = secret
    receiver.start()
    return BearerClient(client, make_token(tenant))


def _path(url: str) -> str:
    return urlsplit(url).path


def _events(receiver, name):
    return [body for body in receiver.processed.values() if body["event"] == name]


def test_a_source_system_is_asked_answers_with_a_lower_amount_and_hears_the_outcome(
        app, system, receiver, inbox, client, auth):
    created = system.post("/api/v1/items", json={
        "kind": "approval", "subtype": "credit_memo", "title": "Credit for Acme Labs",
        "external_ref": "CM-2041", "source_system": "billing", "counterparty": "Acme Labs",
        "amount": "900.00", "details": {"invoice_number": "INV-2041"}})
    assert created.status_code == 201, created.text
    item = created.get_json()
    assert item["state"] == "pending"
    attached = client.post(f"/api/v1/items/{item['id']}/attachments",
                           data={"files": [(io.BytesIO(PDF), "credit-note.pdf")]},
                           content_type="multipart/form-data",
                           headers={"Authorization": f"Bearer {system.token}"})
    assert attached.status_code == 201, attached.text

    run_worker(app)
    [first] = inbox.to("ann@x.test")
    assert "USD 900.00" in inbox.text(first) and "credit-note.pdf" in inbox.text(first)
    assert hashlib.sha256(PDF).hexdigest()[:12] in inbox.text(first)
    first_link = _path(inbox.link(first))

    # The approver asks in the app.
    auth.login("ann@x.test")
    page = client.get(f"/items/{item['id']}")
    asked = client.post(f"/items/{item['id']}/act", data={
        "csrf_token": csrf_from(page.text), "action": "request_info",
        "comment": "Is 900 the whole credit, or less after the partial refund?"})
    assert asked.status_code == 303
    client.post("/logout", data={"csrf_token": auth.csrf()})

    run_worker(app)
    [question] = _events(receiver, "item.info_requested")
    assert receiver.bad_signatures == 0
    assert question["data"]["item"]["id"] == item["id"]
    assert question["data"]["question"].startswith("Is 900 the whole credit")
    assert question["data"]["item"]["attachments"][0]["file_name"] == "credit-note.pdf"

    answered = system.post(f"/api/v1/items/{item['id']}/resubmit", json={
        "answer": "Less: 750 after the partial refund.", "amount": "750.00"})
    assert answered.status_code == 200, answered.text
    assert answered.get_json()["state"] == "pending"
    assert answered.get_json()["amount"] == "750.00"

    # The link mailed for 900 no longer decides; the fresh one, for 750, does.
    old = client.get(first_link)
    assert old.status_code >= 400 and "Approve or reject" not in old.text
    run_worker(app)
    fresh = inbox.to("ann@x.test")[-1]
    assert fresh is not first and "USD 750.00" in inbox.text(fresh)
    fresh_link = _path(inbox.link(fresh))
    decide_page = client.get(fresh_link)
    assert decide_page.status_code == 200 and "Approve or reject" in decide_page.text
    refused = client.post(first_link, data={"action": "approve",
                                            "csrf_token": csrf_from(decide_page.text)})
    assert refused.status_code >= 400
    approved = client.post(fresh_link, data={"action": "approve",
                                             "csrf_token": csrf_from(decide_page.text)})
    assert approved.status_code == 200 and "You approved" in approved.text

    run_worker(app)
    outcomes = [e for e in _events(receiver, "item.state_changed")
                if e["data"]["to"] == "approved"]
    assert len(outcomes) == 1 and outcomes[0]["data"]["item"]["id"] == item["id"]
    assert outcomes[0]["data"]["item"]["amount"] == "750.00"
    assert receiver.bad_signatures == 0
