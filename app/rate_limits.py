"""Requests counted per minute in Redis, so every web process shares the count: the API's
per-token limit and the limits on what anyone may ask without signing in (a passkey sign-in's
challenge). Redis being down lets the request through (logged): a limit protects the service,
it must not take the service down with Redis."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import current_app

from app.jobs import redis_connection

log = logging.getLogger(__name__)


@dataclass
class RateLimit:
    limit: int
    remaining: int
    retry_after: int  # seconds until the window resets

    @property
    def exceeded(self) -> bool:
        return self.remaining < 0


def take(bucket: str, who: str, limit: int) -> RateLimit | None:
    """Count one request of `who` in `bucket`'s current one-minute window; None when Redis
    could not be asked."""
    now = time.time()
    window = int(now // 60)
    key = f"cleardesk:{current_app.config['RQ_QUEUE']}:{bucket}:{who}:{window}"
    try:
        pipe = redis_connection().pipeline()
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = pipe.execute()
    except Exception as exc:  # noqa: BLE001 - see the module's docstring
        log.warning("rate limit %s not checked (Redis): %s", bucket, exc)
        return None
    return RateLimit(limit=limit, remaining=limit - int(count),
                     retry_after=max(1, int((window + 1) * 60 - now)))
