"""Measure a running Cleardesk: a trivial signed-in endpoint (the ceiling) and the real pages
against it, with wrk or a process-per-connection Python client. Called by scripts/bench.sh.

Loopback only, bounded in time: each endpoint gets a short warm-up and then `--duration`
seconds of `--connections` concurrent connections.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

EMAIL = "approver@cleardesk.demo"
MANAGER = "manager@cleardesk.demo"  # the Team queue (every open item) is the deepest queue
FRAGMENT = {"HX-Request": "true", "HX-Target": "queue-results"}
PAGE_SIZE = 50
PASSWORD = "demo-password"
# Flask-Login's "strong" session protection ties the session to the address and user agent,
# so every request of a run, the sign-in included, sends the same one.
USER_AGENT = "cleardesk-bench/1"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class BenchError(RuntimeError):
    pass


# --- signing in --------------------------------------------------------------------------

def _request(host: str, port: int, method: str, path: str, cookie: str = "",
             body: str | None = None, extra: dict | None = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"User-Agent": USER_AGENT, **(extra or {})}
    if cookie:
        headers["Cookie"] = cookie
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        return response.status, response, text
    finally:
        conn.close()


def _cookies(response, jar: dict) -> dict:
    for header in response.headers.get_all("Set-Cookie") or []:
        for name, morsel in SimpleCookie(header).items():
            jar[name] = morsel.value
    return jar


def _cookie_header(jar: dict) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def sign_in(host: str, port: int, email: str = EMAIL) -> str:
    """Sign in through the real form; return the Cookie header of the signed-in session."""
    status, response, page = _request(host, port, "GET", "/login")
    if status != 200:
        raise BenchError(f"GET /login answered {status}")
    jar = _cookies(response, {})
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or \
        re.search(r'value="([^"]+)"[^>]*name="csrf_token"', page)
    if not match:
        raise BenchError("no csrf_token on the login page")
    form = urlencode({"csrf_token": match.group(1), "email": email, "password": PASSWORD})
    status, response, _ = _request(host, port, "POST", "/login", _cookie_header(jar), form)
    if status not in (302, 303):
        raise BenchError(f"POST /login answered {status}, not a redirect: sign-in failed")
    cookie = _cookie_header(_cookies(response, jar))
    status, _, text = _request(host, port, "GET", "/ping", cookie)
    if status != 200 or text.strip() != "ok":
        raise BenchError(f"GET /ping with the session answered {status}: not signed in")
    return cookie


def pick_item(host: str, port: int, cookie: str) -> int:
    """An item the approver can open: the newest one in their Unassigned queue."""
    status, _, page = _request(host, port, "GET", "/queues/unassigned", cookie)
    if status != 200:
        raise BenchError(f"GET /queues/unassigned answered {status}")
    match = re.search(r'href="/items/(\d+)"', page)
    if not match:
        raise BenchError("the Unassigned queue is empty; seed more items")
    return int(match.group(1))


def deep_page(host: str, port: int, cookie: str, base: str, page: int) -> tuple[str, int]:
    """Follow the queue's own "load more" links to page `page` (or the last page there is);
    return that page's path and its number. Keyset cursors cannot be jumped to: walking is
    what a person scrolling does, and it checks every link on the way."""
    path, reached = base, 1
    while reached < page:
        status, _, body = _request(host, port, "GET", path, cookie, extra={"HX-Request": "true"})
        if status != 200:
            raise BenchError(f"GET {path} answered {status} while walking to page {page}")
        more = re.search(r'hx-get="([^"]*after=[^"]*)"', body)
        if not more:
            break
        path, reached = more.group(1).replace("&amp;", "&"), reached + 1
    return path, reached


def decidable_items(host: str, port: int, cookie: str,
                    wanted: int) -> tuple[list[int], str, str]:
    """Up to `wanted` items the approver may decide now (their Approvals queue, oldest first,
    walked by its own "load more" links), the page's CSRF token for the POSTs and the session
    cookie that goes with it (the page may have put the token's secret in the session)."""
    status, response, page = _request(host, port, "GET", "/queues/approvals?sort=age", cookie)
    if status != 200:
        raise BenchError(f"GET /queues/approvals answered {status}")
    jar = dict(part.split("=", 1) for part in cookie.split("; ") if "=" in part)
    cookie = _cookie_header(_cookies(response, jar))
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page)
    if not token:
        raise BenchError("no CSRF token on the queue page")
    ids: list[int] = []
    body = page
    while len(ids) < wanted:
        ids += [int(i) for i in re.findall(r'id="row-(\d+)"', body) if int(i) not in ids]
        more = re.search(r'hx-get="([^"]*after=[^"]*)"', body)
        if not more:
            break
        status, _, body = _request(host, port, "GET", more.group(1).replace("&amp;", "&"),
                                    cookie, extra={"HX-Request": "true"})
        if status != 200:
            raise BenchError(f"walking the Approvals queue answered {status}")
    return ids[:wanted], token.group(1), cookie


