"""Webhook fixtures: a real HTTP receiver that checks signatures the way a partner would
(written here from the documented scheme, not with our code), an SMTP inbox, and a real
`flask worker --burst` process."""
from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.approvals.conftest import inbox, relaying  # noqa: F401  (fixtures)
from tests.approvals.conftest import free_port
from tests.approvals.conftest import run_worker as run_app_worker


class Receiver:
    """A partner's endpoint: verifies `Cleardesk-Signature` (HMAC-SHA256 of "<t>.<body>",
    timestamps within five minutes), remembers every delivery it was sent and processes each
    delivery id once. `fail_next` answers that many requests with 500 first."""

    def __init__(self, secret: str | None = None):
        self.secret = secret
        self.port = free_port()
        self.received: list[dict] = []  # every request, verified or not
        self.processed: dict[str, dict] = {}  # delivery id -> body, once each
        self.bad_signatures = 0
        self.fail_next = 0
        # Close the connection after each answer without saying so (no "Connection: close"),
        # as a proxy with a short idle timeout does.
        self.close_after_each = False
        self.server = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/cleardesk"

    def verify(self, header: str, body: bytes) -> bool:
        try:
            parts = dict(p.split("=", 1) for p in header.split(","))
            timestamp = int(parts["t"])
        except (ValueError, KeyError):
            return False
        if abs(time.time() - timestamp) > 300:
            return False
        expected = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts.get("v1", ""))

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps the connection open, as a real receiver

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = receiver.verify(self.headers.get("Cleardesk-Signature", ""), body)
                delivery_id = self.headers.get("Cleardesk-Delivery")
                with receiver.lock:
                    receiver.received.append({"id": delivery_id, "ok": ok,
                                              "event": self.headers.get("Cleardesk-Event"),
                                              "connection": self.client_address})
                    if not ok:
                        receiver.bad_signatures += 1
                        status = 401
                    elif receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        status = 500
                    else:
                        receiver.processed.setdefault(delivery_id, json.loads(body))
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if receiver.close_after_each:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def run_worker(app, **env_extra) -> subprocess.CompletedProcess:
    """A real RQ worker process with the webhook settings of the app (private targets allowed
    only when the app allows them), until the queue is empty."""
    config = app.config
    return run_app_worker(
        app, timeout=180,
        WEBHOOK_RETRY_BASE_SECONDS=str(config["WEBHOOK_RETRY_BASE_SECONDS"]),
        WEBHOOK_MAX_ATTEMPTS=str(config["WEBHOOK_MAX_ATTEMPTS"]),
        WEBHOOK_PAUSE_AFTER=str(config["WEBHOOK_PAUSE_AFTER"]),
        WEBHOOK_TIMEOUT_SECONDS="5",
        WEBHOOK_BATCH_SIZE=str(config["WEBHOOK_BATCH_SIZE"]),
        WEBHOOK_ALLOW_PRIVATE_TARGETS="1" if config.get("WEBHOOK_ALLOW_PRIVATE_TARGETS") else "0",
        **env_extra)
