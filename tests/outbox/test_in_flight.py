"""The sweeps that queue work again (the outbox re-relay, the webhook retry sweep) skip what is
already queued, through a real Redis: under a backlog a second sweep adds nothing, and a job
that Redis lost is queued again."""
from __future__ import annotations

from datetime import timedelta

from rq.job import Job
from sqlalchemy import select, update

from app.extensions import db
from app.jobs import queue_of_job, queue_of_topic, redis_connection
from app.outbox.jobs import deliver_message, relay_pending
from app.outbox.models import OutboxMessage
from app.outbox.services import outbox_job_id
from app.types import utcnow
from app.unit_of_work import commit
from app.webhooks import services as webhooks
from app.webhooks.jobs import delivery_job_id, retry_due_deliveries
from app.webhooks.models import WebhookDelivery
from tests.approvals.conftest import free_port, relaying  # noqa: F401  (fixture)
from tests.conftest import SYSTEM


def _age_relays() -> None:
    """The messages were relayed long enough ago for the sweep to look at them again."""
    db.session.execute(update(OutboxMessage).values(relayed_at=utcnow() - timedelta(hours=1)))
    commit()


def test_the_outbox_sweep_does_not_queue_a_message_whose_job_is_still_queued(
        relaying, make_tenant, make_item):
    tenant = make_tenant()
    items = [make_item(tenant) for _ in range(3)]
    queue = queue_of_topic("item.created")
    assert len(queue) == len(items) == 3
    _age_relays()
    assert relay_pending() == 0
    assert relay_pending() == 0
    assert len(queue) == 3  # each message's job once, not once per sweep

    # Redis lost one job (restarted empty): that message, and only that one, is queued again.
    first = db.session.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)).first()
    Job.fetch(outbox_job_id(first), connection=redis_connection()).delete()
    assert len(queue) == 2
    _age_relays()
    assert relay_pending() == 1
    assert len(queue) == 3
    assert queue.job_ids.count(outbox_job_id(first)) == 1


def test_the_webhook_retry_sweep_does_not_queue_a_webhook_already_queued(
        relaying, make_tenant, make_item):
    relaying.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
    tenant = make_tenant()
    webhooks.create_subscription(SYSTEM, tenant.id, url=f"http://127.0.0.1:{free_port()}/h",
                                 events=["item.created"])
    commit()
    items = [make_item(tenant, kind="billing_exception") for _ in range(2)]
    for message in db.session.scalars(select(OutboxMessage).where(
            OutboxMessage.topic == "item.created")).all():
        deliver_message(message.id)  # fans out: one delivery per item
    queue = queue_of_job("app.webhooks.jobs.deliver_webhook")
    queue.empty()  # as if the after-commit hand-over had failed: the sweep's work
    deliveries = db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
    assert len(deliveries) == len(items) == 2

    # One job for the webhook: it sends both, oldest first, over one connection.
    assert retry_due_deliveries() == 1
    assert retry_due_deliveries() == 0  # still queued: nothing more
    assert retry_due_deliveries() == 0
    assert queue.job_ids == [delivery_job_id(deliveries[0].id, deliveries[0].attempts)]
