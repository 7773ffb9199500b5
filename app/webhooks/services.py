"""Webhook subscriptions and deliveries: subscribing, signing, fanning an outbox message out to
the subscriptions that want it, recording each attempt, pausing a subscription that keeps
failing (and telling its admins), resuming it, and redelivering."""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from app.actors import Actor, ActorType
from app.api.schemas import item_json
from app.audit.services import record_event
from app.bulk import insert_rows
from app.errors import NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import Role, Tenant, WorkItem
from app.outbox.services import add_message, register_handler
from app.types import utcnow
from app.webhooks.models import (
    DeliveryStatus,
    SubscriptionStatus,
    WebhookDelivery,
    WebhookSubscription,
)
from app.work.attachments import attachments_of

# Outbox topics a subscription can ask for; each decision is an item.state_changed.
EVENTS = {
    "item.created": "An item arrived (from the API, an import or a person)",
    "item.state_changed": "An item changed state: every decision, approval and resolution",
    "item.step_approved": "A step of a multi-step approval was approved; the next one opened",
    "item.info_requested": "An approver asked for information; answer with POST "
                           "/api/v1/items/{id}/resubmit",
}
# Outbox topics that carry many items, and the event each of their items is delivered as.
BATCH_TOPICS = {"items.created": "item.created", "items.state_changed": "item.state_changed"}
SIGNATURE_HEADER = "Cleardesk-Signature"
DELIVERY_HEADER = "Cleardesk-Delivery"
EVENT_HEADER = "Cleardesk-Event"
UNDELIVERED = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value,
               DeliveryStatus.HELD.value, DeliveryStatus.FAILED.value,
               DeliveryStatus.SENDING.value)
PAGE_SIZE = 50


# --- signing ---------------------------------------------------------------------------------

def signing_secret(subscription: WebhookSubscription) -> str:
    """The subscription's secret, derived from the app's SECRET_KEY and the stored salt: the
    HMAC needs the secret itself (a hash of it could not sign), so rather than keep it, the
    database keeps only the salt. Rotating SECRET_KEY therefore rotates every webhook secret."""
    key = current_app.config["SECRET_KEY"].encode()
    material = f"webhook:{subscription.id}:{subscription.secret_salt}".encode()
    return "whsec_" + hmac.new(key, material, hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: int, body: str) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>", as the header's v1 value."""
    return hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: str) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


# --- subscriptions ---------------------------------------------------------------------------

def _require_admin(actor: Actor, tenant_id: int) -> None:
    if actor.type is ActorType.SYSTEM:
        return
    if tenant_id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    if Role.ADMIN.value not in actor.roles_in(tenant_id):
        raise PermissionDenied("Only an admin of this tenant manages its webhooks.")


def _subscription(actor: Actor, tenant_id: int, subscription_id: int) -> WebhookSubscription:
    _require_admin(actor, tenant_id)
    sub = db.session.scalars(select(WebhookSubscription).where(
        WebhookSubscription.id == subscription_id,
        WebhookSubscription.tenant_id == tenant_id)).one_or_none()
    if sub is None:
        raise NotFound("No such webhook.")
    return sub


def check_url(url: str) -> str | None:
    """Why the URL cannot receive webhooks, or None. Production wants https. The host must be
    public: neither a local name nor an address, nor a name that resolves to one, on this
    machine or a private network (unless WEBHOOK_ALLOW_PRIVATE_TARGETS, for tests)."""
    url = (url or "").strip()
    if not url:
        return "is required"
    if len(url) > 2000:
        return "at most 2000 characters"
    parts = urlsplit(url)
    allowed = ("https",) if current_app.config.get("APP_ENV") == "production" else (
        "https", "http")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError:
        return "has a port that is not valid"
    if parts.scheme not in allowed or not parts.hostname:
        return "must be an " + " or ".join(allowed) + " URL"
    if parts.username or parts.password:
        return "must not carry a user name or password"
    if _private_targets_allowed():
        return None
    if _internal_host(parts.hostname):
        return "must be a public address, not this machine or a private network"
    try:
        addresses = resolve_host(parts.hostname, parts.port or _default_port(parts.scheme))
    except OSError:
        return None  # not resolvable now: each delivery resolves and checks it again
    private = next((a for a in addresses if not is_public_address(a)), None)
    if private is not None:
        return (f"{parts.hostname} resolves to {private}, an address on this machine or a "
                "private network; use a public address")
    return None


