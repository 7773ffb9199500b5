"""The background processes heal: a real `flask worker` and `flask cron` keep running while
their Redis (a throwaway server of this test) is killed, and when it comes back empty the
work written meanwhile (held in the outbox) is relayed by the sweep and done."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import select

from app.extensions import db
from app.outbox.models import OutboxMessage
from drills.common import ThrowawayRedis
from tests.approvals.conftest import ROOT


def _start(app, redis_url: str, *command) -> subprocess.Popen:
    config = app.config
    env = dict(os.environ, DATABASE_URL=config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=redis_url,
               RQ_QUEUE=config["RQ_QUEUE"], SECRET_KEY=config["SECRET_KEY"])
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", *command],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _processed(message_id: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        db.session.rollback()
        if db.session.get(OutboxMessage, message_id).processed_at is not None:
            return True
        time.sleep(0.25)
    return False


def _last_message_id() -> int:
    return db.session.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id.desc())).first()


def test_worker_and_scheduler_outlive_a_redis_outage_and_the_outbox_catches_up(
        app, make_tenant, make_item, tmp_path):
    redis = ThrowawayRedis(tmp_path)
    redis.start()
    app.config.update(REDIS_URL=redis.url, OUTBOX_RELAY_ON_COMMIT=True)
    app.extensions.pop("cleardesk_redis", None)
    worker = _start(app, redis.url, "worker", "--without-scheduler")
    cron = _start(app, redis.url, "cron")
    try:
        tenant = make_tenant()
        make_item(tenant)
        assert _processed(_last_message_id(), 60), "no work done before the outage"

        redis.kill()
        make_item(tenant)  # decided while Redis is down: its message waits in the outbox
        during = _last_message_id()
        assert db.session.get(OutboxMessage, during).relayed_at is None
        time.sleep(4)  # both notice: their connections fail
        assert worker.poll() is None, "the worker exited when Redis went away"
        assert cron.poll() is None, "the scheduler exited when Redis went away"

        redis.start()  # back, and empty
        # The scheduler's relay sweep (every 30 s) hands the message over; the worker does it.
        assert _processed(during, 120), "the work held in the outbox was not done"
        make_item(tenant)
        assert _processed(_last_message_id(), 60), "no work done after the outage"
        assert worker.poll() is None and cron.poll() is None
    finally:
        for process in (worker, cron):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
        redis.kill()
