"""Request bodies are bounded on every route, whether the client sends their length or sends
them chunked (no Content-Length): the API answers 413 with a problem, pages with a 413 page;
imports take larger files. Chunked bodies are sent through a real socket to a real server,
werkzeug's and gunicorn's, since the test client hands a body without a length to no one."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.unit_of_work import commit
from tests.approvals.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
TEN_MB = 10 * 1024 * 1024


@pytest.fixture
def token(app, make_tenant):
    from app.api.tokens import issue_token
    from tests.conftest import SYSTEM

    tenant = make_tenant()
    _row, secret = issue_token(SYSTEM, tenant.id, "billing", ("items:read", "items:write"))
    commit()
    return secret


@pytest.fixture
def gunicorn_server(app, config):
    """The app as production runs it: gunicorn, one sync worker, on the test database."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": config["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": config["REDIS_URL"], "SECRET_KEY": "body-limit-tests",
           "OUTBOX_RELAY_ON_COMMIT": "0"}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "--workers", "1", "--bind",
         f"127.0.0.1:{port}", "--timeout", "60", "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


@pytest.fixture(params=["werkzeug", "gunicorn"])
def server(request):
    name = "live_server" if request.param == "werkzeug" else "gunicorn_server"
    return request.getfixturevalue(name)


def send_chunked(base_url: str, path: str, size: int, headers: dict[str, str],
                 chunk: bytes = b"x", whole: bytes | None = None
                 ) -> tuple[int, dict[str, str], bytes]:
    """POST `size` bytes with Transfer-Encoding: chunked over a raw socket; return the status,
    headers and body of the answer. The body is sent from a thread while the answer is read,
    as a server may answer (and stop reading) before the client has finished sending."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Transfer-Encoding: chunked",
            "Connection: close", *[f"{k}: {v}" for k, v in headers.items()], "", ""]
    piece = (chunk * (64 * 1024 // len(chunk) + 1))[:64 * 1024]

    def send():
        try:
            sock.sendall("\r\n".join(head).encode())
            if whole is not None:  # a body of our own, sent in small chunks
                for start in range(0, len(whole), 100):
                    part = whole[start:start + 100]
                    sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            left = 0 if whole is not None else size
            while left > 0:
                part = piece[:left]
                sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                left -= len(part)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: what we want to read

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    try:
        while not _complete(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the answer is in: stop the sender too
        except OSError:
            pass  # the server has closed it already
        sender.join(timeout=30)
        sock.close()
    head_part, _, body = answer.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1."), f"no HTTP answer: {answer[:200]!r}"
    status = int(lines[0].split()[1])
    response_headers = {k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines[1:])}
    if response_headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return status, response_headers, body


def _complete(answer: bytes) -> bool:
    """Has the whole answer arrived (by its Content-Length or its last chunk)?"""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.decode("latin-1").lower().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip() == "content-length":
            return len(body) >= int(value)
    return body.endswith(b"0\r\n\r\n")


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def test_a_chunked_api_body_over_the_limit_is_a_413_problem(server, token):
    status, headers, body = send_chunked(
        server, "/api/v1/items", TEN_MB,
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["detail"] == "The body is larger than 262,144 bytes."


def test_a_chunked_api_body_within_the_limit_is_read_whole(server, token):
    from tests.api.conftest import item_payload

    status, _headers, body = send_chunked(
        server, "/api/v1/items", 0,
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        whole=json.dumps(item_payload(title="Sent in chunks " + "x" * 200)).encode())
    assert status == 201, body
    assert json.loads(body)["title"].startswith("Sent in chunks")


def test_a_chunked_form_body_over_the_limit_is_a_413_page(server):
    status, headers, body = send_chunked(
        server, "/login", TEN_MB, {"Content-Type": "application/x-www-form-urlencoded"},
        chunk=b"email=a&")
    assert status == 413
    assert headers["content-type"].startswith("text/html")
    assert b"larger than" in body


def test_an_api_body_over_the_limit_with_its_length_is_a_413_problem(client, token):
    response = client.post("/api/v1/items", data=b"{" + b" " * 300_000 + b"}",
                           headers={"Authorization": f"Bearer {token}",
                                    "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"


def test_a_form_over_the_limit_with_its_length_is_a_413_page(client):
    response = client.post("/login", data={"email": "a" * 2_000_000, "password": "x"})
    assert response.status_code == 413
    assert "larger than" in response.text


def test_an_import_may_be_larger_than_a_form(app):
    from app.imports.services import MAX_BYTES
    from app.params import body_limit_of

    assert body_limit_of(app, "imports.upload") > MAX_BYTES
    assert body_limit_of(app, "auth.login") == app.config["MAX_CONTENT_LENGTH"]
    assert body_limit_of(app, "api.create_item") == 256 * 1024
