"""R1 concurrent decisions: every one-step approval approved by several approvers at once,
through the pages (signed in, with CSRF) of a real gunicorn. Each item is decided exactly
once, no request fails with a 5xx, and every loser is told who won and when."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drills.common import (Processes, Result, common_invariants, create_approvals, free_port,
                           make_app, percentile, seed_people, signed_in)


def run(work: Path, short: bool) -> Result:
    items, approvers = (25, 5) if short else (450, 10)
    result = Result(f"R1 concurrent decisions: {items} approvals x {approvers} approvers at once")
    app = make_app({"OUTBOX_RELAY_ON_COMMIT": False})
    tenant_id, requester_id, emails = seed_people(app, approvers)
    item_ids = create_approvals(app, tenant_id, requester_id, items)
    processes = Processes(work)
    port = free_port()
    try:
        processes.gunicorn(app, port, workers=2, OUTBOX_RELAY_ON_COMMIT="0")
        base = f"http://127.0.0.1:{port}"
        sessions = [signed_in(base, email) for email in emails]
        outcomes: list[tuple[int, str, float]] = []
        lock = threading.Lock()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=approvers) as pool:
            for item_id in item_ids:
                barrier = threading.Barrier(approvers)

                def attempt(index, item_id=item_id, barrier=barrier):
                    session, token = sessions[index]
                    barrier.wait(30)
                    t0 = time.monotonic()
                    response = session.post(f"{base}/items/{item_id}/act",
                                            data={"action": "approve", "csrf_token": token},
                                            headers={"HX-Request": "true", "X-CSRFToken": token},
                                            timeout=60)
                    with lock:
                        outcomes.append((response.status_code, response.text,
                                         time.monotonic() - t0))

                list(pool.map(attempt, range(approvers)))
        elapsed = time.monotonic() - started
    finally:
        processes.stop_all()
    won = [o for o in outcomes if o[0] == 200]
    lost = [o for o in outcomes if o[0] != 200]
    told = [o for o in lost if "Already approved by" in o[1] and " at " in o[1]]
    server_errors = [o for o in outcomes if o[0] >= 500]
    latencies = [o[2] for o in outcomes]
    result.figures.update({
        "attempts": len(outcomes), "winners": len(won), "losers": len(lost),
        "losers told who won and when": len(told),
        "losers told something else": len(lost) - len(told),
        "5xx": len(server_errors),
        "seconds": round(elapsed, 1),
        "latency p50 / p99 ms": f"{percentile(latencies, 50) * 1000:.0f} / "
                                f"{percentile(latencies, 99) * 1000:.0f}",
    })
    result.check(len(won) == len(item_ids), "exactly one winner per item")
    result.check(not server_errors, "no 5xx")
    result.check(len(told) == len(lost), "every loser is told who won and when")
    common_invariants(result, app, outbox=False)  # no worker here: R3 drills the outbox
    return result