def _private_targets_allowed() -> bool:
    return bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE_TARGETS"))


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def resolve_host(hostname: str, port: int) -> list[str]:
    """Every address the name resolves to now (raises OSError if it does not)."""
    import socket

    infos = socket.getaddrinfo(hostname.strip("[]"), port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_public_address(address: str) -> bool:
    """A globally routable unicast address: not loopback, private, link-local (cloud
    metadata), shared (carrier NAT), reserved, documentation, multicast or unspecified; an
    IPv4 address written as IPv6 is judged as itself."""
    import ipaddress

    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def delivery_address(url: str) -> str:
    """The address a delivery to `url` connects to: resolved now (DNS may have changed since
    the webhook was saved) and checked, so the connection goes to the very address that was
    checked. Raises DeliveryRefused for a private one (unless allowed, for tests)."""
    parts = urlsplit(url)
    addresses = resolve_host(parts.hostname, parts.port or _default_port(parts.scheme))
    if not addresses:
        raise OSError(f"{parts.hostname} has no address")
    if not _private_targets_allowed():
        if _internal_host(parts.hostname):
            raise DeliveryRefused(f"refused: {parts.hostname} is not a public host")
        private = next((a for a in addresses if not is_public_address(a)), None)
        if private is not None:
            raise DeliveryRefused(f"refused: {parts.hostname} resolves to {private}, an "
                                  "address on this machine or a private network")
    return addresses[0]


class DeliveryRefused(Exception):
    """The webhook's host is (now) a private address: the attempt is not made."""


def _internal_host(hostname: str) -> bool:
    """Loopback, private, link-local (cloud metadata) addresses and local names, as written
    in the URL: a tenant admin must not make Cleardesk probe its own network. Names that
    resolve to such addresses are caught by resolving them (check_url, delivery_address)."""
    import ipaddress

    if hostname.lower() in ("localhost",) or hostname.lower().endswith((".localhost",
                                                                         ".local", ".internal")):
        return True
    try:
        ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return False
    return not is_public_address(hostname.strip("[]"))


def create_subscription(actor: Actor, tenant_id: int, *, url: str, events,
                        description: str = "") -> tuple[WebhookSubscription, str]:
    """Subscribe a URL; returns the subscription and its signing secret (shown once)."""
    _require_admin(actor, tenant_id)
    events = sorted(set(events or ()))
    errors = {}
    problem = check_url(url)
    if problem:
        errors["url"] = problem
    if not events:
        errors["events"] = "choose at least one event"
    elif set(events) - set(EVENTS):
        errors["events"] = "unknown event"
    if len(description or "") > 200:
        errors["description"] = "at most 200 characters"
    if errors:
        raise ValidationFailed("The webhook is not valid.", errors)
    sub = WebhookSubscription(tenant_id=tenant_id, url=url.strip(), events=events,
                              description=(description or "").strip(),
                              secret_salt=secrets.token_hex(16), created_by_id=actor.user_id)
    db.session.add(sub)
    db.session.flush()
    record_event(actor, "webhook.subscribed", tenant_id=tenant_id,
                 data={"subscription_id": sub.id, "url": sub.url, "events": events})
    return sub, signing_secret(sub)


def tenant_subscriptions(actor: Actor, tenant_id: int) -> list[WebhookSubscription]:
    _require_admin(actor, tenant_id)
    return list(db.session.scalars(select(WebhookSubscription)
                                   .where(WebhookSubscription.tenant_id == tenant_id)
                                   .order_by(WebhookSubscription.id)))


def delivery_counts(subscription_ids: list[int]) -> dict[int, dict[str, int]]:
    rows = db.session.execute(
        select(WebhookDelivery.subscription_id, WebhookDelivery.status, func.count())
        .where(WebhookDelivery.subscription_id.in_(subscription_ids))
        .group_by(WebhookDelivery.subscription_id, WebhookDelivery.status)).all()
    out: dict[int, dict[str, int]] = {}
    for sub_id, status, count in rows:
        out.setdefault(sub_id, {})[status] = count
    return out


def subscription_log(actor: Actor, tenant_id: int, subscription_id: int,
                     before: int | None = None) -> dict:
    sub = _subscription(actor, tenant_id, subscription_id)
    query = (select(WebhookDelivery).where(WebhookDelivery.subscription_id == sub.id)
             .order_by(WebhookDelivery.id.desc()).limit(PAGE_SIZE + 1))
    if before:
        query = query.where(WebhookDelivery.id < before)
    rows = list(db.session.scalars(query))
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return {"subscription": sub, "deliveries": rows,
            "next_before": rows[-1].id if more and rows else None}


def paused_subscriptions(actor: Actor) -> list[WebhookSubscription]:
    """Paused webhooks of the tenants the actor administers (for the admins' banner)."""
    tenant_ids = [t for t in actor.tenant_ids() if Role.ADMIN.value in actor.roles_in(t)]
    if not tenant_ids:
        return []
    return list(db.session.scalars(select(WebhookSubscription).where(
        WebhookSubscription.tenant_id.in_(tenant_ids),
        WebhookSubscription.status == SubscriptionStatus.PAUSED.value)))


def pause_subscription(actor: Actor, sub: WebhookSubscription, reason: str) -> None:
    """Stop attempts; deliveries wait as `held` and nothing new is lost while paused."""
    if sub.status == SubscriptionStatus.PAUSED.value:
        return
    sub.status = SubscriptionStatus.PAUSED.value
    sub.paused_at = utcnow()
    sub.paused_reason = reason[:300]
    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == sub.id,
               WebhookDelivery.status.in_((DeliveryStatus.PENDING.value,
                                           DeliveryStatus.RETRYING.value)))
        .values(status=DeliveryStatus.HELD.value, next_attempt_at=None)
        .execution_options(synchronize_session=False))
    db.session.flush()
    record_event(actor, "webhook.paused", tenant_id=sub.tenant_id,
                 data={"subscription_id": sub.id, "url": sub.url, "reason": sub.paused_reason})


