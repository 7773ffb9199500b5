"""One entry for "do this action on that item", used by the browser, email links, the API and
the CLI alike; it routes to the kind's service function, which holds the rules."""
from __future__ import annotations

from app.actors import Actor
from app.approvals import services as approvals
from app.errors import InvalidTransition
from app.exceptions import services as exceptions
from app.models import Kind, StepState, WorkItem
from app.work import services as work


def perform(actor: Actor, item_id: int, action: str, *, comment: str | None = None,
            resolution_code: str | None = None, adjustment_amount=None,
            expected_version: int | None = None, assignee_id: int | None = None,
            amount=None, files: list | None = None) -> WorkItem:
    """`files` (evidence, app.work.attachments.Upload) go only with a requester's answer."""
    if files and action != "resubmit":
        from app.errors import ValidationFailed

        raise ValidationFailed("Add files with the Add files button, or with your answer.",
                               {"files": "not taken with this action"})
    if action == "claim":
        return work.claim_item(actor, item_id, expected_version)
    if action == "release":
        return work.release_item(actor, item_id, expected_version)
    if action == "reassign":
        return work.reassign_item(actor, item_id, assignee_id or 0, expected_version)
    item = work.get_item(actor, item_id)
    v = expected_version
    if item.kind == Kind.APPROVAL.value:
        if action == "approve":
            return approvals.approve_step(actor, item_id, comment=comment, expected_version=v)
        if action == "reject":
            return approvals.reject_approval(actor, item_id, reason=comment, expected_version=v)
        if action == "request_info":
            return approvals.request_info(actor, item_id, question=comment, expected_version=v)
        if action == "resubmit":
            return approvals.resubmit(actor, item_id, answer=comment, amount=amount,
                                      expected_version=v, files=files)
        if action == "withdraw":
            return approvals.withdraw(actor, item_id, comment=comment, expected_version=v)
    elif item.kind == Kind.BILLING_EXCEPTION.value:
        if action in ("investigate", "resolve", "wait_on_customer", "escalate"):
            return exceptions.act_on_exception(actor, item_id, action, comment=comment,
                                               resolution_code=resolution_code,
                                               expected_version=v)
    elif item.kind == Kind.SETTLEMENT_DISPUTE.value:
        if action in ("review", "accept", "reject", "partially_accept", "escalate"):
            return exceptions.act_on_dispute(actor, item_id, action, comment=comment,
                                             adjustment_amount=adjustment_amount,
                                             expected_version=v)
    raise InvalidTransition(f"'{action}' is not an action on {item.kind_label.lower()}s.")


# How a message names the role a step waits on ("now waiting on a manager").
ROLE_WORDS = {"approver": "an approver", "manager": "a manager"}
_DONE_WORDS = {"claim": "Claimed", "release": "Released", "reject": "Rejected",
               "request_info": "Asked the requester about", "resubmit": "Resubmitted",
               "withdraw": "Withdrew", "investigate": "Investigating", "resolve": "Resolved",
               "wait_on_customer": "Waiting on the customer for", "escalate": "Escalated",
               "review": "Reviewing", "accept": "Accepted", "partially_accept": "Partially accepted"}


def outcome_message(item: WorkItem, action: str) -> str:
    """What an action truly did, in a sentence the person who acted reads next: an approval
    whose first of two steps was approved is not "approved"."""
    ref = item.external_ref or f"#{item.id}"
    if action in ("approve", "reject") and item.kind == Kind.APPROVAL.value \
            and item.state == "pending":
        vote = _vote_message(item, action, ref)
        if vote:
            return vote
    if action == "approve" and item.kind == Kind.APPROVAL.value and item.state == "pending":
        steps = sorted(item.steps, key=lambda s: s.position)
        done = sum(1 for s in steps if s.state == StepState.APPROVED.value)
        waiting = next((s for s in steps if s.state == StepState.OPEN.value), None)
        who = ROLE_WORDS.get(waiting.role, waiting.role) if waiting else "the next step"
        return f"Step {done} of {len(steps)} of {ref} approved — now waiting on {who}"
    if action == "approve":
        return f"Approved {ref}"
    if action == "reassign":
        return f"Reassigned {ref} to {item.assignee.name if item.assignee else 'nobody'}"
    return f"{_DONE_WORDS.get(action, action.replace('_', ' ').capitalize())} {ref}"


def _vote_message(item: WorkItem, action: str, ref: str) -> str | None:
    """After a vote that left a parallel step open: what the vote did and what the step still
    needs."""
    step = item.current_step()
    progress = approvals.step_progress(step) if step is not None else None
    if progress is None:
        return None
    more = progress["more"]
    needs = f"step {step.position} needs {more} more approval{'s' if more != 1 else ''}"
    if action == "reject":
        return (f"Your rejection of {ref} is counted; {needs}, and it is rejected once that "
                "can no longer be met")
    return f"Your approval of {ref} is counted — {needs}"
