"""Work that follows a change of a tenant's business calendar: the due times of its open items
move so that the working time each had left is kept under the new calendar (a closure added
tomorrow gives every item a day more; changed hours count from now). Run by the worker from the
outbox, after the change committed."""
from __future__ import annotations

from datetime import date, time

from sqlalchemy import select

from app.actors import Actor
from app.audit.services import record_event
from app.extensions import db
from app.models import Tenant, WorkItem
from app.outbox.services import register_handler
from app.types import utcnow
from app.work import ledger
from app.work.calendar import BusinessCalendar, calendar_for
from app.work.queries import open_items

SYSTEM = Actor.system("calendar")
BATCH = 2000


def calendar_snapshot(tenant: Tenant) -> dict:
    """What the outbox message carries: the calendar as it was before a change."""
    cal = calendar_for(tenant)
    return {"timezone": cal.timezone, "country": cal.country,
            "working_days": sorted(cal.working_days), "start": cal.start.isoformat("minutes"),
            "end": cal.end.isoformat("minutes"),
            "closures": sorted(d.isoformat() for d in cal.closures)}


def _calendar_from(snapshot: dict) -> BusinessCalendar:
    return BusinessCalendar(
        timezone=snapshot["timezone"], country=snapshot["country"],
        working_days=frozenset(snapshot["working_days"]),
        start=time.fromisoformat(snapshot["start"]), end=time.fromisoformat(snapshot["end"]),
        closures=frozenset(date.fromisoformat(d) for d in snapshot["closures"]))


def move_due_times(message) -> None:
    """Outbox handler of tenant.calendar_changed. Items whose due time has passed stay
    breached; a paused item keeps what it had left when it paused. Due times are derived, so
    the ledger writes them without bumping the item's version (nobody's open form goes stale);
    the SLA sweep then recomputes on track / at risk. One audit event says how many moved."""
    tenant = db.session.get(Tenant, message.payload["tenant_id"])
    if tenant is None:
        return
    old = _calendar_from(message.payload["before"])
    new = calendar_for(tenant)
    now = utcnow()
    moved = 0
    last_id = 0
    while True:
        rows = db.session.execute(
            select(*ledger.before_columns())
            .where(WorkItem.tenant_id == tenant.id, open_items(),
                   WorkItem.sla_due_at > now, WorkItem.id > last_id)
            .order_by(WorkItem.id).limit(BATCH)).all()
        if not rows:
            break
        moved += _move(tenant, rows, old, new, now)
        last_id = rows[-1].id
    record_event(SYSTEM, "sla.due_times_moved", tenant_id=tenant.id,
                 data={"items": moved, "reason": message.payload.get("reason")})


def _move(tenant: Tenant, rows, old: BusinessCalendar, new: BusinessCalendar, now) -> int:
    """Move the rows' due times; an item someone changed since it was read is read again (its
    clock may have paused or resumed meanwhile). Returns how many moved."""
    moved = 0
    for _attempt in range(3):
        changes = []
        for row in rows:
            anchor = row.sla_paused_at or now
            due = new.add(anchor, old.between(anchor, row.sla_due_at))
            if due != row.sla_due_at:
                changes.append(ledger.Change(row, {"sla_due_at": due}, bump=False))
        written = ledger.apply_changes(SYSTEM, tenant.id, changes, now=now, lost="skip")
        moved += len(written)
        if len(written) == len(changes):
            return moved
        done = {c.item_id for c in written}
        rows = db.session.execute(
            select(*ledger.before_columns())
            .where(WorkItem.id.in_([c.item_id for c in changes if c.item_id not in done]),
                   open_items(), WorkItem.sla_due_at > now)).all()
    return moved


# A tenant's business calendar changed: its open items' due times follow.
register_handler(move_due_times, "tenant.calendar_changed")
