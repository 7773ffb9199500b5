"""One commit per unit of work (a request, a job, a CLI command), then the outbox relay."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.extensions import db
from app.outbox.services import forget_pending, relay, take_pending


def savepoint():
    """`with savepoint():` - a part of the unit of work that can fail alone (one item of a bulk
    action, an insert that may lose a race). On SQLite the driver opens the real transaction
    only before a write, and a SAVEPOINT outside one behaves as BEGIN, so its release would
    commit: open the transaction first (deferred, so no lock is taken until the first write)."""
    session = db.session()
    if session.get_bind().dialect.name == "sqlite":
        connection = session.connection()
        if not connection.connection.dbapi_connection.in_transaction:
            connection.exec_driver_sql("BEGIN")
    return session.begin_nested()


def commit() -> None:
    """Commit the current transaction; on success hand its outbox messages to RQ."""
    session = db.session()
    try:
        session.commit()
    except Exception:
        session.rollback()
        raise
    ids = take_pending(session)
    if ids and current_app.config.get("OUTBOX_RELAY_ON_COMMIT", True):
        relay(ids)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending_outbox(session, transaction):
    # A rolled-back savepoint (one item of a bulk action) takes only its own messages with
    # it; take_pending skips those, since their rows were never committed.
    if not transaction.nested:
        forget_pending(session)
