"""R10 PostgreSQL restarted (`pg_ctl restart -m fast`; twice in the full form) under a stream
of decisions through the pages and creates through the API of a real gunicorn, with a worker
and the scheduler running. Clients retry what answered 503, as a browser's user and a source
system would. Nothing is half-written or lost, every 5xx is Cleardesk's own 503 (never
gunicorn's bare page), the workers outlive the restarts and everything drains."""
from __future__ import annotations

import os
import queue
import shlex
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from drills.common import (Processes, Result, SmtpSink, ThrowawayRedis, api_client,
                           common_invariants, create_approvals, free_port, issue_api_token,
                           make_app, ours, post_arrival, seed_people, signed_in)

RETRY_FOR = 60  # seconds a client keeps retrying one request that answered 503


class Stream:
    """Every answer of the run: (kind, started, finished, status or None, ours)."""

    def __init__(self):
        self.answers: list[tuple[str, float, float, int | None, bool]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def send(self, kind: str, call) -> requests.Response | None:
        """`call()` until it answers something else than 503 (or RETRY_FOR runs out)."""
        deadline = time.monotonic() + RETRY_FOR
        while True:
            started = time.monotonic()
            try:
                response = call()
            except requests.RequestException:
                response = None
            with self.lock:
                self.answers.append((kind, started, time.monotonic(),
                                     None if response is None else response.status_code,
                                     response is not None and ours(response)))
            if response is not None and response.status_code != 503:
                return response
            if time.monotonic() > deadline:
                return response
            time.sleep(0.3)


def _approver(stream: Stream, base: str, signed: tuple, pending: queue.Queue, decided: list):
    session, token = signed
    while not stream.stop.is_set():
        try:
            item_id = pending.get_nowait()
        except queue.Empty:
            return
        response = stream.send("page approve", lambda item_id=item_id: session.post(
            f"{base}/items/{item_id}/act", data={"action": "approve", "csrf_token": token},
            headers={"HX-Request": "true", "X-CSRFToken": token}, timeout=60))
        if response is not None and response.status_code == 200:
            decided.append(item_id)


def _source_system(stream: Stream, base: str, secret: str, client: int, created: list):
    session = api_client(secret)
    n = 0
    while not stream.stop.is_set():
        ref = f"R10-{client}-{n}"
        n += 1
        response = stream.send("api create", lambda ref=ref: post_arrival(session, base, ref))
        if response is not None and response.status_code in (200, 201):
            created.append(ref)


def _restart_postgres(work: Path) -> tuple[float, float]:
    command = [*shlex.split(os.environ["DRILL_PG_CTL"]), "restart", "-m", "fast", "-w",
               "-t", "60"]
    started = time.monotonic()
    with open(work / "pg_ctl-restart.log", "ab") as log:
        subprocess.run(command, stdout=log, stderr=log, check=True, timeout=90)
    return started, time.monotonic()


def run(work: Path, short: bool) -> Result:
    restarts, approvers, clients, gap, items = (1, 2, 1, 4, 40) if short else (2, 6, 3, 10, 300)
    result = Result(f"R10 PostgreSQL restarted (pg_ctl restart -m fast) {restarts}x under "
                    f"{approvers} approvers and {clients} API clients")
    if not os.environ.get("DRILL_PG_CTL"):
        result.check(False, "R10 restarts PostgreSQL with DRILL_PG_CTL (make drill sets it)")
        return result
    processes = Processes(work)
    stream, decided, created = Stream(), [], []
    redis = ThrowawayRedis(work)
    redis.start()
    with SmtpSink() as sink:
        app = make_app({"REDIS_URL": redis.url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": sink.port,
                        "APP_BASE_URL": "http://drill.test"})
        tenant_id, requester_id, emails = seed_people(app, approvers)
        secret = issue_api_token(app, tenant_id)
        pending: queue.Queue = queue.Queue()
        for item_id in create_approvals(app, tenant_id, requester_id, items):
            pending.put(item_id)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        windows = []
        try:
            processes.gunicorn(app, port, workers=2)
            # The workers `make run` starts by default: one never takes bulk work.
            workers = [processes.flask(f"worker-{n}", app, "worker", "--queues", queues)
                       for n, queues in enumerate(("urgent,sweeps,default",
                                                   "urgent,bulk,default"))]
            cron = processes.flask("cron", app, "cron")
            threads = [threading.Thread(target=_approver, args=(
                stream, base, signed_in(base, email), pending, decided)) for email in emails]
            threads += [threading.Thread(target=_source_system,
                                         args=(stream, base, secret, n, created))
                        for n in range(clients)]
            for thread in threads:
                thread.start()
            for _ in range(restarts):
                time.sleep(gap)
                windows.append(_restart_postgres(work))
            time.sleep(gap)
            stream.stop.set()
            for thread in threads:
                thread.join(RETRY_FOR + 30)
            last_post = time.monotonic()
            drain_limit = 90 if short else 180
            while _unprocessed(app) and time.monotonic() - last_post < drain_limit:
                time.sleep(1)
            drained = time.monotonic() - last_post
            time.sleep(2)  # a mail handed over in the last second reaches the sink
            alive = all(p.poll() is None for p in (*workers, cron))
        finally:
            processes.stop_all()
            redis.kill()
        answers = stream.answers
        five = [a for a in answers if a[3] is not None and a[3] >= 500]
        foreign = [a for a in five if not a[4]]
        silent = [a for a in answers if a[3] is None]
        back_after = []
        for _started, done in windows:
            firsts = [a[2] for a in answers if a[1] >= done and a[3] is not None and a[3] < 500]
            back_after.append(round(min(firsts) - done, 2) if firsts else None)
        result.figures.update({
            "requests answered": len(answers) - len(silent),
            "decisions through pages / creates through API": f"{len(decided)} / {len(created)}",
            "restart took s": [round(done - started, 2) for started, done in windows],
            "first good answer after the restart s": back_after,
            "5xx: Cleardesk's 503 / anything else": f"{len(five) - len(foreign)} / "
                                                   f"{len(foreign)}",
            "requests with no answer": len(silent),
            "answers by kind and status": dict(sorted(Counter(
                f"{a[0]} {a[3]}" for a in answers).items())),
            f"seconds to drain (limit {drain_limit})": round(drained, 1),
        })
        result.check(bool(windows) and all(b is not None for b in back_after),
                     "requests succeed again after every restart")
        result.check(not foreign, "every 5xx is Cleardesk's own 503, never a bare page")
        result.check(not silent, "every request gets an answer")
        result.check(alive, "the workers and the scheduler outlive the restarts")
        result.check(drained < drain_limit, f"drains within {drain_limit} s")
        _nothing_half_written(result, app, decided, created)
        common_invariants(result, app, sink)
    return result


def _unprocessed(app) -> int:
    from sqlalchemy import func, select

    from app.extensions import db
    from app.outbox.models import OutboxMessage

    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.processed_at.is_(None)))


