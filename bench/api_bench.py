"""Measure the integration paths, each against a ceiling from the same run:

- POST /api/v1/items (a new item each request, through the whole write path) in requests/s,
  against GET /ping (the cheapest signed-in endpoint) on the same gunicorn;
- a CSV import (the real import job: the whole file checked through the write path's checks,
  then written in batches by app.work.services.create_prepared_items, with an audit event,
  rollups and SLA due time per item, committed per batch) in rows/s, against a raw bulk
  insert of the same rows into work_items (multi-row INSERTs of 500, and COPY), in the same
  run.

Called by scripts/bench.sh (BENCH_PARTS=api) on a throwaway, migrated PostgreSQL database
(DATABASE_URL) with gunicorn serving it at --url. Loopback only, bounded in time.

    python bench/api_bench.py --url http://127.0.0.1:PORT --duration 10 --import-rows 100000
    python bench/api_bench.py --import-only --import-rows 100000   # the import part alone
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select  # noqa: E402

from app import create_app  # noqa: E402
from app.actors import Actor  # noqa: E402
from app.admin.people import grant_membership  # noqa: E402
from app.api.tokens import issue_token  # noqa: E402
from app.auth.services import create_user  # noqa: E402
from app.extensions import db  # noqa: E402
from app.imports import services as imports  # noqa: E402
from app.imports.jobs import run_import  # noqa: E402
from app.models import Tenant, WorkItem  # noqa: E402
from app.types import utcnow  # noqa: E402
from app.unit_of_work import commit  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import sign_in  # noqa: E402

PASSWORD = "demo-password"
EMAIL = "bench.api@cleardesk.demo"
SYSTEM = Actor.system("bench")


def prepare() -> tuple[str, int]:
    """A tenant, an analyst who signs in for the ceiling, an API token."""
    tenant = Tenant(slug=f"bench-{uuid.uuid4().hex[:6]}", name="Bench", currency="USD",
                    timezone="America/New_York", calendar_country="US")
    db.session.add(tenant)
    commit()
    user = create_user(SYSTEM, email=EMAIL, name="Bench Analyst", password=PASSWORD)
    grant_membership(SYSTEM, user=user, tenant=tenant, roles=["analyst"], approval_limit="0")
    _row, token = issue_token(SYSTEM, tenant.id, "bench", ["items:read", "items:write"])
    commit()
    return token, tenant.id


def _post_loop(args) -> tuple[int, int, list[float]]:
    host, port, token, seconds, worker = args
    conn = http.client.HTTPConnection(host, port, timeout=30)
    latencies, other = [], 0
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
        body = json.dumps({"kind": "billing_exception", "subtype": "payment_failed",
                           "title": "Card declined", "external_ref": f"B-{worker}-{n}-{uuid.uuid4().hex[:8]}",
                           "source_system": "bench", "counterparty": "Acme Labs",
                           "amount": "125.00"})
        start = time.perf_counter()
        try:
            conn.request("POST", "/api/v1/items", body=body,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            other += 1
            conn.close()
            continue
        if response.status == 201:
            latencies.append(time.perf_counter() - start)
        else:
            other += 1
        if response.will_close:
            conn.close()
    conn.close()
    return len(latencies), other, latencies


def _get_loop(args) -> tuple[int, int, list[float]]:
    host, port, cookie, seconds, _worker = args
    from run_bench import _connection_loop

    latencies, other, failed = _connection_loop((host, port, "/ping", cookie, seconds, {}))
    return len(latencies), other + failed, latencies


def load(pool, loop, host, port, secret, seconds, connections) -> dict:
    started = time.perf_counter()
    parts = pool.map(loop, [(host, port, secret, seconds, i) for i in range(connections)])
    elapsed = time.perf_counter() - started
    ok = sum(p[0] for p in parts)
    latencies = sorted(x for p in parts for x in p[2])
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    return {"requests": ok, "errors": sum(p[1] for p in parts),
            "rps": ok / elapsed if elapsed else 0.0, "p50_ms": p50}


def csv_rows(rows: int) -> str:
    return "exception_id,invoice_number,customer,exception_type,amount,region\n" + "".join(
        f"IMP-{n},INV-{n},Customer {n % 997},payment_failed,{n % 9000 + 1}.50,us\n"
        for n in range(rows))


def import_rate(tenant_id: int, rows: int) -> dict:
    """The real path: upload check, then the import job, as the worker runs it."""
    from app.models import User
    from app.outbox.models import OutboxMessage

    user = db.session.scalars(select(User).where(User.email == EMAIL)).one()
    text = csv_rows(rows)
    started = time.perf_counter()
    job = imports.upload(Actor.for_user(user), tenant_id, format_name="billing_export",
                         filename="bench.csv", raw=text.encode())
    commit()
    checked = time.perf_counter() - started
    imports.confirm_import(Actor.for_user(user), job.id)
    commit()
    messages_before = db.session.scalar(select(func.count()).select_from(OutboxMessage))
    job_started = time.perf_counter()
    run_import(job.id)
    elapsed = time.perf_counter() - job_started
    db.session.expire_all()
    made = db.session.scalar(select(func.count()).select_from(WorkItem).where(
        WorkItem.tenant_id == tenant_id, WorkItem.source_system == "billing"))
    messages = db.session.scalar(select(func.count()).select_from(OutboxMessage)) - \
        messages_before
    return {"rows": rows, "created": made, "check_seconds": checked, "import_seconds": elapsed,
            "rows_per_s": rows / elapsed, "outbox_messages": messages}


def _raw_rows(rows: int) -> tuple[int, list[dict]]:
    tenant = Tenant(slug=f"raw-{uuid.uuid4().hex[:6]}", name="Raw", currency="USD",
                    timezone="America/New_York", calendar_country="US")
    db.session.add(tenant)
    commit()
    now = utcnow()
    return tenant.id, [
        {"tenant_id": tenant.id, "kind": "billing_exception", "subtype": "payment_failed",
         "title": f"Payment failed: INV-{n}", "external_ref": f"IMP-{n}",
         "source_system": "billing", "counterparty": f"Customer {n % 997}", "region": "us",
         "amount": Decimal(f"{n % 9000 + 1}.50"), "amount_at_risk": Decimal(f"{n % 9000 + 1}.50"),
         "currency": "USD", "priority": "normal", "state": "open", "created_at": now,
         "sla_due_at": now, "sla_state": "on_track",
         "details": {"invoice_number": f"INV-{n}"}, "version": 1} for n in range(rows)]


def raw_insert_rate(rows: int) -> dict:
    """A ceiling: the same rows straight into work_items, one multi-row INSERT per 500 rows,
    a commit after each."""
    _tenant_id, values = _raw_rows(rows)
    started = time.perf_counter()
    for start in range(0, rows, 500):
        db.session.execute(insert(WorkItem), values[start:start + 500])
        db.session.commit()
    elapsed = time.perf_counter() - started
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def raw_copy_rate(rows: int, batch: int) -> dict:
    """The higher ceiling: the same rows by COPY (app.bulk.insert_rows), the import's batch
    size at a time, a commit after each."""
    from app.bulk import insert_rows

    _tenant_id, values = _raw_rows(rows)
    started = time.perf_counter()
    for start in range(0, rows, batch):
        insert_rows(WorkItem.__table__, values[start:start + batch])
        db.session.commit()
    elapsed = time.perf_counter() - started
    return {"rows": rows, "batch": batch, "seconds": elapsed, "rows_per_s": rows / elapsed}


def import_part(tenant_id: int, rows: int) -> dict:
    print(f"  CSV import of {rows:,} rows (the import job)", file=sys.stderr)
    imported = import_rate(tenant_id, rows)
    print(f"  raw bulk insert of {rows:,} rows (INSERT, then COPY)", file=sys.stderr)
    raw = raw_insert_rate(rows)
    copy = raw_copy_rate(rows, imports.batch_size())
    return {"csv_import": imported, "raw_insert": raw, "raw_copy": copy,
            "csv_import_ratio": imported["rows_per_s"] / raw["rows_per_s"],
            "csv_import_ratio_to_copy": imported["rows_per_s"] / copy["rows_per_s"]}


def print_import(report: dict) -> None:
    imported, raw, copy = report["csv_import"], report["raw_insert"], report["raw_copy"]
    print(f"{'raw INSERT (ceiling)':28}{raw['rows_per_s']:>10.0f}/s{1:>10.2f}")
    print(f"{'raw COPY (higher ceiling)':28}{copy['rows_per_s']:>10.0f}/s"
          f"{copy['rows_per_s'] / raw['rows_per_s']:>10.2f}")
    print(f"{'CSV import job':28}{imported['rows_per_s']:>10.0f}/s"
          f"{report['csv_import_ratio']:>10.3f}   {report['csv_import_ratio_to_copy']:.3f} of "
          f"COPY; {imported['created']:,} items, checked in {imported['check_seconds']:.1f}s, "
          f"imported in {imported['import_seconds']:.1f}s, "
          f"{imported['outbox_messages']:,} outbox messages")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--import-only", action="store_true",
                        help="only the CSV import against the raw inserts (no web server)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--import-rows", type=int, default=100_000)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"
                                                / "api-latest.json"))
    args = parser.parse_args(argv)
    if args.import_only:
        return import_only(args)
    if not args.url:
        parser.error("--url is required (or --import-only)")
    url = urlsplit(args.url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1") or not url.port:
        parser.error("--url must be on loopback")
    if not (0 < args.duration <= 120 and 1 <= args.connections <= 64
            and 1 <= args.import_rows <= 200_000):
        parser.error("keep it bounded")

    app = create_app({"API_RATE_LIMIT_PER_MINUTE": 10**9})
    with app.app_context():
        token, tenant_id = prepare()
        db.engine.dispose()
    cookie = sign_in(url.hostname, url.port, EMAIL)
    pool = multiprocessing.get_context("fork").Pool(args.connections)
    try:
        print(f"  ceiling GET /ping: {args.duration:g}s x {args.connections}", file=sys.stderr)
        load(pool, _get_loop, url.hostname, url.port, cookie, 2, args.connections)  # warm-up
        ceiling = load(pool, _get_loop, url.hostname, url.port, cookie, args.duration,
                       args.connections)
        print(f"  POST /api/v1/items: {args.duration:g}s x {args.connections}", file=sys.stderr)
        load(pool, _post_loop, url.hostname, url.port, token, 2, args.connections)
        posts = load(pool, _post_loop, url.hostname, url.port, token, args.duration,
                     args.connections)
    finally:
        pool.close()
        pool.join()
    with app.app_context():
        imported = import_part(tenant_id, args.import_rows)
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "connections": args.connections, "duration_s": args.duration,
        "ceiling_get_ping": ceiling, "post_items": posts,
        "post_items_ratio": posts["rps"] / ceiling["rps"] if ceiling["rps"] else None,
        **imported,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"{'':28}{'rate':>12}{'ratio':>10}")
    print(f"{'GET /ping (ceiling)':28}{ceiling['rps']:>10.1f}/s{1:>10.2f}")
    print(f"{'POST /api/v1/items':28}{posts['rps']:>10.1f}/s{report['post_items_ratio']:>10.3f}"
          f"   p50 {posts['p50_ms']:.1f} ms, {posts['errors']} errors")
    print_import(imported)
    print(f"\nWritten to {output}")
    return 1 if posts["errors"] or ceiling["errors"] or \
        imported["csv_import"]["created"] != args.import_rows else 0


def import_only(args) -> int:
    if not 1 <= args.import_rows <= 200_000:
        raise SystemExit("keep it bounded")
    app = create_app()
    with app.app_context():
        _token, tenant_id = prepare()
        report = import_part(tenant_id, args.import_rows)
    print()
    print(f"{'':28}{'rate':>12}{'ratio':>10}")
    print_import(report)
    return 0 if report["csv_import"]["created"] == args.import_rows else 1


if __name__ == "__main__":
    sys.exit(main())
