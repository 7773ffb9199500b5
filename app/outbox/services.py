"""Writing outbox messages in the caller's transaction, and relaying them to RQ."""
from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from app.audit.chain import jsonable
from app.extensions import db
from app.outbox.models import OutboxMessage
from app.types import utcnow

log = logging.getLogger(__name__)

# topic -> dotted paths of functions taking (message) and run by the worker, in order.
# Later capabilities (policy evaluation, mail, webhooks) add their handlers here.
HANDLERS: dict[str, list[str]] = {
    "item.created": ["app.policy.jobs.evaluate_arrival"],
    "item.state_changed": [],
    # The export job starts once the request that asked for it has committed.
    "audit.export_requested": ["app.audit.jobs.start_export"],
    # A periodic verification failed; the admins' banner reads the alert row, mail is later.
    "audit.verification_failed": [],
    # A step was given its approver: mail them (or their delegate) an email-link request.
    "approval.step_assigned": ["app.approvals.notifications.mail_step_assigned"],
    # An open item breached its SLA; telling its managers by mail comes with the SLA issue.
    "sla.breached": [],
}

_PENDING_KEY = "cleardesk_outbox_pending"
# A message relayed this long ago but still not processed is relayed again by the sweep.
RELAY_STALE_AFTER = timedelta(minutes=5)


def add_message(topic: str, payload: dict, tenant_id: int | None) -> OutboxMessage:
    """Queue a side effect in the current transaction; it leaves only if the transaction commits."""
    if topic not in HANDLERS:
        raise ValueError(f"unknown outbox topic {topic!r}")
    message = OutboxMessage(topic=topic, payload=jsonable(payload), tenant_id=tenant_id)
    db.session.add(message)
    db.session.info.setdefault(_PENDING_KEY, []).append(message)
    return message


def relay(message_ids: list[int]) -> int:
    """Enqueue a delivery job per message, with a fixed job id so a message is queued once at a
    time. A Redis outage only delays delivery: the periodic sweep relays what is left."""
    from app.jobs import enqueue

    relayed = []
    for message_id in message_ids:
        try:
            enqueue("app.outbox.jobs.deliver_message", message_id,
                    job_id=outbox_job_id(message_id))
        except Exception as exc:  # Redis down: the sweep will relay it later
            log.warning("outbox relay of %s deferred: %s", message_id, exc)
            break
        relayed.append(message_id)
    if relayed:
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(relayed))
            .values(relayed_at=utcnow())
        )
        db.session.commit()
    return len(relayed)


def outbox_job_id(message_id: int) -> str:
    """Fixed per message (a message is queued once at a time) and per queue, so deployments
    or test runs that share a Redis never take each other's jobs."""
    return f"outbox-{current_app.config['RQ_QUEUE']}-{message_id}"


def pending_message_ids(limit: int = 500) -> list[int]:
    stale = utcnow() - RELAY_STALE_AFTER
    return list(
        db.session.scalars(
            select(OutboxMessage.id)
            .where(OutboxMessage.processed_at.is_(None))
            .where(or_(OutboxMessage.relayed_at.is_(None), OutboxMessage.relayed_at < stale))
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
    )


def take_pending(session) -> list[int]:
    """Ids of the messages this session wrote; call after the commit that saved them."""
    messages = session.info.pop(_PENDING_KEY, None) or []
    return [m.id for m in messages if m.id is not None]


def forget_pending(session) -> None:
    session.info.pop(_PENDING_KEY, None)