def pause_by_admin(actor: Actor, tenant_id: int, subscription_id: int) -> WebhookSubscription:
    sub = _subscription(actor, tenant_id, subscription_id)
    pause_subscription(actor, sub, "Paused by an admin.")
    return sub


def resume_subscription(actor: Actor, tenant_id: int, subscription_id: int
                        ) -> WebhookSubscription:
    """Resume, and send every delivery that has not succeeded yet (held, retrying, failed),
    with its own delivery id, oldest first."""
    sub = _subscription(actor, tenant_id, subscription_id)
    was = sub.status
    sub.status = SubscriptionStatus.ACTIVE.value
    sub.consecutive_failures = 0
    sub.paused_at = None
    sub.paused_reason = None
    ids = list(db.session.scalars(
        select(WebhookDelivery.id).where(
            WebhookDelivery.subscription_id == sub.id,
            WebhookDelivery.status.in_((DeliveryStatus.HELD.value, DeliveryStatus.RETRYING.value,
                                        DeliveryStatus.FAILED.value)))
        .order_by(WebhookDelivery.id)))
    _make_due(ids)
    record_event(actor, "webhook.resumed", tenant_id=sub.tenant_id,
                 data={"subscription_id": sub.id, "was": was, "requeued": len(ids)})
    return sub


def redeliver(actor: Actor, tenant_id: int, delivery_pk: int) -> WebhookDelivery:
    """Send a delivery again, with the same delivery id and body (receivers de-duplicate)."""
    _require_admin(actor, tenant_id)
    delivery = db.session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_pk, WebhookDelivery.tenant_id == tenant_id)
    ).one_or_none()
    if delivery is None:
        raise NotFound("No such delivery.")
    if delivery.subscription.status == SubscriptionStatus.PAUSED.value:
        raise ValidationFailed("Resume the webhook first; its deliveries are held.", {})
    _make_due([delivery.id])
    record_event(actor, "webhook.redelivered", tenant_id=tenant_id,
                 data={"delivery_id": delivery.delivery_id,
                       "subscription_id": delivery.subscription_id})
    return delivery


