"""A link token is a credential until used: it must not reach the access logs of the real
servers (gunicorn with the repository's gunicorn.conf.py, and werkzeug's dev server)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from werkzeug.serving import make_server

from tests.approvals.conftest import ROOT, free_port

TOKEN = "ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6MDEyMzQ1Njc4OSI.c2lnbmF0dXJlLXBhcnQtaGVyZQ"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_gunicorn_access_log_redacts_link_tokens(app, tmp_path):
    port = free_port()
    access_log = tmp_path / "access.log"
    env = dict(os.environ, DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
               REDIS_URL=app.config["REDIS_URL"], SECRET_KEY=app.config["SECRET_KEY"])
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}",
         "--access-logfile", str(access_log), "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while _get_or_none(f"http://127.0.0.1:{port}/healthz") is None:
            assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
            time.sleep(0.1)
        assert _get(f"http://127.0.0.1:{port}/a/{TOKEN}") == 400
        _get(f"http://127.0.0.1:{port}/login?next=%2Fa%2F{TOKEN}")
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    logged = access_log.read_text()
    assert "GET /a/[redacted]" in logged and "next=%2Fa%2F[redacted]" in logged
    assert TOKEN not in logged and TOKEN not in output


def _get_or_none(url: str) -> int | None:
    try:
        return _get(url)
    except OSError:
        return None


def test_werkzeug_request_log_redacts_link_tokens(app, caplog, monkeypatch):
    # Alembic's logging set-up (run by the suite's migrations) disables existing loggers.
    monkeypatch.setattr(logging.getLogger("werkzeug"), "disabled", False)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        thread.start()
        try:
            assert _get(f"http://127.0.0.1:{server.server_port}/a/{TOKEN}") == 400
            deadline = time.monotonic() + 5  # the line is logged after the response is sent
            while "/a/" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
    assert "/a/[redacted]" in caplog.text
    assert TOKEN not in caplog.text
