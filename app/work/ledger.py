"""The only writer of work items. Every change of an item, from a person (`change_item`, the
door of app.work.services.transition, claims and reassignments) or a machine (`apply_changes`:
policy decisions and routing, the SLA sweep and escalation, calendar moves, deactivation), and
every new item (`insert_item`, `insert_items`), is written here, by one code path:

1. the rules of the target state: the finishing rules of a final state (resolved at, decided
   by, SLA met or breached) and the SLA clock of waiting states;
2. the version-guarded UPDATE, whose row count is checked: a change that finds the item moved
   on is a Conflict (or, for the batch door's derived columns, reported back), never a silent
   no-op;
3. the dashboard's rollup changes, from the before and after values held here;
4. the audit events and the outbox messages.

In the test configuration `guard_engine` refuses any write of work items the ledger did not
issue, so a second road cannot open unnoticed."""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, event, insert, select, text, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from app.actors import Actor
from app.audit.batch import record_events
from app.audit.services import record_event
from app.bulk import insert_rows as insert_table_rows
from app.errors import Conflict
from app.extensions import db
from app.models import Tenant, User, WorkItem
from app.outbox.services import add_message, add_messages
from app.types import tenant_time, utcnow
from app.work.calendar import calendar_for
from app.work.rollups import TRACKED, apply_item_changes
from app.work.sla_clock import sla_state_at
from app.work.states import FINAL_STATES, WAITING_STATES

ITEMS = WorkItem.__table__

# What the ledger reads of an item before changing it: the state rules' inputs and the
# rollups' columns. Batch callers select these (`before_columns()`); the single door reads
# them from the loaded item.
BEFORE = tuple(dict.fromkeys(("id", "tenant_id", "kind", "state", "version", "priority",
                              "sla_due_at", "sla_paused_at", "first_action_at", *TRACKED)))


_TRACKED = frozenset(TRACKED)


def before_columns() -> list:
    return [ITEMS.c[name] for name in BEFORE]


def _get(before, name: str):
    return before[name] if isinstance(before, dict) else getattr(before, name)


# ---------------------------------------------------------------------------------------------
# Conflicts described for people.


def describe_user(user: User | None) -> str:
    return user.name if user else "someone"


def stamp(when, tenant) -> str:
    """When, in the item's tenant's time: the time the person sees everywhere else."""
    return tenant_time(when, tenant.timezone) if when else "an unknown time"


def conflict_for(item: WorkItem) -> Conflict:
    who = describe_user(item.last_actor)
    when = stamp(item.last_action_at, item.tenant)
    if item.state in FINAL_STATES[item.kind]:
        return Conflict(f"Already {item.state.replace('_', ' ')} by {who} at {when}.")
    return Conflict(f"This item was changed by {who} at {when}; reload to see the change.")


def committed_conflict(item_id: int, describe: Callable[[WorkItem], Conflict]) -> Conflict:
    """Describe what a concurrent writer committed, read on a connection of its own: this
    transaction lost the race and is left for the caller (a request, a job, or a bulk action's
    savepoint) to roll back."""
    with Session(db.engine) as fresh_session:
        fresh = fresh_session.scalars(
            select(WorkItem).where(WorkItem.id == item_id)
            .options(joinedload(WorkItem.last_actor), joinedload(WorkItem.assignee),
                     joinedload(WorkItem.tenant))
        ).one()
        return describe(fresh)


# ---------------------------------------------------------------------------------------------
# Changes.


@dataclass(slots=True)
class Change:
    """One item's change: `before` is the item as read (a row of `before_columns()`, a dict or
    the loaded WorkItem), `values` the columns to set. `action` names its audit event (none when
    None); its from/to states are the state change, or the unchanged state when `event_states`.
    `bump` False: derived columns (SLA state, due time, priority) that no decision rests on are
    written without a new version, so nobody's open form goes stale; they are written only if
    they still hold the values read."""

    before: object
    values: dict
    action: str | None = None
    data: dict | None = None
    comment: str | None = None
    on_behalf_of_id: int | None = None
    expected_version: int | None = None
    bump: bool = True
    event_states: bool = False

    @property
    def item_id(self) -> int:
        return _get(self.before, "id")


