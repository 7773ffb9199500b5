"""Under a backlog one delivery job takes the pending messages of its topic and tenant together
(PostgreSQL): arrivals decided as one policy batch, each arrival's webhook deliveries exactly as
alone, one message to queue them; the others' own jobs find them processed, and a message
another job holds is left to it."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from app.extensions import db
from app.outbox.jobs import deliver_message
from app.outbox.models import OutboxMessage
from app.policy.models import PolicyDecision
from app.unit_of_work import commit
from app.webhooks import services as webhooks
from app.webhooks.models import WebhookDelivery
from tests.conftest import DATABASE, SYSTEM
from tests.policy.conftest import admins, make_policy  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(DATABASE != "postgresql",
                                reason="batches skip rows another job locks: PostgreSQL")


def _arrivals(app, admins, make_policy, make_item, count: int):
    app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
    tenant, author, checker = admins
    make_policy(tenant, author, checker,
                [("Small ones", "amount <= 1000", "auto_approve", "")], max_auto_amount="1000")
    webhooks.create_subscription(SYSTEM, tenant.id, url="http://127.0.0.1:9/hook",
                                 events=["item.created"])
    commit()
    items = [make_item(tenant, amount=f"{100 + n}.00") for n in range(count)]
    messages = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "item.created").order_by(OutboxMessage.id)).all()
    return items, messages


def _topic(topic: str) -> list[OutboxMessage]:
    db.session.expire_all()
    return db.session.scalars(select(OutboxMessage).where(OutboxMessage.topic == topic)
                              .order_by(OutboxMessage.id)).all()


def test_one_job_decides_a_backlog_of_arrivals_together_and_their_own_jobs_find_them_done(
        app, admins, make_policy, make_item):
    items, messages = _arrivals(app, admins, make_policy, make_item, 5)
    assert deliver_message(messages[0].id) == "processed with 4 more"
    assert all(m.processed_at is not None and m.attempts == 1 for m in _topic("item.created"))
    decided = db.session.scalars(select(PolicyDecision).where(
        PolicyDecision.item_id.in_([i.id for i in items]))).all()
    assert [d.outcome for d in decided] == ["auto_approved"] * 5
    db.session.expire_all()
    assert {item.state for item in items} == {"approved"}
    # Each arrival's delivery as fan_out makes it alone: its own message, its own time.
    deliveries = db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
    assert [d.outbox_message_id for d in deliveries] == [m.id for m in messages]
    for delivery, message in zip(deliveries, messages):
        body = json.loads(delivery.body)
        assert body["event"] == "item.created"
        assert body["occurred_at"] == message.created_at.isoformat()
        assert body["data"]["item"]["id"] == message.payload["item_id"]
    # One message queues all of them (not one job per arrival).
    [due] = _topic("webhook.delivery_due")
    assert due.payload["ids"] == [d.id for d in deliveries]
    assert deliver_message(messages[3].id) == "already processed"


def test_a_message_another_job_holds_is_left_to_it_and_not_taken_into_a_batch(
        app, admins, make_policy, make_item):
    _items, messages = _arrivals(app, admins, make_policy, make_item, 3)
    with db.engine.connect() as other:  # another job, in the middle of its own batch
        other.execute(text("SELECT id FROM outbox_messages WHERE id = :id FOR UPDATE"),
                      {"id": messages[1].id})
        assert deliver_message(messages[1].id) == "held by another job"
        assert deliver_message(messages[0].id) == "processed with 1 more"
        other.rollback()
    pending = [m.id for m in _topic("item.created") if m.processed_at is None]
    assert pending == [messages[1].id]
    assert deliver_message(messages[1].id) == "processed"
