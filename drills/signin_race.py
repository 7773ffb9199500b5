"""The sign-in race: many people's first sign-ins, and wrong passwords, all at once from one
address through a real gunicorn. No request fails with a 5xx (the throttle rows are made by an
upsert, so simultaneous first attempts find one row), every right password signs in, and the
throttle counts every failure exactly: per email and per address."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from drills.common import (PASSWORD, Processes, Result, common_invariants, csrf_token,
                           free_port, make_app, seed_people)

REPEATED = 4  # wrong passwords for one email: below LOGIN_MAX_FAILURES, so all are counted


def run(work: Path, short: bool) -> Result:
    people, strangers = (12, 6) if short else (40, 20)
    attempts_total = people + strangers + REPEATED
    result = Result(f"Sign-in race: {people} first sign-ins, {strangers} unknown emails and "
                    f"{REPEATED} wrong passwords for one account, at once from one address")
    app = make_app()
    _tenant_id, _requester_id, emails = seed_people(app, people)
    processes = Processes(work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    attempts = ([(email, PASSWORD) for email in emails]
                + [(f"nobody{n}@drill.test", "wrong-password") for n in range(strangers)]
                + [("requester@drill.test", "wrong-password")] * REPEATED)
    outcomes: list[tuple[str, str, int, bool]] = []
    lock = threading.Lock()
    try:
        processes.gunicorn(app, port, workers=4)
        barrier = threading.Barrier(len(attempts))

        def attempt(index: int) -> None:
            email, password = attempts[index]
            session = requests.Session()
            token = csrf_token(session.get(f"{base}/login", timeout=60).text)
            barrier.wait(120)
            answer = session.post(f"{base}/login", timeout=120, allow_redirects=False,
                                  data={"email": email, "password": password,
                                        "csrf_token": token})
            signed = answer.status_code in (302, 303) and "/login" not in answer.headers.get(
                "Location", "")
            with lock:
                outcomes.append((email, password, answer.status_code, signed))

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
            list(pool.map(attempt, range(len(attempts))))
        elapsed = time.monotonic() - started
    finally:
        processes.stop_all()
    right = [o for o in outcomes if o[1] == PASSWORD]
    wrong = [o for o in outcomes if o[1] != PASSWORD]
    server_errors = [o for o in outcomes if o[2] >= 500]
    result.figures.update({
        "attempts at once": len(outcomes),
        "5xx": len(server_errors),
        "right passwords signed in": f"{sum(o[3] for o in right)} of {len(right)}",
        "wrong passwords refused": f"{sum(not o[3] and o[2] < 500 for o in wrong)} of "
                                   f"{len(wrong)}",
        "seconds": round(elapsed, 1),
    })
    result.check(len(outcomes) == attempts_total, "every attempt answered")
    result.check(not server_errors, "no 5xx")
    result.check(all(o[3] for o in right), "every right password signs in")
    result.check(not any(o[3] for o in wrong), "no wrong password signs in")
    _throttle_counts(result, app, strangers)
    common_invariants(result, app, outbox=False)
    return result


def _throttle_counts(result: Result, app, strangers: int) -> None:
    from sqlalchemy import func, select

    from app.audit.models import AuditEvent
    from app.extensions import db
    from app.models import LoginThrottle

    with app.app_context():
        rows = db.session.scalars(select(LoginThrottle)).all()
        by_ip = [t.failures for t in rows if t.key.startswith("ip:")]
        by_email = sorted(t.failures for t in rows if t.key.startswith("email:") and t.failures)
        failed_events = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "auth.login_failed"))
        db.session.rollback()
    wrong = strangers + REPEATED
    expected_by_email = sorted([1] * strangers + [REPEATED])
    result.figures.update({
        "failures counted for the address": f"{by_ip} (expected [{wrong}])",
        "emails with failures / their counts right": f"{len(by_email)} / "
                                                    f"{by_email == expected_by_email}",
        "auth.login_failed events": failed_events,
    })
    result.check(by_ip == [wrong], "the address's throttle counts every failure, in one row")
    result.check(by_email == expected_by_email,
                 "each email's throttle counts each of its failures, in one row")
    result.check(failed_events == wrong, "every failure audited once")
