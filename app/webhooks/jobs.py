"""Jobs that send webhook deliveries: one attempt per job (signed, with a short timeout), the
outbox handler that queues due deliveries, the periodic sweep of due retries, and the mail
that tells a tenant's admins a webhook was paused."""
from __future__ import annotations

import http.client
import logging
import socket
import time
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import func, select

from app.auth.services import people_with_role
from app.extensions import db
from app.jobs import in_flight, queue_of_job
from app.mail.models import SentMail
from app.mail.sending import send_mail
from app.models import Role, Tenant
from app.outbox.services import register_handler
from app.types import utcnow
from app.unit_of_work import commit
from app.webhooks import services
from app.webhooks.models import DeliveryStatus, SubscriptionStatus, WebhookDelivery, \
    WebhookSubscription

log = logging.getLogger(__name__)
USER_AGENT = "Cleardesk-Webhooks/1"


def delivery_job_id(delivery_pk: int, attempts: int) -> str:
    """One job per delivery and attempt, so queueing the same attempt twice is harmless."""
    return f"webhook-{current_app.config['RQ_QUEUE']}-{delivery_pk}-{attempts}"


def enqueue_delivery(delivery: WebhookDelivery, delay_seconds: float = 0) -> None:
    from datetime import timedelta

    queue = queue_of_job("app.webhooks.jobs.deliver_webhook")
    job_id = delivery_job_id(delivery.id, delivery.attempts)
    if delay_seconds >= 1:
        # Runs on a worker started --with-scheduler; the sweep catches it up otherwise.
        queue.enqueue_in(timedelta(seconds=delay_seconds), "app.webhooks.jobs.deliver_webhook",
                         delivery.id, job_id=job_id)
    else:
        queue.enqueue("app.webhooks.jobs.deliver_webhook", delivery.id, job_id=job_id)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked (not a second lookup of the name, which a
    rebinding DNS could answer differently); the Host header still names the host."""

    def __init__(self, host, port, address, **kwargs):
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As above, with TLS verified against the host name (SNI and certificate)."""

    def __init__(self, host, port, address, **kwargs):
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


# A connection the receiver closed while idle fails its next request before any answer; only
# then is the request sent again, on a new connection.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _Sender:
    """POSTs to one subscription's URL over one kept-alive connection, without following
    redirects (a redirect is an answer, not a delivery), to the address
    services.delivery_address resolved and checked when the connection was opened."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.url: str | None = None
        self.conn: http.client.HTTPConnection | None = None

    def _open(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        address = services.delivery_address(url)
        connection_class = (_PinnedHTTPSConnection if parts.scheme == "https"
                            else _PinnedHTTPConnection)
        self.url = url
        self.conn = connection_class(parts.hostname, parts.port, address, timeout=self.timeout)
        return self.conn

    def post(self, url: str, body: str, headers: dict) -> int:
        reused = self.conn is not None and self.url == url
        if not reused:
            self.close()
            self._open(url)
        try:
            return self._request(url, body, headers)
        except _STALE_CONNECTION:
            self.close()
            if not reused:
                raise
            self._open(url)
            return self._request(url, body, headers)
        except BaseException:
            self.close()
            raise

    def _request(self, url: str, body: str, headers: dict) -> int:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.conn.request("POST", path, body=body.encode(), headers=headers)
        response = self.conn.getresponse()
        response.read(64 * 1024)
        if not response.isclosed():  # more than we read, or the receiver closes: start anew
            self.close()
        return response.status

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = self.url = None


def deliver_webhook(delivery_pk: int) -> str:
    """Send this delivery, then the other due deliveries of its subscription, oldest first, over
    the same connection: a backlog for one receiver goes out as a batch in one job, up to
    WEBHOOK_BATCH_SIZE attempts or WEBHOOK_BATCH_SECONDS (then a job for the rest is queued).
    Each attempt is claimed and committed before it is sent and recorded after, as alone.
    A receiver that is down or answers non-2xx is an expected outcome: it is written to the
    delivery log and retried later with exponential backoff, not raised. Anything unexpected
    escapes into RQ's failed registry; the sweep retries the delivery."""
    config = current_app.config
    sender = _Sender(float(config.get("WEBHOOK_TIMEOUT_SECONDS", 10)))
    limit = int(config.get("WEBHOOK_BATCH_SIZE", 200))
    until = time.monotonic() + float(config.get("WEBHOOK_BATCH_SECONDS", 30))
    subscription_id = db.session.scalar(select(WebhookDelivery.subscription_id).where(
        WebhookDelivery.id == delivery_pk))
    outcome = "not due"
    try:
        if subscription_id is None:
            return outcome
        outcome = _attempt(delivery_pk, sender)
        sent = 1
        while sent < limit and time.monotonic() < until:
            candidates = services.due_delivery_ids(subscription_id, limit=5)
            if not candidates:
                break
            for pk in candidates:  # another job may be sending the first of them
                if _attempt(pk, sender) != "not due":
                    sent += 1
                    break
            else:
                break
        else:
            _queue_rest(subscription_id)
    finally:
        sender.close()
        db.session.rollback()
    return outcome


