"""Jobs that deliver outbox messages to their handlers."""
from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.outbox.models import OutboxMessage
from app.outbox.services import (
    BATCH_HANDLERS,
    BATCH_MESSAGES,
    HANDLERS,
    pending_message_ids,
    relay,
)
from app.types import utcnow
from app.unit_of_work import as_unit_of_work


@as_unit_of_work
def deliver_message(message_id: int) -> str:
    """Run the handlers of one message once, and, under a backlog, of the pending messages of
    the same topic and tenant with it (see BATCH_HANDLERS). Idempotent: a processed message is
    skipped; one another job holds (in its batch) is left to it; a handler that fails leaves
    every message of the batch unprocessed and the exception lands in RQ's retry (should the
    other job fail, the relay sweep queues the message again)."""
    query = select(OutboxMessage).where(OutboxMessage.id == message_id)
    postgresql = db.session.get_bind().dialect.name == "postgresql"
    if postgresql:
        query = query.with_for_update(skip_locked=True)
    message = db.session.scalars(query).one_or_none()
    if message is None:
        if postgresql and db.session.get(OutboxMessage, message_id) is not None:
            db.session.rollback()
            return "held by another job"
        return "missing"
    if message.processed_at is not None:
        return "already processed"
    batch = [message, *_pending_alike(message)] if postgresql else [message]
    for each in batch:
        each.attempts += 1
    for handler in handlers_of(message.topic):
        if len(batch) > 1:
            BATCH_HANDLERS[handler](batch)
        else:
            handler(message)
    now = utcnow()
    for each in batch:
        each.processed_at = now
        each.last_error = None
    return "processed" if len(batch) == 1 else f"processed with {len(batch) - 1} more"


def handlers_of(topic: str) -> list:
    """The handlers registered for a topic. None is an error, not "nothing to do": a process
    that did not load the module owning them would otherwise mark the message processed
    unheard; so the delivery fails (RQ retries it, then keeps it in its failed registry) and the
    message stays unprocessed for the sweep."""
    handlers = HANDLERS.get(topic)
    if not handlers:
        raise LookupError(f"no outbox handler is registered for topic {topic!r} in this process")
    return handlers


def _pending_alike(message: OutboxMessage) -> list[OutboxMessage]:
    """Other unprocessed messages of the message's topic and tenant, oldest first, that no
    other job holds, locked for this one; none unless every handler of the topic has a batch
    form."""
    handlers = HANDLERS.get(message.topic, [])
    if not handlers or any(handler not in BATCH_HANDLERS for handler in handlers):
        return []
    tenant = (OutboxMessage.tenant_id.is_(None) if message.tenant_id is None
              else OutboxMessage.tenant_id == message.tenant_id)
    return list(db.session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.processed_at.is_(None), OutboxMessage.topic == message.topic,
               tenant, OutboxMessage.id != message.id)
        .order_by(OutboxMessage.id).limit(BATCH_MESSAGES - 1)
        .with_for_update(skip_locked=True)))


def relay_pending() -> int:
    """The sweep: relay every message the after-commit relay missed (Redis was down, a
    process died between commit and enqueue, or a job was lost with its worker)."""
    return relay(pending_message_ids())
