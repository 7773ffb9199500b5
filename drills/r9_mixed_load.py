"""R9 mixed load: simulated people on a real gunicorn for a fixed time — approvers through the
pages (their queue, then an approval, with CSRF), source systems through the API (creates and
lists) and managers on the dashboard — measured against /ping (the cheapest signed-in page)
in the same run. Reports requests per second as a share of /ping's and each kind's p50 / p99;
no request may fail with a 5xx and nothing answered may be lost. A p99 above 4 x its p50 is
reported, not failed (on a shared machine it says as much about the neighbours)."""
from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from pathlib import Path

import requests

from drills.common import (PASSWORD, Processes, Result, api_client, common_invariants,
                           create_approvals, free_port, issue_api_token, make_app, percentile,
                           post_arrival, seed_people, signed_in)


class Load:
    """Every answer: kind -> [(seconds, status)]; a shared stop flag."""

    def __init__(self):
        self.answers: dict[str, list[tuple[float, int | None]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def timed(self, kind: str, call):
        started = time.monotonic()
        try:
            response = call()
        except requests.RequestException:
            response = None
        with self.lock:
            self.answers[kind].append((time.monotonic() - started,
                                       None if response is None else response.status_code))
        return response


def _managers(app, tenant_id: int, count: int) -> list[str]:
    from app.actors import Actor
    from app.admin.people import grant_membership
    from app.auth.services import create_user
    from app.extensions import db
    from app.models import Tenant
    from app.unit_of_work import commit

    system = Actor.system("drill")
    emails = []
    with app.app_context():
        tenant = db.session.get(Tenant, tenant_id)
        for n in range(count):
            user = create_user(system, email=f"manager{n}@drill.test", name=f"Manager {n}",
                               password=PASSWORD)
            grant_membership(system, user=user, tenant=tenant, roles=["manager"],
                             approval_limit="0")
            emails.append(user.email)
        commit()
    return emails


def run(work: Path, short: bool) -> Result:
    approvers, clients, managers, seconds, items = ((6, 3, 1, 10, 150) if short
                                                    else (30, 15, 5, 60, 2500))
    users = approvers + clients + managers
    result = Result(f"R9 mixed load: {users} users ({approvers} approvers, {clients} API "
                    f"clients, {managers} managers) for {seconds}s, against /ping")
    app = make_app({"OUTBOX_RELAY_ON_COMMIT": False})
    tenant_id, requester_id, emails = seed_people(app, approvers)
    manager_emails = _managers(app, tenant_id, managers)
    secret = issue_api_token(app, tenant_id)
    pending: queue.Queue = queue.Queue()
    for item_id in create_approvals(app, tenant_id, requester_id, items):
        pending.put(item_id)
    processes = Processes(work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    load, ping = Load(), Load()
    approved, created = [], []
    try:
        processes.gunicorn(app, port, workers=2, OUTBOX_RELAY_ON_COMMIT="0")
        approver_sessions = [signed_in(base, email) for email in emails]
        manager_sessions = [signed_in(base, email) for email in manager_emails]

        def approver(signed):
            session, token = signed
            while not load.stop.is_set():
                load.timed("approver: queue page", lambda: session.get(f"{base}/", timeout=120))
                try:
                    item_id = pending.get_nowait()
                except queue.Empty:
                    continue
                response = load.timed("approver: approve (htmx)", lambda: session.post(
                    f"{base}/items/{item_id}/act", timeout=120,
                    data={"action": "approve", "csrf_token": token},
                    headers={"HX-Request": "true", "X-CSRFToken": token}))
                if response is not None and response.status_code == 200:
                    approved.append(item_id)

        def source_system(client: int):
            session = api_client(secret)
            n = 0
            while not load.stop.is_set():
                ref = f"R9-{client}-{n}"
                n += 1
                response = load.timed("api: create", lambda ref=ref: post_arrival(
                    session, base, ref, "300.00", timeout=120))
                if response is not None and response.status_code == 201:
                    created.append(ref)
                load.timed("api: list", lambda: session.get(f"{base}/api/v1/items?limit=25",
                                                            timeout=120))

        def manager(signed):
            session, _token = signed
            while not load.stop.is_set():
                load.timed("manager: dashboard", lambda: session.get(f"{base}/dashboard",
                                                                     timeout=120))

        def pinger(signed):
            session, _token = signed
            while not ping.stop.is_set():
                ping.timed("/ping", lambda: session.get(f"{base}/ping", timeout=120))

        # /ping first, with as many clients as the mixed load has users.
        everyone = approver_sessions + manager_sessions
        ping_seconds = max(4, seconds // 6)
        threads = [threading.Thread(target=pinger, args=(everyone[n % len(everyone)],))
                   for n in range(users)]
        ping_started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(ping_seconds)
        ping.stop.set()
        for thread in threads:
            thread.join(180)
        ping_elapsed = time.monotonic() - ping_started

        threads = ([threading.Thread(target=approver, args=(s,)) for s in approver_sessions]
                   + [threading.Thread(target=source_system, args=(n,)) for n in range(clients)]
                   + [threading.Thread(target=manager, args=(s,)) for s in manager_sessions])
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        load.stop.set()
        for thread in threads:
            thread.join(180)
        elapsed = time.monotonic() - started
    finally:
        processes.stop_all()
    _report(result, load, ping, elapsed, ping_elapsed)
    _nothing_lost(result, app, approved, created)
    common_invariants(result, app, outbox=False)
    return result


def _report(result: Result, load: Load, ping: Load, elapsed: float,
            ping_elapsed: float) -> None:
    everything = [a for answers in load.answers.values() for a in answers]
    ping_answers = ping.answers["/ping"]
    rate = len(everything) / elapsed
    ping_rate = len(ping_answers) / ping_elapsed
    result.figures["/ping req/s (same clients, same run)"] = f"{ping_rate:.1f}"
    result.figures["mixed req/s / share of /ping's"] = (
        f"{rate:.1f} / {rate / ping_rate:.2f}" if ping_rate else f"{rate:.1f} / -")
    spread = []
    for kind, answers in sorted({**load.answers, "/ping": ping_answers}.items()):
        times = [a[0] for a in answers]
        p50, p99 = percentile(times, 50), percentile(times, 99)
        result.figures[f"{kind}: n, p50 / p99 ms"] = (
            f"{len(times)}, {p50 * 1000:.0f} / {p99 * 1000:.0f}")
        if p50 and p99 > 4 * p50:
            spread.append(kind)
    result.figures["p99 above 4 x p50 (reported, not failed)"] = ", ".join(spread) or "none"
    server_errors = sum(1 for a in everything + ping_answers if a[1] is not None and a[1] >= 500)
    unanswered = sum(1 for a in everything + ping_answers if a[1] is None)
    result.figures["5xx / no answer"] = f"{server_errors} / {unanswered}"
    result.check(server_errors == 0, "no 5xx")
    result.check(unanswered == 0, "every request answered")


def _nothing_lost(result: Result, app, approved: list, created: list) -> None:
    from sqlalchemy import select

    from app.extensions import db
    from app.models import WorkItem

    with app.app_context():
        states = dict(db.session.execute(select(WorkItem.id, WorkItem.state).where(
            WorkItem.id.in_(approved))).all()) if approved else {}
        refs = set(db.session.scalars(select(WorkItem.external_ref).where(
            WorkItem.source_system == "drill-api")).all())
        db.session.rollback()
    lost = sum(1 for item_id in approved if states.get(item_id) != "approved")
    missing = len(set(created) - refs)
    result.figures["approvals answered / not recorded"] = f"{len(approved)} / {lost}"
    result.figures["API creates answered / missing"] = f"{len(created)} / {missing}"
    result.check(lost == 0 and missing == 0, "nothing answered is lost")