def _attempt(delivery_pk: int, sender: _Sender) -> str:
    """One attempt of one delivery: claimed (committed, so no other worker sends it), sent,
    recorded (committed). Returns its status, or "not due"."""
    if not services.claim_attempt(delivery_pk):
        db.session.rollback()
        return "not due"
    commit()  # the claim: no other worker sends this attempt
    delivery = db.session.get(WebhookDelivery, delivery_pk)
    sub = delivery.subscription
    if sub.status == SubscriptionStatus.PAUSED.value:
        delivery.status = DeliveryStatus.HELD.value
        delivery.attempts -= 1
        commit()
        return "held"
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        services.DELIVERY_HEADER: delivery.delivery_id,
        services.EVENT_HEADER: delivery.event,
        services.SIGNATURE_HEADER: services.signature_header(
            services.signing_secret(sub), timestamp, delivery.body),
    }
    status_code, error = None, None
    try:
        status_code = sender.post(sub.url, delivery.body, headers)
    except services.DeliveryRefused as refused:  # written to the log; retried (DNS changes)
        error = str(refused)
    except (OSError, http.client.HTTPException) as exc:
        error = f"{exc.__class__.__name__}: {exc}"
    services.record_attempt(delivery, status_code, error)
    retry_in = None
    if delivery.status == DeliveryStatus.RETRYING.value and delivery.next_attempt_at:
        # From now, not from the claim: a slow receiver does not turn "retry at once" into a
        # scheduled retry.
        retry_in = max(0.0, (delivery.next_attempt_at - utcnow()).total_seconds())
    status = delivery.status
    commit()
    if retry_in is not None:
        try:
            enqueue_delivery(delivery, retry_in)
        except Exception as exc:  # noqa: BLE001 - Redis down: the sweep retries it
            log.warning("webhook retry of %s left to the sweep: %s", delivery_pk, exc)
    return status


def _queue_rest(subscription_id: int) -> None:
    """The batch ran out of its budget: queue one job for the subscription's remaining due
    deliveries (nothing if none is due, or its job is already queued)."""
    rest = services.due_delivery_ids(subscription_id, limit=1)
    commit()
    _enqueue_batches(rest)


def _first_due_per_subscription(ids: list[int]) -> list[int]:
    """The oldest of these deliveries for each subscription."""
    if not ids:
        return []
    return list(db.session.scalars(
        select(func.min(WebhookDelivery.id)).where(WebhookDelivery.id.in_(ids))
        .group_by(WebhookDelivery.subscription_id)))


