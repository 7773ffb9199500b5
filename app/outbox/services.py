"""Writing outbox messages in the caller's transaction, and relaying them to RQ."""
from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from app.types import jsonable
from app.extensions import db
from app.outbox.models import OutboxMessage
from app.types import utcnow
from app.unit_of_work import register_relay, unit_of_work

log = logging.getLogger(__name__)

# topic -> dotted paths of functions taking (message) and run by the worker, in order.
# Later capabilities (policy evaluation, mail, webhooks) add their handlers here.
HANDLERS: dict[str, list[str]] = {
    # The policy engine decides or routes a new approval; source systems hear of it.
    "item.created": ["app.policy.jobs.evaluate_arrival", "app.webhooks.services.fan_out"],
    # Source systems hear of every decision; an approval's requester is told its outcome.
    "item.state_changed": ["app.webhooks.services.fan_out",
                           "app.requests.notifications.mail_requester_outcome"],
    # A comment mentioned members: each is mailed it.
    "item.mentioned": ["app.requests.notifications.mail_mentioned"],
    # An approver asked for information: the requester is mailed the question, and a source
    # system hears it (it answers with POST /api/v1/items/{id}/resubmit).
    "item.info_requested": ["app.requests.notifications.mail_info_requested",
                            "app.webhooks.services.fan_out"],
    # A step of a multi-step approval was approved (the item stays pending): source systems.
    "item.step_approved": ["app.webhooks.services.fan_out"],
    # Many items created at once (an import): {"item_ids": [...]}, evaluated and fanned out
    # as a batch; subscribers still get one item.created event per item.
    "items.created": ["app.policy.jobs.evaluate_arrivals", "app.webhooks.services.fan_out"],
    # The policy decided many items at once: {"changes": [{"item_id", "from", "to", "action"}]},
    # fanned out as one item.state_changed event per item.
    "items.state_changed": ["app.webhooks.services.fan_out",
                            "app.requests.notifications.mail_requester_outcome"],
    # The export job starts once the request that asked for it has committed.
    "audit.export_requested": ["app.audit.jobs.start_export"],
    # A periodic verification failed: the admins' banner reads the alert row; mail them too.
    "audit.verification_failed": ["app.audit.notifications.mail_verification_failed"],
    # A step was given its approver: mail them (or their delegate) an email-link request.
    "approval.step_assigned": ["app.approvals.notifications.mail_step_assigned"],
    # The policy gave many first steps their approvers at once: one request mail per step.
    "approval.steps_assigned": ["app.approvals.notifications.mail_steps_assigned"],
    # An open item breached its SLA (it has been escalated): mail its tenant's managers.
    # (No longer written: the SLA digest replaces it; kept for messages already queued.)
    "sla.breached": ["app.sla.notifications.mail_sla_breached"],
    # An open item turned at risk: mail its tenant's managers. (Likewise replaced.)
    "sla.at_risk": ["app.sla.notifications.mail_sla_at_risk"],
    # An SLA sweep escalated items: one digest mail per manager of the tenants concerned.
    "sla.digest": ["app.sla.notifications.mail_sla_digest"],
    # Webhook deliveries committed and due now: queue their attempts.
    "webhook.delivery_due": ["app.webhooks.jobs.enqueue_due"],
    # A webhook was paused after repeated failures: mail the tenant's admins.
    "webhook.paused": ["app.webhooks.jobs.mail_admins_paused"],
    # A CSV import was confirmed: run it once that is committed.
    "import.requested": ["app.imports.jobs.start_import"],
    # An invitation or a password reset: the worker issues the single-use link and mails it.
    "account.password_link": ["app.admin.notifications.mail_password_link"],
    # A tenant's business calendar changed: its open items' due times follow.
    "tenant.calendar_changed": ["app.admin.jobs.move_due_times"],
    # Exceptions and disputes were given to people by someone else or by the policy, in one
    # unit of work: one "assigned to you" mail per assignee, listing their items.
    "work.assigned": ["app.exceptions.notifications.mail_assignment_notices"],
}

# Under a backlog one delivery job takes up to BATCH_MESSAGES pending messages of its topic and
# tenant together (PostgreSQL, skipping those another job holds; their own jobs then find them
# processed): each handler named here has a form that takes the list of messages and does for
# all of them at once what it does for each (one policy batch for many arrivals, one queueing
# of webhook deliveries). Only topics whose every handler has such a form are taken together.
BATCH_HANDLERS: dict[str, str] = {
    "app.policy.jobs.evaluate_arrival": "app.policy.jobs.evaluate_arrivals_together",
    "app.webhooks.services.fan_out": "app.webhooks.services.fan_out_together",
    "app.webhooks.jobs.enqueue_due": "app.webhooks.jobs.enqueue_due_together",
}
BATCH_MESSAGES = 200
RELAY_CHUNK = 500
# A message relayed this long ago but still not processed is relayed again by the sweep, unless
# its job is still in flight: a Redis that came back empty is caught up by the next sweep, and
# a backlog is not queued twice (the skipped ones count as relayed now, so the sweep moves on
# to the next of them).
RELAY_STALE_AFTER = timedelta(seconds=20)


def add_message(topic: str, payload: dict, tenant_id: int | None) -> OutboxMessage:
    """Queue a side effect in the current transaction; it leaves only if the transaction commits."""
    if topic not in HANDLERS:
        raise ValueError(f"unknown outbox topic {topic!r}")
    message = OutboxMessage(topic=topic, payload=jsonable(payload), tenant_id=tenant_id)
    db.session.add(message)
    unit_of_work().add_outbox(message)
    return message


def add_messages(topic: str, payloads: list[dict], tenant_id: int | None) -> list[int]:
    """add_message for a batch (a worker deciding many items): one INSERT for all, and only
    their ids kept for the relay after commit."""
    from app.bulk import insert_rows

    if topic not in HANDLERS:
        raise ValueError(f"unknown outbox topic {topic!r}")
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

    from app.jobs import DEFAULT_RETRY, in_flight, queue_of_topic

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