def _make_due(delivery_pks: list[int]) -> None:
    if not delivery_pks:
        return
    db.session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_pks))
        .values(status=DeliveryStatus.PENDING.value, next_attempt_at=None)
        .execution_options(synchronize_session=False))
    for chunk in range(0, len(delivery_pks), 500):
        add_message("webhook.delivery_due", {"ids": delivery_pks[chunk:chunk + 500]}, None)


# --- fanning out (an outbox handler) ---------------------------------------------------------

def fan_out(message) -> None:
    """Outbox handler of item.created, item.state_changed, item.step_approved and the batches
    items.created and items.state_changed: one delivery per subscription of the tenant that
    wants the event and per item (a batch is delivered as one event per item).
    Idempotent (unique per subscription, message and item), so a retried outbox job makes no
    second delivery. The deliveries are inserted together and queued in chunks."""
    _queue_due(_deliveries_of(message))


def fan_out_together(messages: list) -> None:
    """Batch form of fan_out (several messages taken together under a backlog): each
    message's deliveries exactly as fan_out makes them, queued by one message for all."""
    due: list[int] = []
    for message in messages:
        due.extend(_deliveries_of(message))
    _queue_due(due)


def _queue_due(due: list[int]) -> None:
    for start in range(0, len(due), 500):
        add_message("webhook.delivery_due", {"ids": due[start:start + 500]}, None)


def _deliveries_of(message) -> list[int]:
    """Insert the message's deliveries (those not made yet); the ids of those due now."""
    if message.tenant_id is None:
        return []
    event = BATCH_TOPICS.get(message.topic, message.topic)
    subs = [s for s in db.session.scalars(select(WebhookSubscription).where(
        WebhookSubscription.tenant_id == message.tenant_id)) if event in s.events]
    if not subs:
        return []
    payload = message.payload or {}
    if "changes" in payload:  # items.state_changed: each part has its own states
        parts = [(change.get("item_id"), {k: v for k, v in change.items() if k != "item_id"})
                 for change in payload["changes"]]
    elif message.topic in BATCH_TOPICS:
        parts = [(item_id, {}) for item_id in payload.get("item_ids") or []]
    else:
        parts = [(payload.get("item_id"), {k: v for k, v in payload.items() if k != "item_id"})]
    item_ids = [item_id for item_id, _extra in parts]

    items = {item.id: item for item in db.session.scalars(
        select(WorkItem).where(WorkItem.id.in_([i for i in item_ids if i is not None]))
        .options(selectinload(WorkItem.steps)))}

    files = attachments_of(list(items))
    shown = {item_id: item_json(item, files[item_id]) for item_id, item in items.items()}
    done = set(db.session.execute(select(WebhookDelivery.subscription_id, WebhookDelivery.part)
                                  .where(WebhookDelivery.outbox_message_id == message.id)).all())
    tenant = db.session.get(Tenant, message.tenant_id)
    occurred_at = message.created_at.isoformat()
    now = utcnow()
    rows = []
    for sub in subs:
        paused = sub.status == SubscriptionStatus.PAUSED.value
        for part, (item_id, extra) in enumerate(parts):
            if (sub.id, part) in done:
                continue
            data = dict(extra)
            if item_id in shown:
                data["item"] = shown[item_id]
            delivery_id = str(uuid.uuid4())
            body = json.dumps({"delivery_id": delivery_id, "event": event,
                               "occurred_at": occurred_at, "tenant": tenant.slug,
                               "data": data}, sort_keys=True)
            rows.append({"delivery_id": delivery_id, "subscription_id": sub.id,
                         "tenant_id": sub.tenant_id, "outbox_message_id": message.id,
                         "part": part, "event": event, "body": body, "attempts": 0,
                         "created_at": now,
                         "status": (DeliveryStatus.HELD.value if paused
                                    else DeliveryStatus.PENDING.value)})
    ids = insert_rows(WebhookDelivery.__table__, rows, with_ids=True)
    return [pk for row, pk in zip(rows, ids) if row["status"] == DeliveryStatus.PENDING.value]


# --- attempts (called by the delivery job) ---------------------------------------------------

