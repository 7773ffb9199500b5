"""The RQ plumbing: the Redis connection, the queues by urgency, enqueueing, what is in flight,
and the periodic job list.

Background work runs on four queues, so that work people wait for never waits behind a
backlog (an import's thousands of webhook deliveries, a long export):

- ``urgent``: what people wait for — mail to people (approval requests, invitations, outcomes,
  mentions), the follow-ups of decisions and the policy's evaluation of single arrivals;
- ``sweeps``: the periodic safety nets (outbox relay, retry sweeps, SLA, policy sweep), so a
  sweep never queues behind the backlog it is there to catch up;
- ``default``: integrations — webhook deliveries, audit exports, calendar moves;
- ``bulk``: imports and what a batch of imported items sets off.

A worker listens to several queues and always takes from the first that has work
(``flask worker --queues urgent,sweeps,default``). Job ids and queue names carry RQ_QUEUE, the
deployment's name, so deployments (or test runs) that share a Redis never take each other's
jobs."""
from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable

from flask import current_app
from redis import Redis
from rq import Queue, Retry

URGENT, SWEEPS, DEFAULT, BULK = "urgent", "sweeps", "default", "bulk"
# The order a worker listening to all of them takes work in.
URGENCIES: tuple[str, ...] = (URGENT, SWEEPS, DEFAULT, BULK)

# Periodic jobs, declared once: (dotted function path, interval in seconds). All on SWEEPS.
PERIODIC_JOBS: list[tuple[str, int]] = [
    ("app.outbox.jobs.relay_pending", 30),
    ("app.audit.jobs.anchor_chains", 3600),
    ("app.audit.jobs.sweep_stale_exports", 300),
    ("app.approvals.jobs.send_sla_reminders", 300),
    ("app.approvals.jobs.send_daily_digests", 3600),
    ("app.sla.jobs.refresh_sla_states", 300),
    ("app.webhooks.jobs.retry_due_deliveries", 60),
    ("app.policy.jobs.sweep_undecided", 60),
    ("app.mail.sending.reconcile_unconfirmed", 300),
]

# The one map of work to queues: jobs by dotted path, outbox messages by topic. A job or topic
# not named here is integration work (DEFAULT).
JOB_URGENCY: dict[str, str] = {
    **{path: SWEEPS for path, _interval in PERIODIC_JOBS},
    "app.webhooks.jobs.deliver_webhook": DEFAULT,
    "app.audit.jobs.run_export": DEFAULT,
    "app.imports.jobs.run_import": BULK,
}
TOPIC_URGENCY: dict[str, str] = {
    # A decision's follow-ups and the mail people wait for.
    "item.created": URGENT,  # one arrival: the policy decides it (and source systems hear)
    "item.state_changed": URGENT,
    "item.mentioned": URGENT,
    "item.info_requested": URGENT,
    "item.step_approved": URGENT,
    "items.state_changed": URGENT,  # a policy batch's decisions: requesters' outcome mails
    "approval.step_assigned": URGENT,
    "approval.steps_assigned": URGENT,
    "account.password_link": URGENT,
    "work.assigned": URGENT,
    "sla.breached": URGENT,
    "sla.at_risk": URGENT,
    "sla.digest": URGENT,
    "audit.verification_failed": URGENT,
    "webhook.paused": URGENT,
    # Integrations.
    "webhook.delivery_due": DEFAULT,
    "audit.export_requested": DEFAULT,
    "tenant.calendar_changed": DEFAULT,
    # Bulk: an import and the batches of items it creates.
    "import.requested": BULK,
    "items.created": BULK,
}

# Seconds a job may run before RQ stops it, by queue. Short where the work is small and bounded
# (a decision's follow-ups, a mail, a webhook batch of at most WEBHOOK_BATCH_SECONDS plus one
# request's WEBHOOK_TIMEOUT_SECONDS, a sweep bounded by its own budget), long for imports. A
# job that must run longer says so itself (an audit export: EXPORT_TIMEOUT). A job whose worker
# died is taken over by the worker's heartbeat lapsing (`flask worker`), not by its timeout.
JOB_TIMEOUTS: dict[str, int] = {URGENT: 120, SWEEPS: 300, DEFAULT: 120, BULK: 3600}

