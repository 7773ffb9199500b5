"""What the item page shows: the item, its steps, its timeline, and the actions open to the
viewer. Read-only; the write path decides again when an action is posted."""
from __future__ import annotations

from sqlalchemy import select

from app.actors import Actor
from app.approvals.services import named_approver_id, step_progress, step_recipient
from app.approvals.wording import step_account, step_needs
from app.audit.models import AuditEvent
from app.extensions import db
from app.items.forms import ActionForm, CommentForm
from app.models import Kind, Role, User, WorkItem
from app.policy.engine import HOLD_LABELS
from app.policy.evaluation import decision_receipt
from app.queues.queries import people_who_work
from app.work import kinds
from app.work.attachments import (
    ACCEPT,
    item_attachments,
    max_bytes,
    may_attach,
    per_change,
    size_text,
)
from app.work.queries import open_items, scoped_items
from app.work.states import (
    ACTION_LABELS,
    ACTION_ROLES,
    COMMENT_ROLES,
    FINAL_STATES,
    WORKER_ROLES,
    actions_from,
)

# Actions that need a text, and what the text box is called for them.
NEEDS_TEXT = {
    "reject": "Reason", "request_info": "What do you need?", "resubmit": "Your answer",
    "escalate": "Why escalate?", "wait_on_customer": "What are you waiting for?",
}


EVENT_LABELS = {
    "item.created": "created the item",
    "item.claimed": "claimed",
    "item.released": "released",
    "item.reassigned": "reassigned",
    "item.commented": "commented",
    "attachment.added": "added a file",
    "approval.step_approved": "approved a step",
    "approval.voted": "voted on a parallel step",
    "approval.step_escalated": "escalated a waiting step",
    "approval.escalation_exhausted": "found nobody further to escalate to",
    "item.approve": "approved",
    "item.reject": "rejected",
    "item.request_info": "asked for information",
    "item.resubmit": "answered and resubmitted",
    "item.withdraw": "withdrew the request",
    "item.expire": "expired",
    "item.investigate": "started investigating",
    "item.resolve": "resolved",
    "item.wait_on_customer": "is waiting on the customer",
    "item.escalate": "escalated",
    "item.review": "started the review",
    "item.accept": "accepted",
    "item.partially_accept": "partially accepted",
    "policy.routed": "routed the item",
}


def event_label(action: str) -> str:
    return EVENT_LABELS.get(action, action.split(".")[-1].replace("_", " "))


def available_actions(actor: Actor, item: WorkItem) -> list[dict]:
    roles = actor.roles_in(item.tenant_id)
    out = []
    for action in actions_from(item.kind, item.state):
        if action == "expire":
            continue
        if action in ("resubmit", "withdraw"):
            if actor.user_id != item.requester_id:
                continue
        elif not roles & ACTION_ROLES[item.kind][action]:
            continue
        out.append({"name": action, "label": ACTION_LABELS[action],
                    "text_label": NEEDS_TEXT.get(action),
                    "optional_label": None if action in NEEDS_TEXT else "Comment (optional)",
                    "danger": action in ("reject", "escalate", "withdraw")})
    return out


# The newest events the timeline shows: an item argued over for months (or a source system
# that comments in a loop) must not make its pane cost more; the audit trail has them all.
TIMELINE_LIMIT = 100


def item_context(actor: Actor, item: WorkItem) -> dict:
    events = db.session.scalars(
        select(AuditEvent).where(AuditEvent.chain_id == item.tenant_id,
                                 AuditEvent.item_id == item.id)
        .order_by(AuditEvent.seq.desc()).limit(TIMELINE_LIMIT + 1)
    ).all()[::-1]
    earlier_events = len(events) > TIMELINE_LIMIT
    events = events[1:] if earlier_events else events
    user_ids = {e.actor_id for e in events} | {e.on_behalf_of_id for e in events}
    users = {u.id: u for u in db.session.scalars(
        select(User).where(User.id.in_({u for u in user_ids if u})))}
    others = db.session.scalars(
        scoped_items(actor)
        .where(WorkItem.tenant_id == item.tenant_id, WorkItem.counterparty == item.counterparty,
               WorkItem.id != item.id, open_items())
        .order_by(WorkItem.created_at.desc()).limit(10)
    ).all()
    roles = actor.roles_in(item.tenant_id)
    final = item.state in FINAL_STATES[item.kind]
    return {
        "item": item,
        "tenant": item.tenant,
        "subtype_label": kinds.SUBTYPES[item.kind].get(item.subtype, item.subtype),
        "details": kinds.labelled_details(item.details or {}),
        "events": events,
        "earlier_events": earlier_events,
        "users": users,
        "others": others,
        "actions": available_actions(actor, item),
        "can_claim": not final and item.assignee_id is None and bool(roles & WORKER_ROLES[item.kind]),
        "can_release": not final and item.assignee_id is not None and (
            item.assignee_id == actor.user_id or Role.MANAGER.value in roles),
        "can_comment": bool(roles & COMMENT_ROLES),
        "reassign_to": (people_who_work([item.tenant_id], WORKER_ROLES[item.kind])
                        if not final and Role.MANAGER.value in roles else []),
        "action_form": ActionForm(formdata=None),
        "comment_form": CommentForm(formdata=None),
        "resolution_codes": kinds.RESOLUTION_CODES,
        "Kind": Kind,
        "event_label": event_label,
        "receipt": receipt_view(item),
        "attachments": item_attachments(item.id),
        "can_attach": may_attach(actor, item),
        "accept": ACCEPT,
        "max_file": size_text(max_bytes()),
        "per_change": per_change(),
        **routed_to(item),
        **step_words_of(item),
    }


def step_words_of(item: WorkItem) -> dict:
    """Each step's progress (a parallel step's), what it needs in words, and its account (what
    became of it, as the decision receipt says it), by step id."""
    progress = step_progress_of(item)
    steps = item.steps if item.kind == Kind.APPROVAL.value else []
    return {"progress": progress,
            "step_words": {s.id: step_needs(item, s, progress.get(s.id)) for s in steps},
            "step_accounts": [step_account(item, s, progress.get(s.id)) for s in steps]}


def step_progress_of(item: WorkItem) -> dict:
    """The progress of each parallel step of an approval, by step id."""
    if item.kind != Kind.APPROVAL.value:
        return {}
    return {s.id: p for s in item.steps if (p := step_progress(s)) is not None}


def routed_to(item: WorkItem) -> dict:
    """Who the open step waits on: the approver it was routed (or reserved) to, and their
    delegate while they are away."""
    step = item.current_step() if item.kind == Kind.APPROVAL.value else None
    named = named_approver_id(step) if step is not None else None
    if named is None:
        return {"routed_to": None, "routed_to_delegate": None}
    person = db.session.get(User, named)
    recipient = step_recipient(item, step)
    return {"routed_to": person,
            "routed_to_delegate": recipient if recipient is not None and recipient.id != named
            else None}


def receipt_view(item: WorkItem) -> dict | None:
    """The policy's decision receipt of the item, as the detail pane shows it."""
    receipt = decision_receipt(item.id)
    if receipt is None:
        return None
    return {"receipt": receipt, "held": HOLD_LABELS.get(receipt.held_by or ""),
            "inputs": sorted((receipt.inputs or {}).items())}
