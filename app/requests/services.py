"""Requests as their requester lives them: raising one in the app (through the same write path
as the API: policy, SLA, routing, audit), and the list of one's own requests with where each
waits. Never commits."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, select
from sqlalchemy.orm import selectinload

from app.actors import Actor
from app.approvals.wording import ROLE_WORDS
from app.errors import ValidationFailed
from app.extensions import db
from app.models import ApprovalAssignment, ApprovalStep, Kind, StepState, User, WorkItem
from app.work import kinds
from app.work.attachments import Upload, attach_files, check_uploads
from app.work.queries import scoped_items
from app.work.services import create_item

SOURCE_SYSTEM = "cleardesk"
_KEY = re.compile(r"^[0-9a-f]{32}$")


def submit_request(actor: Actor, *, tenant_id: int, subtype: str, title: str | None,
                   counterparty: str, amount, reason: str, fields: dict,
                   request_key: str, files: list[Upload] = ()) -> tuple[WorkItem, bool]:
    """Raise an approval request as the signed-in requester, with its evidence files (checked
    before anything is written, and added in the same transaction: a request is never made
    without the files it was sent with). `request_key` (a fresh key the form carried) makes it
    idempotent: a double submit returns the request already made, and adds no file twice."""
    errors: dict[str, str] = {}
    file_error = None
    try:
        check_uploads(list(files))
    except ValidationFailed as refused:
        file_error = refused
        errors["files"] = refused.message
    if subtype not in kinds.SUBTYPES[Kind.APPROVAL.value]:
        raise ValidationFailed("Choose what you need approved.", {"subtype": "unknown"})
    if not _KEY.match(request_key or ""):
        raise ValidationFailed("The form has expired; fill it in again.", {"request_key": "bad"})
    wanted = kinds.SUBTYPE_FIELDS.get(subtype, ())
    details = {name: (fields.get(name) or "").strip() or None for name in wanted}
    if wanted and not details[wanted[0]]:
        errors[wanted[0]] = "is required"
    reason = (reason or "").strip()
    if not reason:
        errors["reason"] = "say why this is needed"
    if not (counterparty or "").strip():
        errors["counterparty"] = "is required"
    if not str(amount or "").strip():
        errors["amount"] = "is required"
    if file_error is not None and len(errors) == 1:
        raise file_error
    if errors:
        raise ValidationFailed("Some fields need attention.", errors)
    details["reason"] = reason
    label = kinds.SUBTYPES[Kind.APPROVAL.value][subtype]
    item, created = create_item(
        actor, tenant_id=tenant_id, kind=Kind.APPROVAL.value, subtype=subtype,
        title=(title or "").strip() or f"{label} for {counterparty.strip()}",
        external_ref=f"REQ-{request_key[:12].upper()}", source_system=SOURCE_SYSTEM,
        counterparty=counterparty.strip(), amount=amount,
        details={k: v for k, v in details.items() if v is not None})
    if created:
        attach_files(actor, item, list(files))
    return item, created


@dataclass(frozen=True)
class Waiting:
    """Where an open request waits: its step, who it is routed to, and when it is due."""

    step: int | None
    steps: int
    role: str | None
    routed_to: str | None
    due: datetime | None

    @property
    def sentence(self) -> str:
        if self.step is None:
            return "Being routed by the policy"
        who = self.routed_to or ROLE_WORDS.get(self.role or "", self.role or "someone")
        return f"Step {self.step} of {self.steps}: waiting on {who}"


NEEDS_ANSWER = "info_requested"


def my_requests(actor: Actor, limit: int = 200) -> list[WorkItem]:
    """The actor's own requests, those waiting for their answer first, then the newest."""
    return list(db.session.scalars(
        scoped_items(actor).where(WorkItem.requester_id == actor.user_id)
        .options(selectinload(WorkItem.steps), selectinload(WorkItem.tenant))
        .order_by(case((WorkItem.state == NEEDS_ANSWER, 0), else_=1),
                  WorkItem.created_at.desc(), WorkItem.id.desc())
        .limit(limit)))


def where_waiting(items: list[WorkItem]) -> dict[int, Waiting]:
    """For each open approval: its open step and the person it is routed to (one query)."""
    open_steps = {i.id: s for i in items for s in i.steps if s.state == StepState.OPEN.value}
    routed = dict(db.session.execute(
        select(ApprovalAssignment.step_id, User.name)
        .join(User, User.id == ApprovalAssignment.approver_id)
        .where(ApprovalAssignment.step_id.in_([s.id for s in open_steps.values()]))).all()) \
        if open_steps else {}
    out = {}
    for item in items:
        if item.resolved_at is not None:
            continue
        step: ApprovalStep | None = open_steps.get(item.id)
        out[item.id] = Waiting(step.position if step else None, len(item.steps),
                               step.role if step else None,
                               routed.get(step.id) if step else None, item.sla_due_at)
    return out
