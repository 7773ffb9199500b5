"""One commit per unit of work (a request, a job, a CLI command), then the outbox relay."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.extensions import db
from app.outbox.services import forget_pending, relay, take_pending


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


@event.listens_for(Session, "after_rollback")
def _drop_pending_outbox(session):
    forget_pending(session)