def touched(actor: Actor, before, now: datetime) -> dict:
    """Who acted last and when, and the first action's time if this is the first."""
    values = {"last_actor_id": actor.user_id, "last_action_at": now}
    if _get(before, "first_action_at") is None:
        values["first_action_at"] = now
    return values


def _state_rules(actor: Actor, change: Change, tenant: Tenant, now: datetime) -> None:
    """The columns a new state brings with it, in one place for every door: leaving a waiting
    state resumes the SLA clock (the due time moves by the business time waited); a final
    state stamps the resolution, who decided it, and SLA met or breached; a waiting state
    pauses the clock."""
    values, before = change.values, change.before
    to_state = values.get("state")
    from_state = _get(before, "state")
    if to_state is None or to_state == from_state:
        return
    given = set(values)  # values the caller gives win: a test sets up an item decided long ago

    def put(name: str, value) -> None:
        if name not in given:
            values[name] = value

    kind = _get(before, "kind")
    due = values.get("sla_due_at", _get(before, "sla_due_at"))
    paused_at = _get(before, "sla_paused_at")
    if from_state in WAITING_STATES and paused_at is not None:
        if due is not None and "sla_due_at" not in given:
            calendar = calendar_for(tenant)
            due = values["sla_due_at"] = calendar.add(due, calendar.between(paused_at, now))
        put("sla_paused_at", None)
    if to_state in FINAL_STATES[kind]:
        put("resolved_at", now)
        put("decided_by_type", actor.type.value)
        put("sla_state", "breached" if due and now > due else "met")
    elif to_state in WAITING_STATES:
        put("sla_state", "paused")
        put("sla_paused_at", now)
    elif from_state in WAITING_STATES and due is not None:
        put("sla_state", sla_state_at(tenant, kind, values.get("priority", _get(before, "priority")),
                                      due, now))


def change_item(actor: Actor, item: WorkItem, values: dict, *, action: str | None = None,
                data: dict | None = None, comment: str | None = None,
                on_behalf_of_id: int | None = None, bump: bool = True,
                event_states: bool = False, now: datetime | None = None,
                describe: Callable[[WorkItem], Conflict] = conflict_for) -> WorkItem:
    """The single door: change one loaded item. A concurrent writer that got there first is a
    Conflict that says who changed it and when (`describe`). The item shows the new values."""
    change = Change(item, dict(values), action, data, comment, on_behalf_of_id,
                    item.version, bump, event_states)
    item_id = item.id
    if not _write(actor, item.tenant_id, [change], now or utcnow(), single=True):
        raise committed_conflict(item_id, describe) from None
    return item


def apply_changes(actor: Actor, tenant_id: int, changes: list[Change], *,
                  now: datetime | None = None, lost: str = "conflict") -> list[Change]:
    """The batch door: many items of one tenant, each with its own values, in a few statements.
    An item that moved on since it was read is a Conflict for the whole batch (the unit of work
    rolls back), or with `lost="skip"` (derived columns a later run recomputes) left out of
    what is returned. Returns the changes written, their values completed by the state rules."""
    written = _write(actor, tenant_id, changes, now or utcnow(), single=False)
    if lost == "conflict" and len(written) != len(changes):
        raise Conflict(f"{len(changes) - len(written)} of these items changed meanwhile; "
                       "nothing was written.")
    return written


def _write(actor: Actor, tenant_id: int, changes: list[Change], now: datetime, *,
           single: bool) -> list[Change]:
    if not changes:
        return []
    tenant = db.session.get(Tenant, tenant_id)
    for change in changes:
        if change.expected_version is None:
            change.expected_version = _get(change.before, "version")
        _state_rules(actor, change, tenant, now)
    lost = _update(changes)
    written = [c for c in changes if c.item_id not in lost] if lost else changes
    apply_item_changes(db.session, [_rollup_values(c) for c in written
                                    if not _TRACKED.isdisjoint(c.values)])
    state_changes = []
    for change in written:
        from_state = _get(change.before, "state")
        to_state = change.values.get("state")
        if change.action is not None:
            if to_state is not None:
                states = (from_state, to_state)
            elif change.event_states:
                states = (from_state, from_state)
            else:
                states = (None, None)
            record_event(actor, change.action, tenant_id=tenant_id, item_id=change.item_id,
                         from_state=states[0], to_state=states[1], comment=change.comment,
                         on_behalf_of_id=change.on_behalf_of_id, data=change.data)
        if to_state is not None and change.action is not None:
            state_changes.append({"item_id": change.item_id, "from": from_state, "to": to_state,
                                  "action": (change.action or "").removeprefix("item.")})
    if state_changes:
        if single:
            for payload in state_changes:
                add_message("item.state_changed", payload, tenant_id)
        else:
            # One message per batch (not per item): the worker's jobs stay few.
            add_messages("items.state_changed", [{"changes": state_changes}], tenant_id)
    for change in written:
        if isinstance(change.before, WorkItem):  # a loaded item shows what was written
            for name, value in change.values.items():
                set_committed_value(change.before, name, value)
            if change.bump:
                set_committed_value(change.before, "version", change.expected_version + 1)
    return written


