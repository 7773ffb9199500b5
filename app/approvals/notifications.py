"""The mails of approval steps: the request sent when a step is assigned, the reminder before
its SLA is at risk, and an approver's daily digest. Each is rendered from app/templates/mail/
in the tenant's branding and sent by the worker; none is sent from a request."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from app.approvals.links import issue_link, link_url, step_up_threshold
from app.approvals.services import named_approver_id, step_recipient, waiting_approvers
from app.extensions import db
from app.mail.models import SentMail
from app.mail.rendering import brand, money, render_mail
from app.mail.sending import already_sent, send_mail
from app.models import ApprovalAssignment, ApprovalStep, StepState, Tenant, User, WorkItem
from app.outbox.services import register_handler
from app.policy.summary import item_summary
from app.unit_of_work import commit
from app.web import localtime
from app.work.states import ApprovalState

def send_step_mail(item: WorkItem, step: ApprovalStep, kind: str,
                   notice_key: str | None = None, member_id: int | None = None) -> bool:
    """Mail the step's approver (or, while they are out of office, their delegate) a fresh
    single-use link; on a parallel step, the member `member_id` (or their delegate), each
    member with a link of their own. False when the step no longer waits for them."""
    if item.state != ApprovalState.PENDING.value or step.state != StepState.OPEN.value:
        return False
    named = member_id if step.parallel else named_approver_id(step)
    if step.parallel and member_id not in waiting_approvers(step):
        return False
    recipient = step_recipient(item, step, named)
    if recipient is None or not recipient.active:
        return False
    if notice_key is not None and already_sent(notice_key):
        return False  # mailed (or maybe mailed) already: its link stays the one that works
    token, row = issue_link(item, step, recipient, purpose=kind)
    tenant = item.tenant
    context = {
        "brand": brand(tenant),
        "item": item_summary(item, step),
        "recipient": recipient,
        "on_behalf_of": (db.session.get(User, named) if named != recipient.id else None),
        "link": link_url(token),
        "expires": localtime(row.expires_at, tenant),
        "step_up": abs(item.amount) > step_up_threshold(item.tenant),
        "reminder": kind == "reminder",
        "escalated": kind == "escalation",
    }
    prefix = {"reminder": "Reminder: ", "escalation": "Escalated: "}.get(kind, "")
    subject = (f"{prefix}Approval needed: {item.title} — {money(item, item.amount)}"
               f" ({tenant.display_name})")
    send_mail(tenant=tenant, recipient=recipient, subject=subject,
              text=render_mail("mail/approval_request.txt", **context),
              html=render_mail("mail/approval_request.html", **context),
              kind=kind, item_id=item.id, step_id=step.id, notice_key=notice_key,
              secrets=(token,))
    return True


def mail_step_assigned(message) -> None:
    """Outbox handler of approval.step_assigned: mail the approval request. Reloads the step
    and checks it still waits for the approver named in the message; the outbox runs this
    once per message."""
    _mail_assignment(message.payload, f"assignment:{message.id}")


def mail_steps_assigned(message) -> int:
    """Outbox handler of approval.steps_assigned (a policy batch): the request mail of each step
    as mail_step_assigned sends it. Each mail commits on its own (a notice key per message and
    step), so a retry after a failed send mails only the steps not yet mailed. Returns how many
    mails went."""
    assignments = (message.payload or {}).get("assignments") or []
    keys = [f"assignment:{message.id}:{a['step_id']}" for a in assignments]
    already = set(db.session.scalars(select(SentMail.notice_key)
                                     .where(SentMail.notice_key.in_(keys)))) if keys else set()
    sent = 0
    for assignment, key in zip(assignments, keys):
        if key in already:
            continue
        if _mail_assignment(assignment, key):
            commit()
            sent += 1
    return sent


def _mail_assignment(assignment: dict, notice_key: str) -> bool:
    """The request mail of one assigned step ({"item_id", "step_id", "approver_id"}), if the
    step still waits for that approver."""
    step = db.session.get(ApprovalStep, assignment["step_id"])
    if step is None or assignment["approver_id"] not in waiting_approvers(step):
        return False
    item = db.session.get(WorkItem, assignment["item_id"])
    return send_step_mail(item, step, "escalation" if assignment.get("escalated") else "assignment",
                          notice_key=notice_key, member_id=assignment["approver_id"])


def send_digest(user: User, tenant: Tenant, steps: list[ApprovalStep], day: str) -> None:
    items = [item_summary(s.item, s) for s in steps]
    context = {"brand": brand(tenant), "recipient": user, "items": items, "day": day,
               "queue_url": current_app.config["APP_BASE_URL"].rstrip("/") + "/"}
    count = len(items)
    subject = (f"{count} approval{'s' if count != 1 else ''} waiting for you "
               f"({tenant.display_name}, {day})")
    send_mail(tenant=tenant, recipient=user, subject=subject,
              text=render_mail("mail/digest.txt", **context),
              html=render_mail("mail/digest.html", **context),
              kind="digest", notice_key=f"digest:{tenant.id}:{user.id}:{day}")


def open_steps_of_pending_items():
    """Open steps, reserved or routed to someone (or parallel, with members), of items waiting
    for a decision."""
    return (select(ApprovalStep).join(WorkItem, WorkItem.id == ApprovalStep.item_id)
            .outerjoin(ApprovalAssignment, ApprovalAssignment.step_id == ApprovalStep.id)
            .where(ApprovalStep.state == StepState.OPEN.value,
                   (ApprovalStep.approver_id.is_not(None))
                   | (ApprovalAssignment.approver_id.is_not(None))
                   | (ApprovalStep.need.is_not(None)),
                   WorkItem.state == ApprovalState.PENDING.value))


# A step was given its approver (or the policy gave many first steps theirs): one email-link
# request per step, to the approver or their delegate.
register_handler(mail_step_assigned, "approval.step_assigned")
register_handler(mail_steps_assigned, "approval.steps_assigned")
