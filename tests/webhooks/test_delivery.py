"""Webhooks end to end: items and decisions leave through the outbox and a real `rq worker`
to a real HTTP receiver that checks the signature; a receiver that was down gets every event
afterwards, each delivery id at least once and processed once; a webhook that keeps failing is
paused and its admins are told."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.actors import Actor
from app.audit.models import AuditEvent
from app.extensions import db
from app.outbox.models import OutboxMessage
from app.unit_of_work import commit
from app.webhooks import services
from app.webhooks.models import WebhookDelivery, WebhookSubscription
from app.work.actions import perform
from tests.conftest import SYSTEM, actor
from tests.webhooks.conftest import run_worker


@pytest.fixture
def hooked(app, relaying, make_tenant, make_user, receiver, inbox):
    # The receiver listens on 127.0.0.1: private targets allowed, explicitly, for these tests.
    app.config.update(WEBHOOK_RETRY_BASE_SECONDS=0, WEBHOOK_MAX_ATTEMPTS=3,
                      WEBHOOK_PAUSE_AFTER=4, WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
    tenant = make_tenant()
    admin = make_user("admin@x.test", [tenant], roles=("admin",))
    analyst = make_user("analyst@x.test", [tenant], roles=("analyst",))
    sub, secret = services.create_subscription(
        SYSTEM, tenant.id, url=receiver.url, events=["item.created", "item.state_changed"])
    commit()
    receiver.secret = secret
    return {"tenant": tenant, "sub": sub.id, "admin": admin, "analyst": analyst}


def _exceptions(make_item, tenant, n):
    return [make_item(tenant, kind="billing_exception", amount=f"{100 + i}.00")
            for i in range(n)]


def _deliveries(sub_id):
    db.session.expire_all()
    return db.session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.subscription_id == sub_id).order_by(WebhookDelivery.id)).all()


def test_each_event_arrives_signed_with_a_stable_delivery_id(app, hooked, receiver, make_item):
    receiver.start()
    item = _exceptions(make_item, hooked["tenant"], 1)[0]
    perform(actor(hooked["analyst"]), item.id, "investigate")
    commit()
    run_worker(app)
    deliveries = _deliveries(hooked["sub"])
    assert [d.event for d in deliveries] == ["item.created", "item.state_changed"]
    assert all(d.status == "succeeded" and d.attempts == 1 for d in deliveries)
    assert receiver.bad_signatures == 0
    assert set(receiver.processed) == {d.delivery_id for d in deliveries}
    changed = receiver.processed[deliveries[1].delivery_id]
    assert changed["event"] == "item.state_changed" and changed["tenant"] == "northwind"
    assert changed["data"]["to"] == "investigating"
    assert changed["data"]["item"]["id"] == item.id
    # The receiver's check is real: a body changed in transit fails it.
    header = services.signature_header(receiver.secret, 1_700_000_000, deliveries[0].body)
    assert not receiver.verify(header, deliveries[0].body.encode())  # too old
    assert not receiver.verify(header.replace("t=1700000000", "t=9999999999"),
                               deliveries[0].body.encode())


def test_a_failed_attempt_is_retried_with_the_same_delivery_id(app, hooked, receiver,
                                                               make_item):
    receiver.start()
    receiver.fail_next = 1
    _exceptions(make_item, hooked["tenant"], 1)
    run_worker(app)
    [delivery] = _deliveries(hooked["sub"])
    assert delivery.status == "succeeded" and delivery.attempts == 2
    assert [r["id"] for r in receiver.received] == [delivery.delivery_id] * 2
    assert list(receiver.processed) == [delivery.delivery_id]


def test_a_receiver_down_for_a_while_gets_every_event_after_resume(app, hooked, receiver,
                                                                   make_item, inbox):
    items = _exceptions(make_item, hooked["tenant"], 4)
    for item in items[:3]:
        perform(actor(hooked["analyst"]), item.id, "investigate")
        commit()
    run_worker(app)  # the receiver is down: attempts fail until the webhook pauses
    sub = db.session.get(WebhookSubscription, hooked["sub"])
    db.session.refresh(sub)
    assert sub.status == "paused" and "failed deliveries in a row" in sub.paused_reason
    deliveries = _deliveries(hooked["sub"])
    assert len(deliveries) == 7  # 4 created + 3 state changes
    assert {d.status for d in deliveries} <= {"held", "failed"}
    assert db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.action == "webhook.paused")).all() == ["webhook.paused"]
    [mail] = inbox.to("admin@x.test")
    assert "Webhook paused" in mail["Subject"]

    # While paused nothing is lost: a new event is held for later.
    perform(actor(hooked["analyst"]), items[3].id, "investigate")
    commit()
    run_worker(app)
    assert len(_deliveries(hooked["sub"])) == 8

    receiver.start()
    services.resume_subscription(actor(hooked["admin"]), hooked["tenant"].id, hooked["sub"])
    commit()
    run_worker(app)
    deliveries = _deliveries(hooked["sub"])
    assert {d.status for d in deliveries} == {"succeeded"}
    ids = {d.delivery_id for d in deliveries}
    assert {r["id"] for r in receiver.received} == ids  # each id at least once
    assert set(receiver.processed) == ids and receiver.bad_signatures == 0
    topics = db.session.scalars(select(OutboxMessage.topic).where(
        OutboxMessage.topic.in_(("item.created", "item.state_changed")))).all()
    assert len(topics) == len(ids)  # every event, once each

    # A redelivery sends the same id again; the receiver still processes it once.
    services.redeliver(actor(hooked["admin"]), hooked["tenant"].id, deliveries[0].id)
    commit()
    run_worker(app)
    assert [r["id"] for r in receiver.received].count(deliveries[0].delivery_id) == 2
    assert len(receiver.processed) == len(ids)


def test_the_signing_secret_is_not_stored(app, hooked, receiver):
    sub = db.session.get(WebhookSubscription, hooked["sub"])
    stored = " ".join(str(getattr(sub, c.key)) for c in WebhookSubscription.__table__.columns)
    assert receiver.secret not in stored and receiver.secret.startswith("whsec_")
    assert services.signing_secret(sub) == receiver.secret


def test_only_an_admin_of_the_tenant_subscribes(app, make_tenant, make_user):
    tenant = make_tenant()
    analyst = make_user("analyst@x.test", [tenant], roles=("analyst",))
    from app.errors import PermissionDenied, ValidationFailed

    with pytest.raises(PermissionDenied):
        services.create_subscription(actor(analyst), tenant.id, url="https://x.test/h",
                                     events=["item.created"])
    with pytest.raises(ValidationFailed) as bad:
        services.create_subscription(Actor.system("t"), tenant.id, url="ftp://x.test/h",
                                     events=["nope"])
    assert set(bad.value.fields) == {"url", "events"}


@pytest.mark.parametrize("url", ["http://billing.example.com/h", "https://127.0.0.1/h",
                                 "https://10.1.2.3/h", "https://169.254.169.254/latest",
                                 "https://localhost:8443/h"])
def test_in_production_a_webhook_must_be_https_to_a_public_address(app, make_tenant, url):
    from app.errors import ValidationFailed

    tenant = make_tenant()
    app.config["APP_ENV"] = "production"
    with pytest.raises(ValidationFailed) as bad:
        services.create_subscription(SYSTEM, tenant.id, url=url, events=["item.created"])
    assert "url" in bad.value.fields
    sub, _secret = services.create_subscription(SYSTEM, tenant.id,
                                                url="https://billing.example.com/hooks",
                                                events=["item.created"])
    assert sub.id


def test_a_batch_of_new_items_reaches_the_receiver_as_one_event_per_item(app, hooked,
                                                                           receiver):
    from app.outbox.jobs import deliver_message
    from app.work.services import create_items

    receiver.start()
    rows = [{"kind": "billing_exception", "subtype": "payment_failed", "title": f"Card {n}",
             "external_ref": f"EX-{n}", "source_system": "billing", "counterparty": "Acme",
             "amount": f"{10 + n}.00"} for n in range(25)]
    app.config["OUTBOX_RELAY_ON_COMMIT"] = False
    ids, _existing = create_items(actor(hooked["analyst"]), hooked["tenant"].id, rows)
    commit()
    [message] = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "items.created")).all()
    assert message.payload == {"item_ids": ids}
    app.config["OUTBOX_RELAY_ON_COMMIT"] = True
    assert deliver_message(message.id) == "processed"
    # A retried fan-out (the same message handled again) makes no second delivery.
    from app.webhooks.services import fan_out

    fan_out(db.session.get(OutboxMessage, message.id))
    commit()
    run_worker(app)
    deliveries = _deliveries(hooked["sub"])
    assert len(deliveries) == 25 and {d.event for d in deliveries} == {"item.created"}
    assert {d.status for d in deliveries} == {"succeeded"}
    assert receiver.bad_signatures == 0 and len(receiver.processed) == 25
    bodies = list(receiver.processed.values())
    assert sorted(b["data"]["item"]["id"] for b in bodies) == ids
    assert {b["event"] for b in bodies} == {"item.created"}
    assert {b["data"]["item"]["external_ref"] for b in bodies} == {f"EX-{n}" for n in range(25)}


def _backlog(app, hooked, n):
    """n new items for the webhook, fanned out while no worker ran: its backlog."""
    from app.work.services import create_items

    rows = [{"kind": "billing_exception", "subtype": "payment_failed", "title": f"Card {n}",
             "external_ref": f"EX-{n}", "source_system": "billing", "counterparty": "Acme",
             "amount": f"{10 + n}.00"} for n in range(n)]
    create_items(actor(hooked["analyst"]), hooked["tenant"].id, rows)
    commit()


@pytest.mark.parametrize("worker_class", ["fork", "simple"])
def test_a_webhooks_backlog_goes_out_oldest_first_over_one_connection(app, hooked, receiver,
                                                                      worker_class):
    """With either way of running jobs: a work-horse per job, or all in the worker's own
    process (each job in a fresh app context)."""
    receiver.start()
    _backlog(app, hooked, 30)
    run_worker(app, WORKER_CLASS=worker_class)
    deliveries = _deliveries(hooked["sub"])
    assert len(deliveries) == 30 and {d.status for d in deliveries} == {"succeeded"}
    assert all(d.attempts == 1 for d in deliveries)
    assert [r["id"] for r in receiver.received] == [d.delivery_id for d in deliveries]
    assert len({r["connection"] for r in receiver.received}) == 1


def test_a_batch_that_reaches_its_size_queues_a_job_for_the_rest(app, hooked, receiver):
    app.config["WEBHOOK_BATCH_SIZE"] = 7
    receiver.start()
    _backlog(app, hooked, 30)
    run_worker(app)
    deliveries = _deliveries(hooked["sub"])
    assert {d.status for d in deliveries} == {"succeeded"} and len(deliveries) == 30
    assert [r["id"] for r in receiver.received] == [d.delivery_id for d in deliveries]
    # Batches of 7, each on its own connection: 7, 7, 7, 7 and 2.
    connections = [r["connection"] for r in receiver.received]
    assert [connections.count(c) for c in dict.fromkeys(connections)] == [7, 7, 7, 7, 2]


def test_a_receiver_that_closes_idle_connections_still_gets_each_delivery_once(
        app, hooked, receiver):
    """The receiver closes the connection after each answer, as some proxies do: the next
    delivery of the batch opens a new one; nothing is sent twice."""
    receiver.close_after_each = True
    receiver.start()
    _backlog(app, hooked, 5)
    run_worker(app)
    deliveries = _deliveries(hooked["sub"])
    assert {d.status for d in deliveries} == {"succeeded"} and len(deliveries) == 5
    assert [r["id"] for r in receiver.received] == [d.delivery_id for d in deliveries]
    assert len({r["connection"] for r in receiver.received}) == 5


def test_an_intermediate_step_approval_is_delivered_as_item_step_approved(app, hooked, receiver,
                                                                          make_user, make_item):
    """A two-step approval: the first approver's decision leaves the item pending (no state
    change) but the receiver hears of it; the last one is the item's state change. Both
    bodies are what the OpenAPI document's webhook models say."""
    from app.api.schemas import WEBHOOK_EVENTS
    from app.approvals.services import approve_step

    tenant = hooked["tenant"]
    requester = make_user("req@x.test", [tenant], roles=("requester",))
    approver = make_user("appr@x.test", [tenant], roles=("approver",), limit="60000")
    manager = make_user("mgr@x.test", [tenant], roles=("manager",), limit="1000000")
    sub = db.session.get(WebhookSubscription, hooked["sub"])
    sub.events = ["item.state_changed", "item.step_approved"]
    commit()
    item = make_item(tenant, amount="75000.00", requester=requester)
    receiver.start()
    approve_step(actor(approver), item.id, comment="fine by me")
    commit()
    run_worker(app)
    approve_step(actor(manager), item.id)
    commit()
    run_worker(app)
    deliveries = _deliveries(hooked["sub"])
    assert [d.event for d in deliveries] == ["item.step_approved", "item.state_changed"]
    assert {d.status for d in deliveries} == {"succeeded"} and receiver.bad_signatures == 0
    assert [r["event"] for r in receiver.received] == ["item.step_approved",
                                                       "item.state_changed"]
    step, final = (receiver.processed[d.delivery_id] for d in deliveries)
    for body in (step, final):
        WEBHOOK_EVENTS[body["event"]].model_validate(body)
    assert {k: step["data"][k] for k in ("step", "role", "next_step", "next_role")} == {
        "step": 1, "role": "approver", "next_step": 2, "next_role": "manager"}
    assert step["data"]["item"]["id"] == item.id and step["data"]["item"]["state"] == "pending"
    assert [s["state"] for s in step["data"]["item"]["steps"]] == ["approved", "open"]
    assert final["data"]["to"] == "approved"