def _approve_loop(args: tuple) -> tuple[list[float], int, int]:
    """One connection approving its own items from the pane, one after another, as a person
    pressing "a" does: the answer is the new pane, the row and the queue counts."""
    host, port, cookie, token, ids, seconds, base = args
    headers = {"User-Agent": USER_AGENT, "Cookie": cookie, "HX-Request": "true",
               "X-CSRFToken": token, "HX-Current-URL": f"{base}/queues/approvals",
               "Content-Type": "application/x-www-form-urlencoded"}
    latencies: list[float] = []
    other = failed = 0
    deadline = time.perf_counter() + seconds
    for item_id in ids:
        start = time.perf_counter()
        if start >= deadline:
            break
        body = urlencode({"csrf_token": token, "action": "approve", "comment": "bench",
                          "queue": "approvals", "filters": "sort=age"})
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("POST", f"/items/{item_id}/act", body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            failed += 1
            continue
        finally:
            conn.close()
        if response.status == 200 and 'id="queue-counts"' in text:
            latencies.append(time.perf_counter() - start)
        else:
            other += 1
    return latencies, other, failed


def run_approvals(pool, host: str, port: int, cookie: str, token: str, ids: list[int],
                  seconds: float, connections: int) -> dict:
    started = time.perf_counter()
    slices = [ids[n::connections] for n in range(connections)]
    parts = pool.map(_approve_loop, [(host, port, cookie, token, part, seconds,
                                      f"http://{host}:{port}") for part in slices])
    elapsed = time.perf_counter() - started
    latencies = sorted(x for lat, _, _ in parts for x in lat)
    return {
        "requests": len(latencies), "errors": sum(o + f for _, o, f in parts),
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": _percentile(latencies, 50) * 1000, "p99_ms": _percentile(latencies, 99) * 1000,
    }


# --- load: the Python client -------------------------------------------------------------

def _connection_loop(args: tuple) -> tuple[list[float], int, int]:
    """One connection's closed loop: request, wait for the answer, repeat until the deadline.
    Returns latencies in seconds of the 200s, the count of other answers and of failures."""
    host, port, path, cookie, seconds, extra = args
    headers = {"User-Agent": USER_AGENT, "Cookie": cookie, **extra}
    latencies: list[float] = []
    other = failed = 0
    conn = http.client.HTTPConnection(host, port, timeout=30)
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        if start >= deadline:
            break
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            failed += 1
            conn.close()
            continue
        if response.status == 200:
            latencies.append(time.perf_counter() - start)
        else:
            other += 1
        if response.will_close:  # gunicorn's sync workers close after each answer
            conn.close()
    conn.close()
    return latencies, other, failed


def run_python(pool, host: str, port: int, path: str, cookie: str, seconds: float,
               connections: int, extra: dict | None = None) -> dict:
    # A process per connection, so the client's GIL does not become the ceiling.
    started = time.perf_counter()
    parts = pool.map(_connection_loop,
                     [(host, port, path, cookie, seconds, extra or {})] * connections)
    elapsed = time.perf_counter() - started
    latencies = sorted(x for lat, _, _ in parts for x in lat)
    other = sum(o for _, o, _ in parts)
    failed = sum(f for _, _, f in parts)
    return {
        "requests": len(latencies), "errors": other + failed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": _percentile(latencies, 50) * 1000, "p99_ms": _percentile(latencies, 99) * 1000,
    }


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, math.ceil(pct / 100 * len(values)) - 1))  # nearest rank
    return values[index]


