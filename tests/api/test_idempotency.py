"""Idempotency under real concurrency: many clients posting the same item at once, over HTTP
to the threaded server, each request with its own connection and transaction."""
from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlsplit

from sqlalchemy import func, select

from app.api.models import IdempotencyRecord
from app.audit.models import AuditEvent
from app.extensions import db
from app.models import WorkItem
from tests.api.conftest import item_payload

CLIENTS = 8


def _post_at_once(base_url, token, body, headers=None):
    url = urlsplit(base_url)
    barrier = threading.Barrier(CLIENTS, timeout=30)
    results = [None] * CLIENTS

    def post(index):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        conn.connect()
        barrier.wait()  # every connection is open; the requests leave together
        conn.request("POST", "/api/v1/items", body=json.dumps(body),
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        results[index] = (response.status, json.loads(response.read()),
                          response.getheader("Idempotent-Replayed"))
        conn.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return results


def test_the_same_item_posted_concurrently_exists_once(api, live_server):
    results = _post_at_once(live_server, api.token, item_payload())
    statuses = sorted(r[0] for r in results)
    assert statuses == [200] * (CLIENTS - 1) + [201], results
    assert len({r[1]["id"] for r in results}) == 1
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(WorkItem)) == 1
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "item.created")) == 1


def test_one_idempotency_key_sent_concurrently_makes_one_item_and_one_answer(api, live_server):
    # Different references under one key: only the key can keep these from making two items.
    results = _post_at_once(live_server, api.token, item_payload(external_ref="K-1"),
                            headers={"Idempotency-Key": "batch-2026-11-27"})
    assert [r[0] for r in results] == [201] * CLIENTS, results
    assert sorted(r[2] == "true" for r in results) == [False] + [True] * (CLIENTS - 1)
    assert len({json.dumps(r[1], sort_keys=True) for r in results}) == 1
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(WorkItem)) == 1
    assert db.session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1
