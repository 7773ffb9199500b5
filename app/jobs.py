"""The RQ plumbing: the Redis connection, the queue, enqueueing, and the periodic job list."""
from __future__ import annotations

from flask import current_app
from redis import Redis
from rq import Queue, Retry

# Periodic jobs, declared once: (dotted function path, interval in seconds).
PERIODIC_JOBS: list[tuple[str, int]] = [
    ("app.outbox.jobs.relay_pending", 30),
    ("app.audit.jobs.anchor_chains", 3600),
    ("app.audit.jobs.sweep_stale_exports", 300),
    ("app.approvals.jobs.send_sla_reminders", 300),
    ("app.approvals.jobs.send_daily_digests", 3600),
    ("app.sla.jobs.refresh_sla_states", 300),
    ("app.webhooks.jobs.retry_due_deliveries", 60),
    ("app.policy.jobs.sweep_undecided", 60),
]

DEFAULT_RETRY = Retry(max=5, interval=[5, 30, 120, 600, 1800])


def redis_connection() -> Redis:
    app = current_app._get_current_object()
    conn = app.extensions.get("cleardesk_redis")
    if conn is None:
        conn = Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5)
        app.extensions["cleardesk_redis"] = conn
    return conn


def job_queue() -> Queue:
    return Queue(current_app.config["RQ_QUEUE"], connection=redis_connection())


def enqueue(func_path: str, *args, job_id: str | None = None, retry: Retry | None = DEFAULT_RETRY):
    """Enqueue by dotted path (jobs take ids, never objects)."""
    return job_queue().enqueue(func_path, *args, job_id=job_id, retry=retry)
