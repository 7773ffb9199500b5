"""Email-link fixtures: a real SMTP server (aiosmtpd) that keeps what it receives, a real
`flask worker --burst` process that sends the mail, and a team to route approvals to."""
from __future__ import annotations

import email
import email.policy
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from tests.conftest import empty_queues

ROOT = Path(__file__).resolve().parents[2]
LINK_RE = re.compile(r"https?://[^\s\"<>]+/a/[A-Za-z0-9_\-.]+")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """What the SMTP server received, parsed."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        with self._lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def to(self, address: str) -> list:
        return [m for m in self.messages if address in m["To"]]

    @staticmethod
    def text(message) -> str:
        return message.get_body(preferencelist=("plain",)).get_content()

    @staticmethod
    def html(message) -> str:
        return message.get_body(preferencelist=("html",)).get_content()

    def link(self, message) -> str:
        match = LINK_RE.search(self.text(message))
        assert match, "no approval link in the mail"
        return match.group(0)


@pytest.fixture
def inbox(app):
    box = Inbox()
    port = free_port()  # aiosmtpd's Controller cannot take port 0
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port,
                      APP_BASE_URL="http://cleardesk.test")
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def relaying(app):
    """Relay outbox messages to the test's own queue after each commit."""
    app.config["OUTBOX_RELAY_ON_COMMIT"] = True
    yield app
    empty_queues(app)


def run_worker(app, timeout: int = 120, **env_extra) -> subprocess.CompletedProcess:
    """A real RQ worker process with the app's database, queue, SMTP server and secret (and
    `env_extra`), until the queue is empty."""
    config = app.config
    env = dict(os.environ,
               DATABASE_URL=config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=config["REDIS_URL"],
               RQ_QUEUE=config["RQ_QUEUE"], SECRET_KEY=config["SECRET_KEY"],
               SMTP_HOST=config["SMTP_HOST"], SMTP_PORT=str(config["SMTP_PORT"]),
               APP_BASE_URL=config["APP_BASE_URL"],
               EMAIL_LINK_STEP_UP_ABOVE=str(config["EMAIL_LINK_STEP_UP_ABOVE"]), **env_extra)
    worker = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--burst",
         "--without-scheduler"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout)
    assert worker.returncode == 0, worker.stderr
    assert "Traceback" not in worker.stderr, worker.stderr
    return worker


@pytest.fixture
def team(make_tenant, make_user):
    tenant = make_tenant()
    tenant.brand_name, tenant.brand_color = "Northwind Finance", "#0f766e"
    from app.unit_of_work import commit

    commit()
    return {
        "tenant": tenant,
        "requester": make_user("req@x.test", [tenant], roles=("requester",), name="Rita Requester"),
        "approver": make_user("ann@x.test", [tenant], roles=("approver",), limit="60000",
                              name="Ann Approver"),
        "manager": make_user("max@x.test", [tenant], roles=("manager",), limit="1000000",
                             name="Max Manager"),
        "other": make_user("olly@x.test", [tenant], roles=("analyst",), name="Olly Other"),
    }
