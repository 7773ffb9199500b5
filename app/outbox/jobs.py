"""Jobs that deliver outbox messages to their handlers."""
from __future__ import annotations

from pydoc import locate

from sqlalchemy import select

from app.extensions import db
from app.outbox.models import OutboxMessage
from app.outbox.services import HANDLERS, pending_message_ids, relay
from app.types import utcnow
from app.unit_of_work import as_unit_of_work


@as_unit_of_work
def deliver_message(message_id: int) -> str:
    """Run the handlers of one message once. Idempotent: a processed message is skipped; a
    handler that fails leaves the message unprocessed and the exception lands in RQ's retry."""
    query = select(OutboxMessage).where(OutboxMessage.id == message_id)
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    message = db.session.scalars(query).one_or_none()
    if message is None:
        return "missing"
    if message.processed_at is not None:
        return "already processed"
    message.attempts += 1
    for path in HANDLERS.get(message.topic, []):
        handler = locate(path)
        if handler is None:
            raise LookupError(f"outbox handler {path} not found")
        handler(message)
    message.processed_at = utcnow()
    message.last_error = None
    return "processed"


def relay_pending() -> int:
    """The sweep: relay every message the after-commit relay missed (Redis was down, a
    process died between commit and enqueue, or a job was lost with its worker)."""
    return relay(pending_message_ids())
