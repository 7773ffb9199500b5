"""Jobs that deliver outbox messages to their handlers."""
from __future__ import annotations

from pydoc import locate

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
    for path in HANDLERS.get(message.topic, []):
        if len(batch) > 1:
            _handler(BATCH_HANDLERS[path])(batch)
        else:
            _handler(path)(message)
    now = utcnow()
    for each in batch:
        each.processed_at = now
        each.last_error = None
    return "processed" if len(batch) == 1 else f"processed with {len(batch) - 1} more"


def _handler(path: str):
    handler = locate(path)
    if handler is None:
        raise LookupError(f"outbox handler {path} not found")
    return handler


def _pending_alike(message: OutboxMessage) -> list[OutboxMessage]:
    """Other unprocessed messages of the message's topic and tenant, oldest first, that no
    other job holds, locked for this one; none unless every handler of the topic has a batch
    form."""
    paths = HANDLERS.get(message.topic, [])
    if not paths or any(path not in BATCH_HANDLERS for path in paths):
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