log = logging.getLogger(__name__)

DEFAULT_RETRY = Retry(max=5, interval=[5, 30, 120, 600, 1800])

# RQ statuses of a job that will still run (or is running): queueing it again would run it twice,
# since RQ does not deduplicate a reused job id.
IN_FLIGHT = frozenset({"queued", "started", "scheduled", "deferred"})


def redis_connection() -> Redis:
    app = current_app._get_current_object()
    conn = app.extensions.get("cleardesk_redis")
    if conn is None:
        conn = Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5)
        app.extensions["cleardesk_redis"] = conn
    return conn


def queue_name(urgency: str = DEFAULT) -> str:
    """The RQ queue of an urgency in this deployment: RQ_QUEUE itself for DEFAULT, else
    RQ_QUEUE-<urgency> (and the bare urgency when RQ_QUEUE is left at "default")."""
    if urgency not in URGENCIES:
        raise ValueError(f"unknown queue {urgency!r}; one of {', '.join(URGENCIES)}")
    base = current_app.config["RQ_QUEUE"]
    if urgency == DEFAULT:
        return base
    return urgency if base == DEFAULT else f"{base}-{urgency}"


def job_queue(urgency: str = DEFAULT) -> Queue:
    return Queue(queue_name(urgency), connection=redis_connection(),
                 default_timeout=JOB_TIMEOUTS[urgency])


def queue_of_job(func_path: str) -> Queue:
    return job_queue(JOB_URGENCY.get(func_path, DEFAULT))


def queue_of_topic(topic: str) -> Queue:
    return job_queue(TOPIC_URGENCY.get(topic, DEFAULT))


def worker_queues(urgencies: Iterable[str] | None = None) -> list[Queue]:
    """The queues a worker listens to, in the order it takes work (all when None)."""
    wanted = list(urgencies or URGENCIES)
    return [job_queue(u) for u in sorted(dict.fromkeys(wanted), key=URGENCIES.index)]


def in_flight(job_ids: list[str]) -> set[str]:
    """The one place that knows what is in flight: which of these job ids are queued, running
    or scheduled in Redis (one round trip per 500). Sweeps that queue work again skip them."""
    if not job_ids:
        return set()
    conn = redis_connection()
    found: set[str] = set()
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start:start + 500]
        with conn.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.hget(f"rq:job:{job_id}", "status")
            statuses = pipe.execute()
        found.update(job_id for job_id, status in zip(chunk, statuses)
                     if status is not None and status.decode() in IN_FLIGHT)
    return found


def enqueue(func_path: str, *args, job_id: str | None = None, retry: Retry | None = DEFAULT_RETRY,
            **options):
    """Enqueue by dotted path (jobs take ids, never objects), on the job's queue. A job with a
    fixed id that is already in flight is not queued a second time."""
    if job_id is not None and in_flight([job_id]):
        return None
    return queue_of_job(func_path).enqueue(func_path, *args, job_id=job_id, retry=retry,
                                           **options)


def keep_running(run: Callable[[], bool], name: str, *, max_delay: float = 30.0) -> None:
    """Run a long-lived process's loop (a worker, the scheduler) until it ends as asked: when
    `run` raises or returns False (Redis or the database went away under it), log, wait with
    backoff (1 s, doubling to `max_delay`; back to 1 s after a minute of health) and run it
    again. A signal while waiting ends the process."""
    delay = 1.0
    while True:
        started = time.monotonic()
        try:
            if run():
                return
            problem = "its loop stopped"
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it was, the process carries on
            problem = f"{exc.__class__.__name__}: {exc}"
        if time.monotonic() - started > 60:
            delay = 1.0
        log.warning("%s: %s; starting again in %.0f s", name, problem, delay)
        print(f"{name}: {problem}; starting again in {delay:.0f} s", file=sys.stderr, flush=True)
        previous = {sig: signal.signal(sig, _exit_now) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            time.sleep(delay)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        delay = min(delay * 2, max_delay)


def _exit_now(signum, frame):
    raise SystemExit(0)
