"""Periodic approval mail: one reminder per step (per waiting member of a parallel step) before
its SLA is at risk, and each approver's daily digest. Both are idempotent through sent_mails.notice_key: a step's reminder
and a day's digest exist once, whatever runs twice."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import exists, select

from app.approvals.notifications import open_steps_of_pending_items, send_digest, send_step_mail
from app.approvals.services import step_recipient, waiting_approvers
from app.extensions import db
from app.mail.models import SentMail
from app.models import ApprovalStep, Tenant, User, WorkItem
from app.types import utcnow
from app.unit_of_work import commit
from app.work.calendar import calendar_for
from app.work.sla_clock import sla_target

BATCH = 500


def reminder_due(item: WorkItem, now: datetime) -> bool:
    """True once only EMAIL_REMINDER_AT_SLA_LEFT of the item's SLA target is left, in the
    tenant's business time (half, by default: before the item turns at risk, with a quarter
    left)."""
    if item.sla_due_at is None or now >= item.sla_due_at:
        return False
    left = calendar_for(item.tenant).between(now, item.sla_due_at)
    return left <= sla_target(item.kind, item.priority, item.tenant) * current_app.config[
        "EMAIL_REMINDER_AT_SLA_LEFT"]


def send_sla_reminders(now: datetime | None = None) -> int:
    """Remind the approver of each open step whose item's SLA is running out, once per step.
    Each mail commits on its own, so a failure later in the batch keeps the ones sent."""
    now = now or utcnow()
    reminded = exists().where(SentMail.step_id == ApprovalStep.id, SentMail.kind == "reminder")
    step_ids = db.session.scalars(
        open_steps_of_pending_items().with_only_columns(ApprovalStep.id)
        .where(WorkItem.sla_due_at > now, ~reminded)
        .order_by(WorkItem.sla_due_at).limit(BATCH)
    ).all()
    sent = 0
    for step_id in step_ids:
        step = db.session.get(ApprovalStep, step_id)
        if not reminder_due(step.item, now):
            continue
        # A parallel step reminds each member who has not voted, once each.
        for member in waiting_approvers(step) if step.parallel else [None]:
            key = f"reminder:{step.id}" if member is None else f"reminder:{step.id}:{member}"
            if send_step_mail(step.item, step, "reminder", notice_key=key, member_id=member):
                sent += 1
            commit()
    return sent


def send_daily_digests(now: datetime | None = None) -> int:
    """Once a day per approver and tenant, after EMAIL_DIGEST_HOUR in the tenant's timezone:
    the list of steps waiting for them. Off with EMAIL_DIGEST_ENABLED=0."""
    if not current_app.config["EMAIL_DIGEST_ENABLED"]:
        return 0
    now = now or utcnow()
    waiting: dict[tuple[int, int], list[ApprovalStep]] = defaultdict(list)
    for step in db.session.scalars(open_steps_of_pending_items()
                                   .order_by(WorkItem.sla_due_at)):
        for member in waiting_approvers(step) if step.parallel else [None]:
            recipient = step_recipient(step.item, step, member)
            if recipient is not None and recipient.active:
                waiting[(step.item.tenant_id, recipient.id)].append(step)
    sent = 0
    for (tenant_id, user_id), steps in waiting.items():
        tenant = db.session.get(Tenant, tenant_id)
        local = now.astimezone(ZoneInfo(tenant.timezone))
        if local.hour < current_app.config["EMAIL_DIGEST_HOUR"]:
            continue
        day = local.date().isoformat()
        key = f"digest:{tenant_id}:{user_id}:{day}"
        if db.session.scalar(select(exists().where(SentMail.notice_key == key))):
            continue
        send_digest(db.session.get(User, user_id), tenant, steps, day)
        commit()
        sent += 1
    return sent
