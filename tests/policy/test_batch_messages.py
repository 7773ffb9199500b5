"""A policy batch hands its side effects over as one outbox message per topic, not one per
item, and still tells everyone what one message per item told them: a real worker delivers an
item.state_changed webhook per auto-approved item to a real receiver and mails each routed
item's approver once, even when a message is delivered twice."""
from __future__ import annotations

from sqlalchemy import func, select

from app.actors import Actor
from app.extensions import db
from app.outbox.jobs import deliver_message
from app.outbox.models import OutboxMessage
from app.unit_of_work import commit
from app.webhooks import services as webhooks
from app.work.services import create_items
from tests.approvals.conftest import inbox  # noqa: F401  (fixture)
from tests.conftest import SYSTEM
from tests.webhooks.conftest import receiver, run_worker  # noqa: F401  (fixture)

AUTO = ("Small discounts", "amount <= 1000 and discount_pct <= 10", "auto_approve", "")
CHAIN = ("Large deals", "amount > 50000", "steps", "approver >= 10000\nmanager >= amount")


def _topics() -> dict[str, int]:
    db.session.expire_all()
    return dict(db.session.execute(select(OutboxMessage.topic, func.count())
                                   .group_by(OutboxMessage.topic)).all())


def test_a_batch_writes_one_message_per_topic_and_every_item_is_still_told(
        app, admins, make_policy, make_user, receiver, inbox):  # noqa: F811
    app.config.update(OUTBOX_RELAY_ON_COMMIT=True, OUTBOX_BATCH_ITEMS=25,
                      WEBHOOK_ALLOW_PRIVATE_TARGETS=True, WEBHOOK_RETRY_BASE_SECONDS=0)
    tenant, author, checker = admins
    make_user("a@example.com", [tenant], roles=("approver",), limit="20000")
    make_user("m@example.com", [tenant], roles=("manager",), limit="1000000")
    make_policy(tenant, author, checker, [AUTO, CHAIN])
    _sub, receiver.secret = webhooks.create_subscription(
        SYSTEM, tenant.id, url=receiver.url, events=["item.state_changed"])
    commit()
    receiver.start()
    rows = [{"kind": "approval", "subtype": "discount", "title": f"Deal {n}",
             "external_ref": f"B-{n}", "source_system": "crm", "counterparty": f"C {n % 9}",
             "amount": "800.00" if n % 2 else "75000.00", "details": {"discount_pct": "5"}}
            for n in range(40)]
    ids, _existing = create_items(Actor.system("tests"), tenant.id, rows)
    commit()

    run_worker(app)

    topics = _topics()
    # Two batches (25 + 15 items): one message per batch and topic, none per item.
    assert topics.get("items.state_changed") == 2 and topics.get("approval.steps_assigned") == 2
    assert "item.state_changed" not in topics and "approval.step_assigned" not in topics
    changed = [body for body in receiver.processed.values()
               if body["event"] == "item.state_changed"]
    assert receiver.bad_signatures == 0 and len(changed) == 20
    assert {body["data"]["item"]["id"] for body in changed} == set(ids[1::2])
    assert {(body["data"]["from"], body["data"]["to"]) for body in changed} == {
        ("pending", "approved")}
    requests = inbox.to("a@example.com")
    assert len(requests) == 20  # one request per routed item's first step

    # A message delivered again (a retried job) mails nobody twice.
    steps_message = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "approval.steps_assigned")).first()
    steps_message.processed_at = None
    commit()
    assert deliver_message(steps_message.id) == "processed"
    assert len(inbox.to("a@example.com")) == 20