def _rollup_values(change: Change) -> tuple[dict, dict]:
    source = change.before
    if isinstance(source, dict):
        before = {name: source[name] for name in TRACKED}
    elif hasattr(source, "_mapping"):  # a row of before_columns()
        mapping = source._mapping
        before = {name: mapping[name] for name in TRACKED}
    else:  # the loaded item
        before = {name: getattr(source, name) for name in TRACKED}
    after = before.copy()
    for name, value in change.values.items():
        if name in _TRACKED:
            after[name] = value
    return before, after


# ---------------------------------------------------------------------------------------------
# The UPDATE.


def _update(changes: list[Change]) -> set[int]:
    """Write the changes, grouped by the columns they set; return the ids of the items that
    had moved on (no row matched its guard)."""
    groups: dict[tuple, list[Change]] = {}
    for change in changes:
        groups.setdefault((tuple(change.values), change.bump), []).append(change)
    postgres = db.session.get_bind().dialect.name == "postgresql"
    lost: set[int] = set()
    db.session.flush()  # the unit of work's other rows first (steps, assignments)
    with issued_by_ledger(), db.session.no_autoflush:
        for (names, bump), group in groups.items():
            if postgres and len(group) > 1:
                lost |= _update_many(names, bump, group)
            else:
                for change in group:
                    if not _update_one(change):
                        lost.add(change.item_id)
    return lost


def _update_one(change: Change) -> bool:
    stmt = update(ITEMS).where(ITEMS.c.id == change.item_id,
                               ITEMS.c.version == change.expected_version)
    values = dict(change.values)
    if change.bump:
        values["version"] = ITEMS.c.version + 1
    else:
        stmt = stmt.where(*[ITEMS.c[name].is_not_distinct_from(_get(change.before, name))
                            for name in change.values])
    return db.session.execute(stmt.values(**values)).rowcount == 1


def _update_many(names: tuple[str, ...], bump: bool, group: list[Change]) -> set[int]:
    """One statement whatever the number of rows (PostgreSQL): the rows travel as one JSON
    document (json.dumps is C; binding an array per column made the driver inspect every
    element), typed by json_to_recordset; RETURNING tells which rows matched."""
    dialect = db.session.get_bind().dialect

    def sql_type(name: str) -> str:
        column = ITEMS.c[name]
        return "json" if isinstance(column.type, JSON) else column.type.compile(dialect=dialect)

    guarded = () if bump else names
    rows = []
    for change in group:
        row = {"id": change.item_id, "expected_version": change.expected_version,
               **change.values}
        for name in guarded:
            row[f"was_{name}"] = _get(change.before, name)
        rows.append(row)
    columns = ", ".join(["id bigint", "expected_version integer",
                         *[f"{n} {sql_type(n)}" for n in names],
                         *[f"was_{n} {sql_type(n)}" for n in guarded]])
    sets = [f"{n} = v.{n}" for n in names] + (["version = t.version + 1"] if bump else [])
    where = ["t.id = v.id", "t.version = v.expected_version",
             *[f"t.{n} IS NOT DISTINCT FROM v.was_{n}" for n in guarded]]
    done = set(db.session.scalars(text(
        f"UPDATE work_items AS t SET {', '.join(sets)} "
        f"FROM json_to_recordset(CAST(:rows AS json)) AS v({columns}) "
        f"WHERE {' AND '.join(where)} RETURNING t.id"),
        {"rows": json.dumps(rows, default=json_scalar)}))
    return {c.item_id for c in group} - done


