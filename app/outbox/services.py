"""Writing outbox messages in the caller's transaction, and relaying them to RQ."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from app.bulk import insert_rows
from app.extensions import db
from app.jobs import DEFAULT_RETRY, in_flight, queue_of_topic
from app.outbox.models import OutboxMessage
from app.types import jsonable
from app.types import utcnow
from app.unit_of_work import register_relay, unit_of_work

log = logging.getLogger(__name__)

# topic -> the functions taking (message) that the worker runs for it, in order, and, under a
# backlog, the batch form of each (below). The modules that own them register them
# (`register_handler`), so the outbox, below every feature, imports none of them; create_app
# loads those modules, so every process that builds the app (web, `flask worker`, tests) has the
# whole table.
HANDLERS: dict[str, list[Callable]] = {}

# Under a backlog one delivery job takes up to BATCH_MESSAGES pending messages of its topic and
# tenant together (PostgreSQL, skipping those another job holds; their own jobs then find them
# processed): a handler registered with a batch form (one that takes the list of messages and
# does for all of them at once what the handler does for each: one policy batch for many
# arrivals, one queueing of webhook deliveries) is run so. Only topics whose every handler has
# such a form are taken together.
BATCH_HANDLERS: dict[Callable, Callable] = {}
BATCH_MESSAGES = 200
RELAY_CHUNK = 500
# A message relayed this long ago but still not processed is relayed again by the sweep, unless
# its job is still in flight: a Redis that came back empty is caught up by the next sweep, and
# a backlog is not queued twice (the skipped ones count as relayed now, so the sweep moves on
# to the next of them).
RELAY_STALE_AFTER = timedelta(seconds=20)


def register_handler(handler: Callable, *topics: str, batch: Callable | None = None,
                     first: bool = False) -> Callable:
    """Have the worker run `handler` for each message of `topics` (and `batch` for several of
    them taken together). Handlers that only tell of a change run in the order they were
    registered; one that changes the item itself (the policy deciding an arrival) is registered
    `first`, so that those telling of the item see it decided. Registering again changes
    nothing (a module imported twice)."""
    for topic in topics:
        handlers = HANDLERS.setdefault(topic, [])
        if handler in handlers:
            continue
        if first:
            handlers.insert(0, handler)
        else:
            handlers.append(handler)
    if batch is not None:
        BATCH_HANDLERS[handler] = batch
    return handler


def _require_handler(topic: str) -> None:
    if topic not in HANDLERS:
        raise ValueError(f"unknown outbox topic {topic!r}: no handler is registered for it")


def add_message(topic: str, payload: dict, tenant_id: int | None) -> OutboxMessage:
    """Queue a side effect in the current transaction; it leaves only if the transaction commits."""
    _require_handler(topic)
    message = OutboxMessage(topic=topic, payload=jsonable(payload), tenant_id=tenant_id)
    db.session.add(message)
    unit_of_work().add_outbox(message)
    return message


def add_messages(topic: str, payloads: list[dict], tenant_id: int | None) -> list[int]:
    """add_message for a batch (a worker deciding many items): one INSERT for all, and only
    their ids kept for the relay after commit."""
    _require_handler(topic)
    if not payloads:
        return []
    now = utcnow()
    ids = insert_rows(OutboxMessage.__table__,
                      [{"topic": topic, "payload": jsonable(p), "tenant_id": tenant_id,
                        "created_at": now, "attempts": 0} for p in payloads], with_ids=True)
    unit_of_work().add_outbox(*[(message_id, topic) for message_id in ids])
    return ids


def relay(messages: list) -> int:
    """Enqueue a delivery job per message on its topic's queue, with a fixed job id; a message
    whose job is still in flight (queued, running, scheduled for a retry) is not queued again
    (RQ would run it twice), only marked relayed. A Redis outage only delays delivery: the
    periodic sweep relays what is left. Returns how many jobs were queued.

    `messages` are ids (the sweep: their topics are read here) or (id, topic) pairs (a unit of
    work that has just committed them knows their topics)."""
    known = dict(m for m in messages if isinstance(m, tuple))
    message_ids = [m[0] if isinstance(m, tuple) else m for m in messages]
    from rq import Queue

    relayed: list[int] = []
    queued = 0
    # In pipelined chunks: a worker deciding a thousand items hands a thousand messages over
    # in a few round trips, not a thousand.
    for start in range(0, len(message_ids), RELAY_CHUNK):
        chunk = message_ids[start:start + RELAY_CHUNK]
        topics = {message_id: known[message_id] for message_id in chunk if message_id in known}
        if len(topics) < len(chunk):
            topics.update(db.session.execute(
                select(OutboxMessage.id, OutboxMessage.topic)
                .where(OutboxMessage.id.in_([i for i in chunk if i not in topics]))).all())
        try:
            busy = in_flight([outbox_job_id(message_id) for message_id in chunk])
            by_topic: dict[str, list[int]] = {}
            for message_id in chunk:
                if message_id in topics and outbox_job_id(message_id) not in busy:
                    by_topic.setdefault(topics[message_id], []).append(message_id)
            for topic, ids in by_topic.items():
                queue_of_topic(topic).enqueue_many([
                    Queue.prepare_data("app.outbox.jobs.deliver_message", (message_id,),
                                       job_id=outbox_job_id(message_id), retry=DEFAULT_RETRY)
                    for message_id in ids])
                queued += len(ids)
        except Exception as exc:  # Redis down: the sweep will relay them later
            log.warning("outbox relay of %s deferred: %s", chunk[0], exc)
            break
        relayed.extend(chunk)
    if relayed:
        db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(relayed))
            .values(relayed_at=utcnow())
        )
        db.session.commit()
    return queued


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


register_relay(relay)
