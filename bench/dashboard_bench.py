"""The manager dashboard at two volumes of history, on PostgreSQL: its response time for one
tenant and 90 days with N items and with 10 x N, against /healthz in the same run. Called by
scripts/bench.sh (BENCH_PARTS=dashboard); each volume gets its own database, seeded with
`flask seed-demo --items`, and its own gunicorn; the requests to both go in turn, so that
both volumes and /healthz see the same load.

Goals (issue #6): time(1,000,000) <= 1.5 x time(100,000) (the rollups keep the cost from
growing with history) and time(dashboard) <= 20 x time(/healthz).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import _request, sign_in  # noqa: E402  (same directory)

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MANAGER = "manager@cleardesk.demo"
BLOCK = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list[str], env: dict) -> str:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare(base_url: str, items: int, env: dict, reuse: bool) -> tuple[str, float | None]:
    """A fresh database seeded with `items` (or, with `reuse`, the one a previous run left);
    returns its URL and the seed time."""
    import sqlalchemy

    name = f"cleardesk_dashboard_{items}"
    url = f"{base_url}/{name}"
    admin = sqlalchemy.create_engine(f"{base_url}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                              {"n": name}).first()
        if reuse and exists:
            admin.dispose()
            return url, None
        conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    env = {**env, "DATABASE_URL": url}
    flask = [str(VENV_BIN / "flask"), "--app", "wsgi"]
    run([*flask, "db", "upgrade"], env)
    started = time.perf_counter()
    run([*flask, "seed-demo", "--items", str(items)], env)
    return url, time.perf_counter() - started


def wait_for(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"gunicorn did not listen on {port}")


def summary(path: str, times: list[float], size: int) -> dict:
    times = sorted(times)
    return {"path": path, "requests": len(times), "bytes": size,
            "p50_ms": statistics.median(times) * 1000,
            "mean_ms": statistics.fmean(times) * 1000,
            "p90_ms": times[max(0, int(len(times) * 0.9) - 1)] * 1000}


def tenant_id(port: int, cookie: str) -> int:
    """Northwind's id, read from the dashboard's own tenant choice."""
    import re

    _, _, page = _request("127.0.0.1", port, "GET", "/dashboard?tenant=all&days=7", cookie)
    match = re.search(r'<option value="(\d+)"[^>]*>Northwind', page)
    if not match:
        raise SystemExit("no northwind on the dashboard")
    return int(match.group(1))


def start_server(url: str, env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "--workers", "1", "--bind", f"127.0.0.1:{port}",
         "wsgi:app"], cwd=ROOT, env={**env, "DATABASE_URL": url},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port)
    return server, port


def measure(urls: list[str], env: dict, seconds: float, warmup: float) -> list[dict]:
    """Both volumes served at once; /healthz and the dashboard of each requested in turn, in
    blocks of BLOCK requests one at a time (each server warm within a block), so that all four
    see the same load on a shared machine."""
    servers = []
    try:
        targets = []  # (volume index, name, port, path, cookie)
        for index, url in enumerate(urls):
            server, port = start_server(url, env)
            servers.append(server)
            cookie = sign_in("127.0.0.1", port, MANAGER)
            dashboard = f"/dashboard?tenant={tenant_id(port, cookie)}&days=90"
            targets += [(index, "healthz", port, "/healthz", ""),
                        (index, "dashboard", port, dashboard, cookie)]
        results: dict = {}
        for phase, length in (("warmup", warmup), ("measure", seconds)):
            times = {(t[0], t[1]): [] for t in targets}
            sizes = {}
            deadline = time.perf_counter() + length
            while time.perf_counter() < deadline or min(map(len, times.values())) < 5:
                for index, name, port, path, cookie in targets:
                    for _ in range(BLOCK):
                        start = time.perf_counter()
                        status, _, body = _request("127.0.0.1", port, "GET", path, cookie)
                        if status != 200:
                            raise SystemExit(f"GET {path} answered {status}")
                        times[(index, name)].append(time.perf_counter() - start)
                        sizes[(index, name)] = len(body)
            results = {key: summary(next(t[3] for t in targets if (t[0], t[1]) == key),
                                    values, sizes[key]) for key, values in times.items()}
        return [{"healthz": results[(i, "healthz")], "dashboard": results[(i, "dashboard")],
                 "ratio_to_healthz": results[(i, "dashboard")]["p50_ms"]
                 / results[(i, "healthz")]["p50_ms"]} for i in range(len(urls))]
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", required=True,
                        help="postgresql+psycopg://user@127.0.0.1:PORT (no database)")
    parser.add_argument("--items", default="100000,1000000",
                        help="two volumes, comma-separated, smaller first")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--reuse", action="store_true",
                        help="measure the databases a previous run seeded, if they exist")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "dashboard.json"))
    args = parser.parse_args(argv)
    volumes = [int(v) for v in args.items.split(",")]
    if len(volumes) != 2 or volumes[0] >= volumes[1]:
        parser.error("--items takes two volumes, smaller first")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    prepared = []
    for items in volumes:
        print(f"  dashboard: seeding {items:,} items", file=sys.stderr)
        prepared.append(prepare(args.pg, items, env, args.reuse))
    print("  dashboard: measuring both volumes in turn", file=sys.stderr)
    measured = measure([url for url, _ in prepared], env, args.duration, args.warmup)
    runs = [{"items": items, "seed_seconds": seed_seconds, **m}
            for items, (_, seed_seconds), m in zip(volumes, prepared, measured)]
    small, large = runs
    growth = large["dashboard"]["p50_ms"] / small["dashboard"]["p50_ms"]
    goals = {
        f"dashboard at {large['items']:,} <= 1.5 x at {small['items']:,}": growth <= 1.5,
        "dashboard <= 20 x /healthz (both volumes)": all(r["ratio_to_healthz"] <= 20
                                                          for r in runs),
    }
    report = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "runs": runs, "growth": growth, "goals": goals}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print("\nManager dashboard, one tenant, 90 days (PostgreSQL, gunicorn 1 worker per volume, "
          "one request at a time, in turn):")
    print(f"{'items':>10} {'seed s':>8} {'healthz p50':>12} {'dashboard p50':>14} "
          f"{'dashboard p90':>14} {'x healthz':>10}")
    for r in runs:
        seeded = f"{r['seed_seconds']:>8.1f}" if r["seed_seconds"] is not None else f"{'reused':>8}"
        print(f"{r['items']:>10,} {seeded} {r['healthz']['p50_ms']:>10.2f}ms "
              f"{r['dashboard']['p50_ms']:>12.2f}ms {r['dashboard']['p90_ms']:>12.2f}ms "
              f"{r['ratio_to_healthz']:>10.1f}")
    print(f"growth {large['items']:,} / {small['items']:,}: {growth:.2f}")
    for goal, met in goals.items():
        print(f"  {'met ' if met else 'MISSED'}  {goal}")
    print(f"\nWritten to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
