"""One commit per unit of work (a request, a job, a CLI command), then the outbox relay."""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from functools import wraps

from flask import Flask, current_app, request
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, scoped_session

from app.errors import DomainError
from app.extensions import db
from app.models import Membership, MembershipRole, Tenant, User

log = logging.getLogger(__name__)


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
    # Told, once a unit has committed, which tenants it changed (register_on_commit).
    _on_commit: list[Callable[[set], None]] = []

    def __init__(self, session: Session) -> None:
        self.session = session
        self.collected: dict[str, list] = {name: [] for name in self.WRITE_ORDER}
        # Outbox messages: rows, or (id, topic) of rows inserted in bulk.
        self.outbox: list = []
        self.savepoint_marks: dict = {}  # savepoint -> how much was collected when it began
        # Tenants whose audit trail this unit extends: every change anyone can see in a tenant
        # (of an item, a membership, a policy) writes an event there (app.audit.services).
        self.changed_tenants: set[int] = set()

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

    def finish(self, keep: tuple[type, ...] = ()) -> None:
        """Write what was collected, commit, then hand the outbox messages to RQ (a Redis
        that is down only delays them: the sweep relays what is left).

        Committing expires every object the session holds, so the next read of one reloads it.
        Objects of the `keep` types are not expired: a request keeps the signed-in person, their
        memberships and tenants as loaded (nothing writes those but through the ORM, so what the
        session holds is what was committed), rather than reading them all again to render its
        answer."""
        try:
            self.write_collected()
            # Known once flushed, read now: after the commit each would be a reload.
            messages = [m if isinstance(m, tuple) else (m.id, m.topic) for m in self.outbox
                        if isinstance(m, tuple) or inspect(m).has_identity]
            if keep:
                expiring, self.session.expire_on_commit = self.session.expire_on_commit, False
                try:
                    self.session.commit()
                finally:
                    self.session.expire_on_commit = expiring
                for obj in list(self.session.identity_map.values()):
                    if not isinstance(obj, keep):
                        self.session.expire(obj)
            else:
                self.session.commit()
        except Exception:
            self.session.rollback()
            raise
        # The transaction ended: this unit is done; the session starts a new one on its next use.
        self.outbox = []
        changed, self.changed_tenants = self.changed_tenants, set()
        for hook in self._on_commit if changed else ():
            try:
                hook(changed)
            except Exception as exc:  # noqa: BLE001 - the change is committed whatever a hook does
                log.warning("after-commit hook %s failed: %s", hook.__qualname__, exc)
        if messages and current_app.config.get("OUTBOX_RELAY_ON_COMMIT", True) and self._relay:
            type(self)._relay(messages)

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


def register_on_commit(hook: Callable[[set], None]) -> None:
    """`hook(tenant_ids)` runs after each unit that changed something in those tenants has
    committed (a cache of what was read from them knows to read again); its failure is logged,
    not raised."""
    if hook not in UnitOfWork._on_commit:
        UnitOfWork._on_commit.append(hook)


def register_relay(relay: Callable[[list], object]) -> None:
    """How committed outbox messages are handed to the queue (app.outbox.services.relay)."""
    UnitOfWork._relay = relay


def unit_of_work(session: Session | None = None) -> UnitOfWork:
    """The unit of work of the session's current transaction (one begins with it)."""
    if session is None or isinstance(session, scoped_session):
        # The unit holds the Session itself: settings such as expire_on_commit live on it,
        # not on the scoped_session that proxies it (the ledger passes db.session).
        session = (session or db.session)()
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


class AfterCommit:
    """A view's answer that reads what the request changed as committed (the audit timeline,
    the counts kept by rollups, both written at commit): rendered once the unit of work has
    finished. `return after_commit(render_pane, item_id)`."""

    def __init__(self, render: Callable, *args, **kwargs) -> None:
        self.render, self.args, self.kwargs = render, args, kwargs

    def __call__(self):
        return self.render(*self.args, **self.kwargs)


after_commit = AfterCommit
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a request's commit leaves loaded (UnitOfWork.finish): who is signed in, with their
# memberships, roles and tenants, which every answer reads again.
SIGNED_IN = (User, Membership, MembershipRole, Tenant)


class App(Flask):
    """Flask, with every request one unit of work (Indico's RH.process): the view runs; if it
    raised, nothing of it is kept; if it answered an error (4xx/5xx) or the request was a GET,
    nothing is kept either (a GET changes nothing; what must be saved before an error answer
    says so with `commit_now`); otherwise the unit finishes (written, committed, outbox
    relayed) before the answer leaves. Routes never commit or roll back themselves."""

    def dispatch_request(self):
        try:
            answer = super().dispatch_request()
        except BaseException:
            roll_back_quietly()
            raise
        if isinstance(answer, AfterCommit):
            unit_of_work().finish(keep=SIGNED_IN)
            return answer()
        response = self.make_response(answer)
        if response.status_code < 400 and request.method not in SAFE_METHODS:
            unit_of_work().finish(keep=SIGNED_IN)
        else:
            roll_back_quietly()
        return response


def roll_back_quietly() -> None:
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the connection is gone; the pool replaces it
        pass


class Refusal:
    """What `refused()` caught: falsy when the write path accepted the change."""

    error = None

    def __bool__(self) -> bool:
        return self.error is not None


@contextmanager
def refused(*kinds: type[BaseException]):
    """`with refused(ValidationFailed) as failed:` around a call of the write path whose refusal
    the view answers itself (a form shown again with its errors, a message and a redirect):
    the refusal rolls the unit of work back, and `failed.error` says why. Other errors go on
    to the error pages. Without arguments, any DomainError."""
    refusal = Refusal()
    try:
        yield refusal
    except kinds or (DomainError,) as error:
        roll_back_quietly()
        refusal.error = error


def as_unit_of_work(function: Callable) -> Callable:
    """`@as_unit_of_work`: a job (RQ's) or a command (the CLI's) as one unit of work, finished
    when it returns, rolled back when it raises (RQ then retries the job or records it as
    failed; the command exits with its error). One that works in batches may `commit()`
    between them, each batch its own unit."""

    @wraps(function)
    def run(*args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except BaseException:
            roll_back_quietly()
            raise
        unit_of_work().finish()
        return result

    return run