def _nothing_half_written(result: Result, app, decided: list, created: list) -> None:
    """Every decision a client saw taken is recorded, every item a source system was told it
    created exists once, and every item has its one creation event."""
    from sqlalchemy import func, select

    from app.audit.models import AuditEvent
    from app.extensions import db
    from app.models import WorkItem

    with app.app_context():
        states = dict(db.session.execute(select(WorkItem.id, WorkItem.state).where(
            WorkItem.id.in_(decided))).all()) if decided else {}
        lost = sum(1 for item_id in decided if states.get(item_id) != "approved")
        result.figures["decisions answered but not recorded"] = lost
        result.check(lost == 0, "every decision a client was answered is recorded")
        refs = set(db.session.scalars(select(WorkItem.external_ref).where(
            WorkItem.source_system == "drill-api")).all())
        missing = len(set(created) - refs)
        result.figures["API creates answered but missing"] = missing
        result.check(missing == 0, "every item an API client was answered exists")
        events = dict(db.session.execute(
            select(AuditEvent.item_id, func.count()).where(AuditEvent.action == "item.created")
            .group_by(AuditEvent.item_id)).all())
        items = db.session.scalars(select(WorkItem.id)).all()
        odd = sum(1 for item_id in items if events.get(item_id) != 1)
        result.figures["items without exactly one creation event"] = odd
        result.check(odd == 0, "every item has exactly one creation event")