def backoff(attempts: int) -> timedelta:
    """Exponential: base, 2x, 4x ... after each failed attempt, capped at six hours."""
    base = float(current_app.config.get("WEBHOOK_RETRY_BASE_SECONDS", 30))
    return timedelta(seconds=min(base * 2 ** max(0, attempts - 1), 6 * 3600))


def claim_attempt(delivery_pk: int) -> bool:
    """Mark a due delivery as being sent (one process wins); True if this one may send."""
    now = utcnow()
    result = db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_pk,
               WebhookDelivery.status.in_((DeliveryStatus.PENDING.value,
                                           DeliveryStatus.RETRYING.value)),
               (WebhookDelivery.next_attempt_at.is_(None))
               | (WebhookDelivery.next_attempt_at <= now))
        .values(status=DeliveryStatus.SENDING.value, last_attempt_at=now,
                attempts=WebhookDelivery.attempts + 1)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def record_attempt(delivery: WebhookDelivery, status_code: int | None,
                   error: str | None) -> None:
    """Write what the attempt gave: success, a retry later, or failure; count the
    subscription's consecutive failures and pause it when they pass the threshold."""
    sub = delivery.subscription
    now = utcnow()
    delivery.last_status_code = status_code
    if status_code is not None and 200 <= status_code < 300:
        delivery.status = DeliveryStatus.SUCCEEDED.value
        delivery.delivered_at = now
        delivery.last_error = None
        delivery.next_attempt_at = None
        sub.consecutive_failures = 0
        return
    delivery.last_error = (error or f"HTTP {status_code}")[:500]
    sub.consecutive_failures += 1
    if delivery.attempts >= int(current_app.config.get("WEBHOOK_MAX_ATTEMPTS", 8)):
        delivery.status = DeliveryStatus.FAILED.value
        delivery.next_attempt_at = None
    else:
        delivery.status = DeliveryStatus.RETRYING.value
        delivery.next_attempt_at = now + backoff(delivery.attempts)
    limit = int(current_app.config.get("WEBHOOK_PAUSE_AFTER", 10))
    if sub.consecutive_failures >= limit and sub.status == SubscriptionStatus.ACTIVE.value:
        db.session.flush()
        pause_subscription(Actor.system("webhooks"), sub,
                           f"Paused after {sub.consecutive_failures} failed deliveries in a "
                           f"row (last: {delivery.last_error}).")
        add_message("webhook.paused", {"subscription_id": sub.id}, sub.tenant_id)


def _due(now, subscription_id: int | None = None) -> list:
    """The conditions of a delivery whose attempt is due (of one subscription, or of any), after
    handing back attempts that never reported back (the worker died mid-send)."""
    one = ((WebhookDelivery.subscription_id == subscription_id,) if subscription_id is not None
           else ())
    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.status == DeliveryStatus.SENDING.value,
               WebhookDelivery.last_attempt_at < now - timedelta(minutes=5), *one)
        .values(status=DeliveryStatus.RETRYING.value, next_attempt_at=now)
        .execution_options(synchronize_session=False))
    return [WebhookDelivery.status.in_((DeliveryStatus.PENDING.value,
                                        DeliveryStatus.RETRYING.value)),
            (WebhookDelivery.next_attempt_at.is_(None)) | (WebhookDelivery.next_attempt_at <= now),
            *one]


def due_delivery_ids(subscription_id: int, limit: int) -> list[int]:
    """The due deliveries of one subscription, oldest first: what a delivery job's batch
    sends."""
    return list(db.session.scalars(
        select(WebhookDelivery.id).where(*_due(utcnow(), subscription_id))
        .order_by(WebhookDelivery.id).limit(limit)))


def oldest_due_per_subscription() -> list[int]:
    """The oldest due delivery of each subscription that has one: what the periodic sweep
    queues a job for (each job then sends its subscription's backlog)."""
    return list(db.session.scalars(
        select(func.min(WebhookDelivery.id)).where(*_due(utcnow()))
        .group_by(WebhookDelivery.subscription_id)))


# Source systems hear of new items, decisions, approved steps and questions to requesters.
register_handler(fan_out, "item.created", "item.state_changed", "item.info_requested",
                 "item.step_approved", "items.created", "items.state_changed",
                 batch=fan_out_together)