# --- load: wrk ---------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * _UNITS[unit]


def run_wrk(wrk: str, host: str, port: int, path: str, cookie: str, seconds: float,
            connections: int, extra: dict | None = None) -> dict:
    threads = max(1, min(connections, 4))
    headers = [arg for k, v in (extra or {}).items() for arg in ("-H", f"{k}: {v}")]
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               "--latency", "--timeout", "30s", "-H", f"Cookie: {cookie}",
               "-H", f"User-Agent: {USER_AGENT}", *headers, f"http://{host}:{port}{path}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         timeout=seconds + 60).stdout
    try:
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = _wrk_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
        p99 = _wrk_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    except AttributeError:
        raise BenchError(f"could not read wrk's output:\n{out}") from None
    # wrk counts 3xx as success; a lost session would show up as redirects to /login.
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    if socket_errors:
        # Read errors are the sync workers closing kept-alive connections, not failures.
        connect, _read, write, timeout = map(int, socket_errors.groups())
        errors += connect + write + timeout
    return {"requests": requests, "errors": errors, "rps": rps, "p50_ms": p50, "p99_ms": p99}


# --- the run -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the app, on loopback")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--items", type=int, default=None, help="items seeded (for the report)")
    parser.add_argument("--seed-seconds", type=float, default=None)
    parser.add_argument("--verify-seconds", type=float, default=None)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (for the report)")
    parser.add_argument("--deep-page", type=int, default=1000,
                        help="the queue page compared with the first (keyset paging)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "latest.json"))
    args = parser.parse_args(argv)

    url = urlsplit(args.url)
    if url.scheme != "http" or url.hostname not in LOOPBACK or not url.port:
        parser.error("--url must be http://127.0.0.1:PORT: the bench only loads loopback")
    if not (0 < args.duration <= 120 and 0 <= args.warmup <= 30 and 1 <= args.connections <= 64):
        parser.error("keep it bounded: duration 0-120 s, warm-up 0-30 s, 1-64 connections")
    host, port = url.hostname, url.port

    wrk = shutil.which("wrk")
    client = args.client
    if client == "auto":
        client = "wrk" if wrk else "python"
    if client == "wrk" and not wrk:
        parser.error("--client wrk, but wrk is not installed")

    cookie = sign_in(host, port)
    manager = sign_in(host, port, MANAGER)
    item_id = pick_item(host, port, cookie)
    filtered = "/queues/approvals?min_amount=1000&sort=amount"
    print(f"  walking the Team queue to page {args.deep_page}", file=sys.stderr)
    deep_path, deep_reached = deep_page(host, port, manager, "/queues/team", args.deep_page)
    # (name, path, session, extra headers)
    endpoints = [
        ("ceiling", "/ping", cookie, {}),
        ("unassigned queue", "/queues/unassigned", cookie, {}),
        ("filtered fragment", filtered, cookie, FRAGMENT),
        ("item detail", f"/items/{item_id}", cookie, {}),
        ("team page 1", "/queues/team", manager, FRAGMENT),
        (f"team page {deep_reached}", deep_path, manager, {"HX-Request": "true"}),
    ]

    # Approving uses each item once: enough of them for the run, found before it starts.
    print("  finding items to approve from the pane", file=sys.stderr)
    approve_ids, token, approver = decidable_items(
        host, port, cookie, int(args.duration * args.connections * 40))
    results = []
    pool = multiprocessing.get_context("fork").Pool(args.connections)
    try:
        for name, path, session, extra in endpoints:
            print(f"  {name:<17} GET {path[:60]}: {args.warmup:g}s warm-up, {args.duration:g}s "
                  f"x {args.connections} connections ({client})", file=sys.stderr)
            if client == "wrk":
                def measure(seconds):
                    return run_wrk(wrk, host, port, path, session, seconds, args.connections,
                                   extra)
            else:
                def measure(seconds):
                    return run_python(pool, host, port, path, session, seconds,
                                      args.connections, extra)
            if args.warmup:
                measure(args.warmup)
            results.append({"name": name, "path": path, **measure(args.duration)})
        # The approvals are posted by the Python client (wrk does not post a form per item):
        # its own ceiling, /ping through the same client, is what they are compared with, as
        # the client's own cost on these CPUs is then in both.
        print(f"  ceiling (python)   GET /ping: {args.duration:g}s x {args.connections} "
              f"connections (python)", file=sys.stderr)
        python_ceiling = run_python(pool, host, port, "/ping", cookie, args.duration,
                                    args.connections, {})
        print(f"  approve in pane    POST /items/<id>/act: {len(approve_ids)} items, "
              f"{args.duration:g}s x {args.connections} connections (python)", file=sys.stderr)
        results.append({"name": "approve in pane", "path": "POST /items/<id>/act",
                        **run_approvals(pool, host, port, approver, token, approve_ids,
                                        args.duration, args.connections)})
    finally:
        pool.close()
        pool.join()
    # Still signed in afterwards: the numbers were not measured on the login page.
    status, _, _ = _request(host, port, "GET", "/ping", cookie)
    if status != 200:
        raise BenchError(f"the session was lost during the run (/ping answered {status})")

    ceiling = results[0]["rps"]
    for r in results:
        r["ratio"] = r["rps"] / ceiling if ceiling else None
    approve = results[-1]
    approve["ratio"] = (approve["rps"] / python_ceiling["rps"]) if python_ceiling["rps"] else None
    approve["ceiling_rps"] = python_ceiling["rps"]
    approve["ratio_to_wrk_ceiling"] = approve["rps"] / ceiling if ceiling else None
    by_name = {r["name"]: r for r in results}
    first, deep = by_name["team page 1"], by_name[f"team page {deep_reached}"]
    checks = {
        "unassigned queue >= 0.25 x ceiling": by_name["unassigned queue"]["ratio"] >= 0.25,
        "filtered fragment >= 0.25 x ceiling": by_name["filtered fragment"]["ratio"] >= 0.25,
        "filtered fragment p99 < 100 ms": by_name["filtered fragment"]["p99_ms"] < 100,
        "item detail >= 0.3 x ceiling": by_name["item detail"]["ratio"] >= 0.3,
        f"page {deep_reached} p50 <= 1.5 x page 1 p50": deep["p50_ms"] <= 1.5 * first["p50_ms"],
        "approve in pane >= 0.2 x ceiling": by_name["approve in pane"]["ratio"] >= 0.2,
    }

    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "items": args.items,
        "seed_seconds": args.seed_seconds,
        "audit_verify_seconds": args.verify_seconds,
        "client": client,
        "connections": args.connections,
        "duration_s": args.duration,
        "gunicorn_workers": args.workers,
        "database": "postgresql",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "endpoints": results,
        "deep_page": deep_reached,
        "goals": checks,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nWritten to {output}")
    return 1 if any(r["errors"] for r in results) else 0


def print_table(report: dict) -> None:
    print()
    if report["items"] is not None:
        line = f"Seeded {report['items']:,} items"
        if report["seed_seconds"] is not None:
            line += f" in {report['seed_seconds']:.1f}s"
            if report["items"]:
                line += f" ({report['items'] / report['seed_seconds']:,.0f} items/s)"
        print(line + " on PostgreSQL.")
    if report["audit_verify_seconds"] is not None:
        print(f"audit verify took {report['audit_verify_seconds']:.1f}s.")
    print(f"gunicorn {report['gunicorn_workers']} sync workers; {report['client']}, "
          f"{report['connections']} connections, {report['duration_s']:g}s per endpoint.\n")
    rows = [(f"{r['name']:<17} {r['path'][:50]}", r) for r in report["endpoints"]]
    width = max(len("endpoint"), *(len(label) for label, _ in rows))
    header = (f"{'endpoint':<{width}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} "
              f"{'errors':>6}")
    print(header)
    print("-" * len(header))
    for label, r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(f"{label:<{width}} {r['rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{ratio:>6} {r['errors']:>6}")
    for r in report["endpoints"]:
        if r.get("ceiling_rps") is not None:
            print(f"\n{r['name']}: compared with /ping through the same (python) client, "
                  f"{r['ceiling_rps']:.1f} req/s; against wrk's ceiling "
                  f"{r['ratio_to_wrk_ceiling']:.2f}.")
    if report.get("goals"):
        print()
        for goal, met in report["goals"].items():
            print(f"  {'met ' if met else 'MISSED'}  {goal}")


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        sys.exit(1)
