"""Deciding approvals: steps in order, approval limits, and segregation of duties."""
from __future__ import annotations

from app.actors import Actor, ActorType
from app.audit.services import record_event
from app.errors import InvalidTransition, PermissionDenied, SegregationOfDuties, ValidationFailed
from app.extensions import db
from app.models import ApprovalStep, Kind, Membership, StepState, WorkItem
from app.types import utcnow
from app.work.services import (
    _flush_or_conflict,
    _money,
    _touch,
    describe_user,
    get_item,
    require_action_role,
    transition,
)
from app.work.states import ApprovalState, target_state


def _approval(actor: Actor, item_id: int) -> WorkItem:
    item = get_item(actor, item_id)
    if item.kind != Kind.APPROVAL.value:
        raise InvalidTransition("This is not an approval.")
    return item


def _acting_for(actor: Actor, item: WorkItem, step: ApprovalStep) -> int | None:
    """Who the actor stands in for on this step: None for themselves, the named approver's id
    when the approver is out of office and delegated to the actor; refuse anyone else."""
    if step.approver_id is None or step.approver_id == actor.user_id:
        return None
    membership = db.session.query(Membership).filter_by(
        tenant_id=item.tenant_id, user_id=step.approver_id).one_or_none()
    if membership and membership.delegates_to(actor.user_id, utcnow().date()):
        return step.approver_id
    raise PermissionDenied(f"This step is assigned to {describe_user(step.approver)}.")


def check_can_decide(actor: Actor, item: WorkItem, action: str) -> tuple[ApprovalStep, int | None]:
    """Everything that must hold before an approver decides the open step; shared by approve,
    reject and request-info, from the browser, an email link, the API or a job alike."""
    if target_state(item.kind, item.state, action) is None:
        return item.current_step(), None  # transition() reports repeats and bad moves
    step = item.current_step()
    if step is None:
        raise InvalidTransition("This approval has no open step.")
    if actor.type is not ActorType.USER:
        return step, None
    roles = require_action_role(actor, item, action)
    if step.role not in roles:
        raise PermissionDenied(f"Step {step.position} needs the {step.role} role.")
    on_behalf_of = _acting_for(actor, item, step)
    if actor.user_id == item.requester_id:
        raise SegregationOfDuties("You requested this item; someone else must decide it.")
    for other in item.steps:
        if other.state == StepState.APPROVED.value and actor.user_id in (
            other.decided_by_id, other.on_behalf_of_id
        ):
            raise SegregationOfDuties(
                f"You approved step {other.position} of this item; "
                "another approver must decide this step."
            )
    membership = actor.user.membership_in(item.tenant_id)
    if membership.approval_limit < step.min_limit:
        raise PermissionDenied(
            f"Your approval limit ({_money(item, membership.approval_limit)}) is below what "
            f"step {step.position} needs ({_money(item, step.min_limit)})."
        )
    return step, on_behalf_of


def _decide_step(step: ApprovalStep, actor: Actor, state: str, on_behalf_of: int | None,
                 comment: str | None) -> None:
    step.state = state
    step.decided_by_id = actor.user_id
    step.on_behalf_of_id = on_behalf_of
    step.decided_at = utcnow()
    step.comment = comment


def approve_step(actor: Actor, item_id: int, *, comment: str | None = None,
                 expected_version: int | None = None) -> WorkItem:
    """Approve the open step; the last step approves the item, an earlier one opens the next."""
    item = _approval(actor, item_id)
    step, on_behalf_of = check_can_decide(actor, item, "approve")
    if item.state != ApprovalState.PENDING.value or step is None:
        return transition(actor, item, "approve", expected_version=expected_version)
    later = [s for s in item.steps if s.position > step.position
             and s.state == StepState.WAITING.value]
    data = {"step": step.position, "amount": item.amount, "policy_version": item.policy_version}
    if later:
        if expected_version is not None and item.version != expected_version:
            from app.work.services import _conflict_for

            raise _conflict_for(item)
        _decide_step(step, actor, StepState.APPROVED.value, on_behalf_of, comment)
        later[0].state = StepState.OPEN.value
        _touch(item, actor)
        _flush_or_conflict(item)
        record_event(actor, "approval.step_approved", tenant_id=item.tenant_id, item_id=item.id,
                     from_state=item.state, to_state=item.state, comment=comment,
                     on_behalf_of_id=on_behalf_of, data=data)
        return item
    return transition(
        actor, item, "approve", comment=comment, expected_version=expected_version,
        on_behalf_of_id=on_behalf_of, data=data,
        before_flush=lambda i: _decide_step(step, actor, StepState.APPROVED.value,
                                            on_behalf_of, comment),
    )


def reject_approval(actor: Actor, item_id: int, *, reason: str,
                    expected_version: int | None = None) -> WorkItem:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Give a reason for rejecting.", {"comment": "a reason is required"})
    item = _approval(actor, item_id)
    step, on_behalf_of = check_can_decide(actor, item, "reject")

    def close_steps(i: WorkItem) -> None:
        _decide_step(step, actor, StepState.REJECTED.value, on_behalf_of, reason)
        for s in i.steps:
            if s.state == StepState.WAITING.value:
                s.state = StepState.CANCELLED.value

    return transition(actor, item, "reject", comment=reason, expected_version=expected_version,
                      on_behalf_of_id=on_behalf_of,
                      data={"step": step.position if step else None},
                      before_flush=close_steps if step else None)


def request_info(actor: Actor, item_id: int, *, question: str,
                 expected_version: int | None = None) -> WorkItem:
    question = (question or "").strip()
    if not question:
        raise ValidationFailed("Say what information you need.", {"comment": "is required"})
    item = _approval(actor, item_id)
    step, on_behalf_of = check_can_decide(actor, item, "request_info")
    return transition(actor, item, "request_info", comment=question,
                      expected_version=expected_version, on_behalf_of_id=on_behalf_of,
                      data={"step": step.position if step else None})


def _require_requester(actor: Actor, item: WorkItem, what: str) -> None:
    if actor.type is ActorType.USER and actor.user_id != item.requester_id:
        raise PermissionDenied(f"Only the requester can {what} this item.")


def resubmit(actor: Actor, item_id: int, *, answer: str,
             expected_version: int | None = None) -> WorkItem:
    answer = (answer or "").strip()
    if not answer:
        raise ValidationFailed("Answer the question before resubmitting.",
                               {"comment": "is required"})
    item = _approval(actor, item_id)
    _require_requester(actor, item, "resubmit")
    return transition(actor, item, "resubmit", comment=answer, expected_version=expected_version)


def withdraw(actor: Actor, item_id: int, *, comment: str | None = None,
             expected_version: int | None = None) -> WorkItem:
    item = _approval(actor, item_id)
    _require_requester(actor, item, "withdraw")

    def cancel_steps(i: WorkItem) -> None:
        for s in i.steps:
            if s.state in (StepState.OPEN.value, StepState.WAITING.value):
                s.state = StepState.CANCELLED.value

    return transition(actor, item, "withdraw", comment=comment,
                      expected_version=expected_version, before_flush=cancel_steps)