def test_the_openapi_document_describes_every_webhook_event(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert set(document["webhooks"]) == set(services.EVENTS)
    body = document["webhooks"]["item.step_approved"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"step", "next_step", "item"} <= set(
        document["components"]["schemas"][document["components"]["schemas"][ref]
                                           ["properties"]["data"]["$ref"].rsplit("/", 1)[1]]
        ["required"])


def _local_name() -> str:
    """A host name, not an address nor "localhost", that resolves to this machine or a
    private network: the machine's own name (in /etc/hosts, or the container's address)."""
    import socket

    name = socket.gethostname()
    try:
        addresses = services.resolve_host(name, 80)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if all(services.is_public_address(a) for a in addresses):
        pytest.skip(f"this machine's name {name!r} resolves to a public address")
    return name


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/h", "http://10.1.2.3/h",
                                 "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]:8080/h", "http://[::ffff:127.0.0.1]/h",
                                 "http://100.64.0.1/h", "http://0.0.0.0/h",
                                 "http://printer.local/h", "http://localhost/h"])
def test_private_addresses_are_refused_in_every_environment(app, make_tenant, url):
    from app.errors import ValidationFailed

    tenant = make_tenant()
    assert not app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"]  # the default
    with pytest.raises(ValidationFailed) as bad:
        services.create_subscription(SYSTEM, tenant.id, url=url, events=["item.created"])
    assert "public address" in bad.value.fields["url"]