def json_scalar(value):
    """Money and times in a batch's JSON: as the text PostgreSQL reads back exactly."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a batch update")


# ---------------------------------------------------------------------------------------------
# New items.


def insert_item(actor: Actor, values: dict) -> int:
    """Insert one new item (its complete column values, the version aside) and count it in
    the rollups; returns its id. A duplicate reference raises IntegrityError for the caller
    (who runs this in a savepoint). The caller records the item.created event once the item
    is routed, by `record_created`."""
    row = {**values, "version": 1}
    with issued_by_ledger(), db.session.no_autoflush:
        item_id = db.session.execute(insert(ITEMS).values(**row).returning(ITEMS.c.id)).scalar_one()
    apply_item_changes(db.session, [(None, {name: row.get(name) for name in TRACKED})])
    return item_id


def record_created(actor: Actor, item_id: int, tenant_id: int, state: str, data: dict) -> None:
    """The item.created event and message of one new item."""
    record_event(actor, "item.created", tenant_id=tenant_id, item_id=item_id, to_state=state,
                 data=data)
    add_message("item.created", {"item_id": item_id}, tenant_id)


def insert_rows(rows: list[dict]) -> list[int]:
    """The batch door for new items: insert the rows (their complete column values, the
    version aside; COPY on PostgreSQL) and return their ids in order. A duplicate reference
    fails the whole insert (IntegrityError, from SQLAlchemy or the driver) for the caller's
    savepoint; once it holds, `record_items_created` writes what goes with them."""
    with issued_by_ledger():
        return insert_table_rows(ITEMS, [{**row, "version": 1} for row in rows], with_ids=True)


def record_items_created(actor: Actor, tenant_id: int, rows: list[dict], ids: list[int],
                         events: list[dict], per_message: int) -> None:
    """For new items written by `insert_rows`: one item.created event each (`events[i]`: its
    data), their rollup changes, and one items.created outbox message per `per_message`."""
    record_events(actor, tenant_id, [
        {"action": "item.created", "item_id": item_id, "to_state": row["state"], "data": data}
        for row, item_id, data in zip(rows, ids, events)])
    apply_item_changes(db.session, [(None, {name: row.get(name) for name in TRACKED})
                                    for row in rows])
    add_messages("items.created",
                 [{"item_ids": ids[start:start + per_message]}
                  for start in range(0, len(ids), per_message)], tenant_id)


# ---------------------------------------------------------------------------------------------
# The guard: in tests, a write of work items the ledger did not issue is refused.

_ISSUING: ContextVar[bool] = ContextVar("cleardesk_ledger_issuing", default=False)
_ITEM_WRITE = re.compile(
    r"\b(?:(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY)\s+\"?work_items|TRUNCATE\b[^;]*"
    r"\bwork_items)\b", re.IGNORECASE)


class UnledgeredWrite(RuntimeError):
    """A write of work items that did not come through the ledger."""


@contextmanager
def issued_by_ledger() -> Iterator[None]:
    """Statements run inside are the ledger's. Only the ledger, and loaders that rebuild what
    the ledger keeps afterwards (the demo seed, then rebuild_rollups), open it."""
    token = _ISSUING.set(True)
    try:
        yield
    finally:
        _ISSUING.reset(token)


def _check(statement: str) -> None:
    if not _ISSUING.get() and _ITEM_WRITE.search(statement):
        raise UnledgeredWrite("work items are written by app.work.ledger only: "
                              + " ".join(statement.split())[:200])


def guard_engine(engine) -> None:
    """Refuse INSERT, UPDATE, DELETE, COPY and TRUNCATE of work_items not issued by the ledger:
    at SQLAlchemy's cursor hook for statements, and on PostgreSQL at the driver's cursor for
    COPY (which runs on the raw connection, past SQLAlchemy)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _refuse(conn, cursor, statement, parameters, context, executemany):
        _check(statement)

    if engine.dialect.name == "postgresql":
        @event.listens_for(engine, "connect")
        def _guard_copy(dbapi_connection, connection_record):
            base = dbapi_connection.cursor_factory

            class GuardedCursor(base):
                def copy(self, statement, *args, **kwargs):
                    _check(statement if isinstance(statement, str) else str(statement))
                    return super().copy(statement, *args, **kwargs)

            dbapi_connection.cursor_factory = GuardedCursor
