"""R3 Redis down and back empty, with the worker busy: approvals arrive (each mails its
approver a link through the outbox) before, during and after Redis is killed; a real
`flask worker` and `flask cron` must keep running and the system must drain by itself: every
outbox message processed, every mail sent exactly once."""
from __future__ import annotations

import time
from pathlib import Path

from drills.common import (Processes, Result, SmtpSink, ThrowawayRedis, common_invariants,
                           create_approvals, make_app, seed_people)


def _unprocessed(app) -> int:
    from sqlalchemy import func, select

    from app.extensions import db
    from app.outbox.models import OutboxMessage

    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.processed_at.is_(None)))


def run(work: Path, short: bool) -> Result:
    per_phase, outage, drain_limit = (10, 6, 120) if short else (100, 30, 300)
    result = Result(f"R3 Redis killed for {outage}s (twice in the full form) with a busy worker")
    redis = ThrowawayRedis(work)
    redis.start()
    processes = Processes(work)
    with SmtpSink() as sink:
        app = make_app({"REDIS_URL": redis.url, "SMTP_HOST": "127.0.0.1",
                        "SMTP_PORT": sink.port, "APP_BASE_URL": "http://drill.test"})
        tenant_id, requester_id, _emails = seed_people(app, 3)
        try:
            # The workers `make run` starts by default: one never takes bulk work.
            workers = [processes.flask(f"worker-{n}", app, "worker", "--queues", queues)
                       for n, queues in enumerate(("urgent,sweeps,default",
                                                   "urgent,bulk,default"))]
            cron = processes.flask("cron", app, "cron")
            created = 0
            outages = 1 if short else 2
            for _round in range(outages):
                create_approvals(app, tenant_id, requester_id, per_phase, created)
                created += per_phase
                redis.kill()
                down_at = time.monotonic()
                while time.monotonic() - down_at < outage:  # work arrives during the outage
                    create_approvals(app, tenant_id, requester_id, 5, created)
                    created += 5
                    if short:  # a steady trickle: the short form's drain fits `make test`
                        time.sleep(0.5)
                result.figures.setdefault("outbox waiting when Redis came back", []).append(
                    _unprocessed(app))
                alive = all(p.poll() is None for p in (*workers, cron))
                result.check(alive, "the workers and the scheduler outlive the outage")
                redis.start()
            create_approvals(app, tenant_id, requester_id, per_phase, created)
            created += per_phase
            back_at = time.monotonic()
            while _unprocessed(app) and time.monotonic() - back_at < drain_limit:
                time.sleep(1)
            drained = time.monotonic() - back_at
            time.sleep(2)  # a mail handed over in the last second reaches the sink
            result.figures["approvals created"] = created
            result.figures[f"seconds to drain (limit {drain_limit})"] = round(drained, 1)
            result.check(drained < drain_limit, f"drains within {drain_limit} s")
            result.check(all(p.poll() is None for p in (*workers, cron)),
                         "the workers and the scheduler are still running")
        finally:
            processes.stop_all()
            redis.kill()
        common_invariants(result, app, sink)
        with app.app_context():
            from sqlalchemy import func, select

            from app.extensions import db
            from app.mail.models import SentMail

            mailed = db.session.scalar(select(func.count()).select_from(SentMail).where(
                SentMail.kind == "assignment"))
        result.figures["approval request mails"] = mailed
        result.check(mailed == created, "every approval's request mailed once")
    return result
