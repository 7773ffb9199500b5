"""Escalation of a one-person approval step that waits: past its window it goes to the next of
its levels (the manager of whoever has it, then a named group), each time through the ledger
with an audit event and a mail to the new approver. Who may take a level obeys the rules of
deciding: never the requester, nobody who approved an earlier step (their level is skipped),
someone away only when their delegate could decide it."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from app.actors import Actor
from app.approvals.services import (
    APPROVING_ROLES,
    earlier_approvers,
    named_approver_id,
    standing_delegate,
)
from app.extensions import db
from app.models import (
    ApprovalAssignment,
    ApprovalStep,
    ApproverGroup,
    ApproverGroupMember,
    Kind,
    Membership,
    StepState,
    WorkItem,
)
from app.outbox.services import add_message
from app.types import utcnow
from app.work import ledger
from app.work.assignment import load_table
from app.work.calendar import calendar_for
from app.work.states import ApprovalState

ESCALATION_BATCH = 500


def escalation_window(tenant, after: str, start: datetime) -> datetime:
    """When a step that starts waiting at `start` escalates: "N hours" and "N days" are
    calendar time; "N business hours" is working time of the tenant's calendar, as SLA targets
    count it, and "N business days" N of its working days (each as long as its working
    hours)."""
    number, *words = after.split()
    n = int(number)
    unit = words[-1].rstrip("s")
    if words[0] != "business":
        return start + (timedelta(days=n) if unit == "day" else timedelta(hours=n))
    calendar = calendar_for(tenant)
    if unit == "hour":
        return calendar.add(start, timedelta(hours=n))
    day = (datetime.combine(datetime.min, calendar.end)
           - datetime.combine(datetime.min, calendar.start))
    return calendar.add(start, day * n)


def start_waiting(item: WorkItem, step: ApprovalStep, now: datetime | None = None) -> None:
    """A step that has just opened: when it escalates first, if it escalates."""
    if step.escalate_after and step.escalate_to:
        step.escalates_at = escalation_window(item.tenant, step.escalate_after, now or utcnow())


def level_words(level: dict) -> str:
    return "the manager" if level.get("to") == "manager" else f"group {level.get('group')}"


def _membership(tenant_id: int, user_id: int | None) -> Membership | None:
    if user_id is None:
        return None
    return db.session.scalars(select(Membership).where(
        Membership.tenant_id == tenant_id, Membership.user_id == user_id)).one_or_none()


def _why_not(item: WorkItem, step: ApprovalStep, membership: Membership | None,
             excluded: dict[int, str]) -> tuple[str | None, str | None]:
    """(the role they would decide the step with, None) when this member may take the step,
    else (None, why not, in words)."""
    if membership is None or not membership.user.active:
        return None, "not an active member"
    if membership.user_id in excluded:
        return None, excluded[membership.user_id]
    if membership.approval_limit < step.min_limit:
        return None, "approval limit below the step's"
    roles = [r for r in dict.fromkeys((step.role, *APPROVING_ROLES)) if r in membership.role_set]
    delegate_id = standing_delegate(membership, item)
    if delegate_id is not None:
        delegate = _membership(item.tenant_id, delegate_id)
        if (delegate is None or not delegate.user.active or delegate_id in excluded
                or delegate.approval_limit < step.min_limit):
            return None, "away, and their delegate may not decide it"
        roles = [r for r in roles if r in delegate.role_set]
    elif membership.is_away(utcnow().date()):
        return None, "away, with no delegate for it"
    if not roles:
        return None, "decides no approvals"
    return roles[0], None


def _group_candidate(item: WorkItem, step: ApprovalStep, group_id: int | None, holder: int | None,
                     excluded: dict[int, str]) -> tuple[int | None, str | None, str]:
    """The group's member who takes the step: one who may decide it, the least loaded first
    (app.work.assignment, then the longest-standing member); never the person who has it now."""
    if group_id is None:
        return None, None, "the group no longer exists"
    load = load_table(select(ApproverGroupMember.user_id).where(
        ApproverGroupMember.group_id == group_id))
    members = db.session.scalars(
        select(Membership)
        .join(ApproverGroupMember, ApproverGroupMember.user_id == Membership.user_id)
        .outerjoin(load, load.c.user_id == Membership.user_id)
        .where(ApproverGroupMember.group_id == group_id, Membership.tenant_id == item.tenant_id,
               Membership.user_id != (holder or 0))
        .order_by(func.coalesce(load.c.n, 0), Membership.user_id)).all()
    for membership in members:
        role, _why = _why_not(item, step, membership, excluded)
        if role is not None:
            return membership.user_id, role, ""
    return None, None, "no member of it may decide the step"


def next_level(item: WorkItem, step: ApprovalStep) -> dict:
    """Where the step goes next: {"level", "approver_id", "role", "skipped"} (approver_id None
    when no level left can take it). A manager level follows the reporting line from whoever
    has the step; a manager skipped (who approved an earlier step, or is away with nobody to
    stand in) passes the line on, so a next "manager" level is their manager."""
    requester = {item.requester_id: "requested the item"} if item.requester_id else {}
    excluded = {**{u: "approved an earlier step" for u in earlier_approvers(item)}, **requester}
    levels = step.escalate_to or []
    holder = named_approver_id(step)
    line = holder
    skipped = []
    groups = {g.name.casefold(): g.id for g in db.session.scalars(
        select(ApproverGroup).where(ApproverGroup.tenant_id == item.tenant_id))}
    for index in range(step.escalation_level or 0, len(levels)):
        level = levels[index]
        if level.get("to") == "manager":
            mine = _membership(item.tenant_id, line)
            boss = _membership(item.tenant_id, mine.manager_id) if mine else None
            if boss is None:
                skipped.append({"level": index + 1, "to": "manager",
                                "why": "nobody has the step" if line is None
                                else "no manager is named"})
                continue
            role, why = _why_not(item, step, boss, excluded)
            if role is not None and boss.user_id != holder:
                return {"level": index + 1, "approver_id": boss.user_id, "role": role,
                        "skipped": skipped, "to": "manager"}
            skipped.append({"level": index + 1, "to": "manager", "user_id": boss.user_id,
                            "why": why or "has the step already"})
            line = boss.user_id
        else:
            name = level.get("group") or ""
            chosen, role, why = _group_candidate(item, step, groups.get(name.casefold()),
                                                 holder, excluded)
            if chosen is not None:
                return {"level": index + 1, "approver_id": chosen, "role": role,
                        "skipped": skipped, "to": "group", "group": name}
            skipped.append({"level": index + 1, "to": "group", "group": name, "why": why})
    return {"level": len(levels), "approver_id": None, "role": None, "skipped": skipped}


def escalate_step(actor: Actor, step_id: int, now: datetime) -> bool:
    """Escalate one step whose window has passed, if it still waits: re-read under a lock on
    PostgreSQL (a decision landing now either holds the rows first, and this leaves the step to
    the next sweep, or waits for this and finds the item moved on), then one change through the
    ledger
    (version-guarded: on SQLite a decision committed since the read wins and nothing is
    written here). Returns whether the step went to someone new. Never commits."""
    item_id = db.session.scalar(select(ApprovalStep.item_id).where(ApprovalStep.id == step_id))
    if db.session.get_bind().dialect.name == "postgresql":
        # The step's row, then the item's: the order a decision writes them in, so the two
        # never wait on each other. Either held: someone is deciding it now, and the next
        # sweep sees what they did.
        for table, row_id in ((ApprovalStep, step_id), (WorkItem, item_id)):
            if db.session.scalar(select(table.id).where(table.id == row_id)
                                 .with_for_update(skip_locked=True)) is None:
                return False
    item = db.session.scalars(select(WorkItem).where(WorkItem.id == item_id)
                              .execution_options(populate_existing=True)).one_or_none()
    if item is None or item.kind != Kind.APPROVAL.value:
        return False
    step = db.session.get(ApprovalStep, step_id, populate_existing=True)
    if (item.state != ApprovalState.PENDING.value or step.state != StepState.OPEN.value
            or step.escalates_at is None or step.escalates_at > now or step.parallel):
        return False
    holder = named_approver_id(step)
    chosen = next_level(item, step)
    data = {"step": step.position, "waited": step.escalate_after, "level": chosen["level"],
            "from_approver_id": holder, "approver_id": chosen["approver_id"],
            "skipped": chosen["skipped"]}
    for key in ("to", "group"):
        if key in chosen:
            data[key] = chosen[key]
    action = ("approval.step_escalated" if chosen["approver_id"] is not None
              else "approval.escalation_exhausted")
    written = ledger.apply_changes(actor, item.tenant_id, [ledger.Change(
        item, {"last_actor_id": None, "last_action_at": now}, action=action, data=data, event_states=True)],
        now=now, lost="skip")
    if not written:
        return False
    if chosen["approver_id"] is None:
        step.escalates_at = None  # nobody further may take it: it stays where it is
        return False
    step.escalation_level = chosen["level"]
    more = chosen["level"] < len(step.escalate_to or [])
    step.escalates_at = escalation_window(item.tenant, step.escalate_after, now) if more else None
    step.role = chosen["role"]
    step.approver_id = chosen["approver_id"]
    db.session.execute(delete(ApprovalAssignment).where(ApprovalAssignment.step_id == step.id))
    add_message("approval.step_assigned",
                {"item_id": item.id, "step_id": step.id, "approver_id": chosen["approver_id"],
                 "escalated": True}, item.tenant_id)
    return True


def escalate_waiting_steps(actor: Actor, now: datetime | None = None,
                           after_id: int = 0) -> tuple[int, int | None]:
    """One batch of the open one-person steps whose escalation window has passed, from step id
    `after_id` on: (how many were escalated, the last step id read, or None when none were
    left). Never commits."""
    now = now or utcnow()
    step_ids = db.session.scalars(
        select(ApprovalStep.id).join(WorkItem, WorkItem.id == ApprovalStep.item_id)
        .where(ApprovalStep.escalates_at <= now, ApprovalStep.state == StepState.OPEN.value,
               WorkItem.state == ApprovalState.PENDING.value, ApprovalStep.id > after_id)
        .order_by(ApprovalStep.id).limit(ESCALATION_BATCH)).all()
    if not step_ids:
        return 0, None
    return sum(escalate_step(actor, step_id, now) for step_id in step_ids), step_ids[-1]

