"""One commit per unit of work (a request, a job, a CLI command), then the outbox relay."""
from __future__ import annotations

from collections.abc import Callable

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


def database_unreachable(error: BaseException) -> bool:
    """Whether a unit of work failed because the database could not be reached (down,
    restarting, a connection cut) rather than because of what it did: then nothing that reads
    the database may answer it, and the answer is 503 (try again), not 500."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    original = getattr(error, "original_exception", None) or error
    return isinstance(original, (OperationalError, InterfaceError)) or (
        isinstance(original, DBAPIError) and original.connection_invalidated)


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


class CommitTimeList:
    """Values a unit of work collects (audit events, rollup changes) to write when it commits,
    so the rows they lock are held for the commit only, not for the whole unit of work. What a
    savepoint collected goes with it if it rolls back; everything goes if the transaction does.

    `write(session, values)` runs in the commit, after the last flush, in `order` among the
    lists (lowest first)."""

    _all: list[CommitTimeList] = []

    def __init__(self, name: str, write: Callable[[Session, list], None], order: int) -> None:
        self.key = f"cleardesk_commit_time_{name}"
        self.write, self.order = write, order
        CommitTimeList._all.append(self)
        CommitTimeList._all.sort(key=lambda c: c.order)

    def add(self, session: Session, value) -> None:
        session.info.setdefault(self.key, []).append(value)

    def values(self, session: Session) -> list:
        return session.info.get(self.key, [])


_MARKS = "cleardesk_commit_time_marks"


@event.listens_for(Session, "before_commit")
def _write_commit_time_lists(session) -> None:
    if session.in_nested_transaction():  # a released savepoint keeps its values pending
        return
    # The last flush, here rather than after this hook: it may collect more (rollup changes).
    session.flush()
    for collected in CommitTimeList._all:
        values = session.info.pop(collected.key, None)
        if values:
            collected.write(session, values)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session, transaction) -> None:
    if transaction.nested:
        session.info.setdefault(_MARKS, {})[transaction] = {
            c.key: len(c.values(session)) for c in CommitTimeList._all}


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back_values(session, transaction) -> None:
    if transaction.nested:
        marks = session.info.get(_MARKS, {}).pop(transaction, None) or {}
        for key, mark in marks.items():
            if session.info.get(key):
                del session.info[key][mark:]
    else:
        for collected in CommitTimeList._all:
            session.info.pop(collected.key, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_transaction(session, transaction) -> None:
    # The root transaction ended (committed, rolled back or closed): nothing carries over.
    # (A savepoint's mark stays until then: its rollback is announced after it has ended.)
    if transaction.parent is None and not transaction.nested:
        for collected in CommitTimeList._all:
            session.info.pop(collected.key, None)
        session.info.pop(_MARKS, None)
