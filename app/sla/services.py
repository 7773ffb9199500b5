"""What the SLA sweep does to an item that has just breached: its priority raised, its work
handed to the least loaded colleague, the managers told in one digest."""
from __future__ import annotations

from app.extensions import db
from app.models import Membership, MembershipRole, Priority, SlaState, User
from app.outbox.services import add_message
from app.sla.models import SlaNotice
from app.types import utcnow
from app.work import ledger
from app.work.assignment import least_loaded, loads
from app.work.assignment_notices import note_assignment
from app.work.queries import get_item
from app.work.states import WORKER_ROLES

PRIORITY_ORDER = (Priority.LOW.value, Priority.NORMAL.value, Priority.HIGH.value,
                  Priority.URGENT.value)


def raised_priority(priority: str) -> str:
    """One step up, up to urgent."""
    index = PRIORITY_ORDER.index(priority) if priority in PRIORITY_ORDER else 1
    return PRIORITY_ORDER[min(index + 1, len(PRIORITY_ORDER) - 1)]


def least_loaded_colleague(item) -> int | None:
    """The active member of the item's tenant who works its kind and is present today (not
    out of office), other than its current assignee, with the least load (app.work.assignment:
    then the lowest id): where a breached item is moved when the tenant asks for it."""
    from sqlalchemy import select

    works_the_kind = select(MembershipRole.membership_id).where(
        MembershipRole.role.in_(WORKER_ROLES[item.kind]))
    members = db.session.scalars(
        select(Membership).join(User, User.id == Membership.user_id)
        .where(Membership.tenant_id == item.tenant_id, User.active.is_(True),
               Membership.id.in_(works_the_kind))
    ).all()
    today = utcnow().date()
    candidates = [m.user_id for m in members
                  if m.user_id != item.assignee_id and not m.is_away(today)]
    return least_loaded(candidates, loads(candidates))


def record_notices(rows: list[tuple[int, int, str]]) -> None:
    """(tenant id, item id, level) of items that turned at risk or breached: noted for the
    managers' digest at the end of the sweep (queue_sla_digest), each item once per level.
    In the caller's transaction, never commits."""
    if not rows:
        return
    table = SlaNotice.__table__
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = utcnow()
    for start in range(0, len(rows), 1000):
        db.session.execute(insert(table).values([
            {"tenant_id": t, "item_id": i, "level": level, "created_at": now}
            for t, i, level in rows[start:start + 1000]]).on_conflict_do_nothing(
                index_elements=["item_id", "level"]))


def queue_sla_digest() -> int | None:
    """Gather the notices not yet mailed into one outbox message (sla.digest): its handler
    mails each manager one digest of them. In the caller's transaction (the end of the sweep);
    notices left by a sweep that died before its end go with the next one. Returns the
    message id, or None when there is nothing new."""
    from sqlalchemy import select, update

    table = SlaNotice.__table__
    query = (select(table.c.id).where(table.c.digest_message_id.is_(None))
             .order_by(table.c.id))
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # a concurrent sweep takes the others
    ids = db.session.scalars(query).all()
    if not ids:
        return None
    message = add_message("sla.digest", {"notices": len(ids)}, None)
    db.session.flush()
    for start in range(0, len(ids), 5000):
        db.session.execute(update(table).where(table.c.id.in_(ids[start:start + 5000]))
                           .values(digest_message_id=message.id))
    return message.id


def escalate_breach(actor, item_id: int) -> dict:
    """Raise the priority of an item that has just breached and, when its tenant asks for it,
    move it to the least-loaded colleague; record what changed and note it for its managers'
    digest. The caller (the SLA sweep) calls it once per breach: the sweep marks the breach and
    escalates in one transaction, and a second sweep finds nothing new."""
    item = get_item(actor, item_id)
    change = {"sla_due_at": item.sla_due_at, "from_priority": item.priority,
              "to_priority": raised_priority(item.priority)}
    target = least_loaded_colleague(item) if item.tenant.sla_reassign_on_breach else None
    if target is not None:
        change.update(previous_assignee_id=item.assignee_id, assignee_id=target)
    # The priority orders the queues; no decision rests on it, so it is written without
    # bumping the item's version (like the SLA state): someone deciding the item right now
    # is not turned away by the escalation.
    ledger.change_item(actor, item, {"priority": change["to_priority"]}, bump=False,
                       action=None if target is not None else "item.sla_escalated",
                       data=change)
    if target is not None:
        # Moving the work is a real change: it takes the version check.
        now = utcnow()
        ledger.change_item(actor, item, {"assignee_id": target, "claimed_at": now,
                                         "last_action_at": now},
                           action="item.sla_escalated", data=change, now=now)
        note_assignment(actor, item, target,
                        reason="Moved to you after it breached its SLA (the tenant moves "
                               "breached work to the least-loaded colleague)")
    record_notices([(item.tenant_id, item.id, SlaState.BREACHED.value)])
    return change
