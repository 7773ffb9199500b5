"""Health for load balancers and process managers:

- ``/livez``: the process answers (no I/O at all) — restart it when this fails;
- ``/readyz``: the database answers — send it traffic only then;
- ``/healthz``: the whole picture: 503 when the database is down; 200 "degraded" when Redis is
  down (decisions are still recorded; their mail and webhooks wait in the outbox, counted here,
  and leave when Redis is back); 200 "ok" otherwise."""
from __future__ import annotations

from flask import Flask, jsonify
from sqlalchemy import func, select, text

from app.access import allow
from app.extensions import db
from app.jobs import redis_connection
from app.outbox.models import OutboxMessage

# Counting the outbox stops here: "10000+" is answer enough for a health check.
OUTBOX_COUNT_CAP = 10_000


def _database() -> str | None:
    """None when the database answers; else what went wrong."""
    try:
        db.session.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        _forget_session()
        return f"error: {exc.__class__.__name__}"


def _forget_session() -> None:
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the connection is gone; the pool replaces it
        pass


def _outbox_waiting() -> int | str:
    waiting = db.session.scalar(select(func.count()).select_from(
        select(OutboxMessage.id).where(OutboxMessage.processed_at.is_(None))
        .limit(OUTBOX_COUNT_CAP + 1).subquery()))
    return f"{OUTBOX_COUNT_CAP}+" if waiting > OUTBOX_COUNT_CAP else waiting


def install_health(app: Flask) -> None:
    @app.get("/livez")
    @allow(anonymous=True)
    def livez():
        return jsonify({"status": "alive"})

    @app.get("/readyz")
    @allow(anonymous=True)
    def readyz():
        problem = _database()
        if problem:
            return jsonify({"status": "not ready", "database": problem}), 503
        return jsonify({"status": "ready", "database": "ok"})

    @app.get("/healthz")
    @allow(anonymous=True)
    def healthz():
        problem = _database()
        if problem:
            return jsonify({"status": "error", "database": problem}), 503
        body = {"status": "ok", "database": "ok", "redis": "ok"}
        try:
            redis_connection().ping()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            body["status"] = "degraded"
            body["redis"] = f"error: {exc.__class__.__name__}"
        body["outbox_waiting"] = _outbox_waiting()
        db.session.rollback()
        return jsonify(body)
