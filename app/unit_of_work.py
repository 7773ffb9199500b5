"""One commit per unit of work (a request, a job, a CLI command), then the outbox relay."""
from __future__ import annotations

from collections.abc import Callable

from flask import current_app
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from app.extensions import db


def database_unreachable(error: BaseException) -> bool:
    """Whether a unit of work failed because the database could not be reached (down,
    restarting, a connection cut) rather than because of what it did: then nothing that reads
    the database may answer it, and the answer is 503 (try again), not 500."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    original = getattr(error, "original_exception", None) or error
    return isinstance(original, (OperationalError, InterfaceError)) or (
        isinstance(original, DBAPIError) and original.connection_invalidated)


class UnitOfWork:
    """What one request, job or command does, saved together or not at all.

    The write path collects here, as it goes, what must be written with the change but only
    at the end (so the rows they lock are held for the commit only): the rollup changes, the
    "assigned to you" notices and the audit events; and the outbox messages to hand to RQ once
    the commit has made them real. `finish()` writes them and commits, in the order it reads;
    `abort()` forgets everything. A savepoint (`savepoint()`) that rolls back takes back what
    was collected inside it.

    The modules that own the rows register how they are written (`register_writer`), so this
    module, below them all, imports none of them."""

    # The order of writing, top to bottom: the rollup rows first; the notices next (they
    # become an outbox message); the audit events last, since the chain's head row is the
    # most contended lock a writer takes.
    WRITE_ORDER = ("rollup_deltas", "assignment_notices", "audit_events")
    _writers: dict[str, Callable[[Session, list], None]] = {}
    _relay: Callable[[list], object] | None = None

    def __init__(self, session: Session) -> None:
        self.session = session
        self.collected: dict[str, list] = {name: [] for name in self.WRITE_ORDER}
        self.outbox: list = []  # outbox messages (rows, or ids of rows inserted in bulk)
        self.savepoint_marks: dict = {}  # savepoint -> how much was collected when it began

    def add(self, name: str, value) -> None:
        self.collected[name].append(value)

    def add_outbox(self, *messages) -> None:
        self.outbox.extend(messages)

    def write_collected(self) -> None:
        """Write what was collected, after the last flush (which may collect more)."""
        self.session.flush()
        for name in self.WRITE_ORDER:
            values, self.collected[name] = self.collected[name], []
            if values:
                self._writers[name](self.session, values)

    def finish(self) -> None:
        """Write what was collected, commit, then hand the outbox messages to RQ (a Redis
        that is down only delays them: the sweep relays what is left)."""
        try:
            self.write_collected()
            self.session.commit()
        except Exception:
            self.session.rollback()
            raise
        # The transaction ended: this unit is done; the session starts a new one on its next use.
        ids = [m if isinstance(m, int) else m.id for m in self.outbox
               if isinstance(m, int) or inspect(m).has_identity]
        self.outbox = []
        if ids and current_app.config.get("OUTBOX_RELAY_ON_COMMIT", True) and self._relay:
            type(self)._relay(ids)

    def abort(self) -> None:
        """Nothing of this unit is kept."""
        self.session.rollback()

    def has_collected(self) -> bool:
        return bool(self.outbox) or any(self.collected.values())

    def drop_since(self, mark: tuple[dict[str, int], int]) -> None:
        counts, outbox = mark
        for name, count in counts.items():
            del self.collected[name][count:]
        del self.outbox[outbox:]

    def mark(self) -> tuple[dict[str, int], int]:
        return {n: len(v) for n, v in self.collected.items()}, len(self.outbox)


_KEY = "cleardesk_unit_of_work"


def register_writer(name: str, write: Callable[[Session, list], None]) -> None:
    """How the owner of collected values (`name`, one of UnitOfWork.WRITE_ORDER) writes them."""
    if name not in UnitOfWork.WRITE_ORDER:
        raise ValueError(f"{name!r} has no place in UnitOfWork.WRITE_ORDER")
    UnitOfWork._writers[name] = write


def register_relay(relay: Callable[[list], object]) -> None:
    """How committed outbox messages are handed to the queue (app.outbox.services.relay)."""
    UnitOfWork._relay = relay


def unit_of_work(session: Session | None = None) -> UnitOfWork:
    """The unit of work of the session's current transaction (one begins with it)."""
    session = session or db.session()
    unit = session.info.get(_KEY)
    if unit is None:
        unit = session.info[_KEY] = UnitOfWork(session)
    return unit


def commit() -> None:
    """Finish the current unit of work: write what it collected, commit, relay its outbox.
    For jobs and commands between batches, and for tests; a request's unit is finished by the
    request wrapper (app.web), and a route that must save something before it answers (a
    token's use, a failed sign-in) says so with `commit_now`."""
    unit_of_work().finish()


def commit_now(why: str) -> None:
    """A deliberate commit inside a request, before its end: `why` says what must be saved
    whatever happens next (read by people, not by the code)."""
    unit_of_work().finish()


def abort() -> None:
    """Roll back the current unit of work: nothing of it is kept."""
    unit_of_work().abort()


def savepoint():
    """`with savepoint():` - a part of the unit of work that can fail alone (one item of a bulk
    action, an insert that may lose a race); if it rolls back, what it collected goes with it.
    On SQLite the driver opens the real transaction only before a write, and a SAVEPOINT
    outside one behaves as BEGIN, so its release would commit: open the transaction first
    (deferred, so no lock is taken until the first write)."""
    session = db.session()
    if session.get_bind().dialect.name == "sqlite":
        connection = session.connection()
        if not connection.connection.dbapi_connection.in_transaction:
            connection.exec_driver_sql("BEGIN")
    return session.begin_nested()


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session, transaction) -> None:
    if transaction.nested:
        unit = unit_of_work(session)
        unit.savepoint_marks[transaction] = unit.mark()


@event.listens_for(Session, "after_soft_rollback")
def _drop_what_the_savepoint_collected(session, transaction) -> None:
    unit = session.info.get(_KEY)
    if transaction.nested and unit is not None:
        mark = unit.savepoint_marks.pop(transaction, None)
        if mark is not None:
            unit.drop_since(mark)


@event.listens_for(Session, "before_commit")
def _refuse_commit_around_the_unit(session) -> None:
    # A bare session.commit() would save the change without its audit events and rollups.
    unit = session.info.get(_KEY)
    if unit is not None and not session.in_nested_transaction() and any(
            unit.collected.values()):
        raise RuntimeError("commit through the unit of work (app.unit_of_work.commit), "
                           "not session.commit(): it has audit events or rollups to write")


@event.listens_for(Session, "after_transaction_end")
def _end_unit(session, transaction) -> None:
    # The root transaction ended (committed, rolled back or closed): its unit ends with it.
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_KEY, None)