def _enqueue_batches(firsts: list[int]) -> int:
    """One delivery job per subscription (it drains the subscription's backlog), keyed on the
    subscription's oldest due delivery and its attempt; skips those already in flight. Returns
    how many jobs it queued."""
    from rq import Queue

    if not firsts:
        return 0
    attempts = dict(db.session.execute(select(WebhookDelivery.id, WebhookDelivery.attempts).where(
        WebhookDelivery.id.in_(firsts))).all())
    jobs = [(pk, delivery_job_id(pk, attempts.get(pk, 0))) for pk in sorted(firsts)]
    busy = in_flight([job_id for _, job_id in jobs])
    jobs = [(pk, job_id) for pk, job_id in jobs if job_id not in busy]
    for start in range(0, len(jobs), 500):
        queue_of_job("app.webhooks.jobs.deliver_webhook").enqueue_many([
            Queue.prepare_data("app.webhooks.jobs.deliver_webhook", (pk,), job_id=job_id)
            for pk, job_id in jobs[start:start + 500]])
    return len(jobs)


def enqueue_due(message) -> None:
    """Outbox handler of webhook.delivery_due: queue the deliveries now committed, one job per
    subscription (handed to Redis in one pipeline)."""
    ids = (message.payload or {}).get("ids", [])
    _enqueue_batches(_first_due_per_subscription(ids))


def enqueue_due_together(messages: list) -> None:
    """Batch form of enqueue_due: the deliveries of several messages, queued at once."""
    ids = [pk for message in messages for pk in (message.payload or {}).get("ids", [])]
    firsts: set[int] = set()
    for start in range(0, len(ids), 5000):  # bound the statement's parameters
        firsts.update(_first_due_per_subscription(ids[start:start + 5000]))
    _enqueue_batches(_first_due_per_subscription(sorted(firsts)))


def retry_due_deliveries() -> int:
    """Periodic: queue a job for every subscription with a delivery whose next attempt is due
    (or whose worker died), except those whose job is already queued, running or scheduled:
    under a backlog the sweep adds nothing to the queue. Returns how many jobs it queued."""
    firsts = services.oldest_due_per_subscription()
    commit()
    return _enqueue_batches(firsts)


def mail_admins_paused(message) -> None:
    """Outbox handler of webhook.paused: mail each admin of the tenant, once per pause."""
    sub = db.session.get(WebhookSubscription, (message.payload or {}).get("subscription_id"))
    if sub is None or sub.status != SubscriptionStatus.PAUSED.value:
        return
    tenant = db.session.get(Tenant, sub.tenant_id)
    admins = people_with_role(Role.ADMIN.value, sub.tenant_id)
    base = current_app.config["APP_BASE_URL"].rstrip("/")
    link = f"{base}/admin/integrations/webhooks/{sub.id}?tenant={sub.tenant_id}"
    text = (f"The webhook to {sub.url} was paused: {sub.paused_reason}\n\n"
            "Its deliveries are kept and will be sent, each with its own delivery id, when "
            f"you resume it:\n{link}\n")
    html = (f"<p>The webhook to <code>{_escape(sub.url)}</code> was paused: "
            f"{_escape(sub.paused_reason or '')}</p><p>Its deliveries are kept and will be "
            f"sent when you resume it: <a href=\"{_escape(link)}\">the delivery log</a>.</p>")
    stamp = int(sub.paused_at.timestamp()) if sub.paused_at else 0
    for admin in admins:
        key = f"webhook-paused-{sub.id}-{stamp}-{admin.id}"
        if db.session.scalar(select(_sent_mail_id()).where(_sent_mail_key() == key)):
            continue  # a retried job: this admin was told already
        send_mail(tenant=tenant, recipient=admin, subject=f"Webhook paused: {sub.url}"[:200],
                  text=text, html=html, kind="webhook_paused", notice_key=key)


def _escape(value: str) -> str:
    from markupsafe import escape

    return str(escape(value))


def _sent_mail_id():
    return SentMail.id


def _sent_mail_key():
    return SentMail.notice_key


# Webhook deliveries committed and due now are queued; a paused webhook is mailed to admins.
register_handler(enqueue_due, "webhook.delivery_due", batch=enqueue_due_together)
register_handler(mail_admins_paused, "webhook.paused")