def test_a_public_name_that_resolves_to_a_private_address_is_refused_on_the_form(
        app, client, auth, make_tenant, make_user):
    from tests.conftest import csrf_from

    name = _local_name()
    tenant = make_tenant()
    make_user("admin@x.test", [tenant], roles=("admin",))
    auth.login("admin@x.test")
    page = client.get(f"/admin/integrations/webhooks/?tenant={tenant.id}")
    response = client.post(f"/admin/integrations/webhooks/?tenant={tenant.id}", data={
        "csrf_token": csrf_from(page.text), "url": f"https://{name}:8443/hooks",
        "events": ["item.created"]})
    assert response.status_code == 422
    assert f"{name} resolves to" in response.text and "private network" in response.text
    assert db.session.scalars(select(WebhookSubscription)).all() == []


def test_a_delivery_to_a_host_that_now_resolves_privately_fails_in_the_log(
        app, hooked, receiver, make_item, client, auth):
    """Saved while allowed (as if the name were public then); the worker, with private
    targets refused (the default), resolves the name again at delivery and refuses it: the
    attempt is written to the delivery log and retried, nothing reaches the receiver."""
    name = _local_name()
    receiver.start()
    sub = db.session.get(WebhookSubscription, hooked["sub"])
    sub.url = f"http://{name}:{receiver.port}/hooks/cleardesk"
    commit()
    app.config.update(WEBHOOK_ALLOW_PRIVATE_TARGETS=False, WEBHOOK_MAX_ATTEMPTS=1)
    _exceptions(make_item, hooked["tenant"], 1)
    run_worker(app)
    [delivery] = _deliveries(hooked["sub"])
    assert delivery.status == "failed" and delivery.attempts == 1
    assert delivery.last_error.startswith(f"refused: {name} resolves to")
    assert receiver.received == []
    auth.login("admin@x.test")
    log = client.get(f"/admin/integrations/webhooks/{hooked['sub']}?tenant={hooked['tenant'].id}")
    assert log.status_code == 200 and f"refused: {name} resolves to" in log.text
