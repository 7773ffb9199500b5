"""Deciding approvals: steps in order, approval limits, and segregation of duties."""
from __future__ import annotations

from sqlalchemy import func, select, update

from app.actors import Actor, ActorType
from app.errors import InvalidTransition, PermissionDenied, SegregationOfDuties, ValidationFailed
from app.extensions import db
from app.models import ApprovalStep, Kind, Membership, MembershipRole, StepState, User, WorkItem
from app.outbox.services import add_message
from app.approvals.models import ApprovalAssignment, ApprovalLinkToken, RevokeReason
from app.types import utcnow
from app.work import kinds, ledger
from app.work.money import clean_item_amounts
from app.work.services import (
    _check_version,
    _money,
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
    when the approver is out of office and delegated to the actor. A step reserved for one
    approver (its approver_id) refuses anyone else; a step only routed to one (an
    ApprovalAssignment) stays open to every approver who may decide it."""
    named = named_approver_id(step)
    if named is None or named == actor.user_id:
        return None
    membership = db.session.query(Membership).filter_by(
        tenant_id=item.tenant_id, user_id=named).one_or_none()
    if membership and membership.delegates_to(actor.user_id, utcnow().date(), item.kind,
                                              item.amount):
        return named
    if step.approver_id is None:
        return None
    raise PermissionDenied(f"This step is assigned to {describe_user(step.approver)}.")


def check_can_decide(actor: Actor, item: WorkItem, action: str) -> tuple[ApprovalStep, int | None]:
    """Everything that must hold before an approver decides the open step; shared by approve,
    reject and request-info, from the browser, an email link, the API or a job alike."""
    if target_state(item.kind, item.state, action) is None:
        return item.current_step(), None  # transition() reports repeats and bad moves
    step = item.current_step()
    if step is None:
        # The item was read as waiting but no step is open: another decision committed
        # between the reads. Say who won, as read now on a connection of its own.
        winner = ledger.committed_conflict(item.id, ledger.conflict_for)
        if winner.message.startswith("Already"):
            raise winner
        raise InvalidTransition("This approval has no open step.")
    if actor.type is ActorType.API and actor.user is None:
        raise PermissionDenied("An API decision must name the person who decided.")
    if actor.type not in (ActorType.USER, ActorType.EMAIL_LINK, ActorType.API):
        return step, None  # the policy engine, the API and the system are checked elsewhere
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
        _check_version(item, expected_version)
        _decide_step(step, actor, StepState.APPROVED.value, on_behalf_of, comment)
        later[0].state = StepState.OPEN.value
        # The next step's routing is part of this change and recorded in its event.
        data["next_approver_id"] = assign_step_approver(item, later[0])
        now = utcnow()
        ledger.change_item(actor, item, ledger.touched(actor, item, now),
                           action="approval.step_approved", event_states=True, comment=comment,
                           on_behalf_of_id=on_behalf_of, data=data, now=now)
        # The item stays pending, so no item.state_changed: source systems hear of the step.
        add_message("item.step_approved",
                    {"item_id": item.id, "step": step.position, "role": step.role,
                     "next_step": later[0].position, "next_role": later[0].role},
                    item.tenant_id)
        revoke_links(item, RevokeReason.DECIDED)
        return item
    item = transition(
        actor, item, "approve", comment=comment, expected_version=expected_version,
        on_behalf_of_id=on_behalf_of, data=data,
        before_flush=lambda i: _decide_step(step, actor, StepState.APPROVED.value,
                                            on_behalf_of, comment),
    )
    revoke_links(item, RevokeReason.DECIDED)
    return item


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

    item = transition(actor, item, "reject", comment=reason, expected_version=expected_version,
                      on_behalf_of_id=on_behalf_of,
                      data={"step": step.position if step else None},
                      before_flush=close_steps if step else None)
    revoke_links(item, RevokeReason.DECIDED)
    return item


def request_info(actor: Actor, item_id: int, *, question: str,
                 expected_version: int | None = None) -> WorkItem:
    question = (question or "").strip()
    if not question:
        raise ValidationFailed("Say what information you need.", {"comment": "is required"})
    item = _approval(actor, item_id)
    step, on_behalf_of = check_can_decide(actor, item, "request_info")
    item = transition(actor, item, "request_info", comment=question,
                      expected_version=expected_version, on_behalf_of_id=on_behalf_of,
                      data={"step": step.position if step else None})
    revoke_links(item, RevokeReason.CLOSED)
    add_message("item.info_requested",
                {"item_id": item.id, "question": question, "asked_by": actor.user_id},
                item.tenant_id)
    return item


def _require_requester(actor: Actor, item: WorkItem, what: str) -> None:
    if actor.acts_as_person and actor.user_id != item.requester_id:
        raise PermissionDenied(f"Only the requester can {what} this item.")


def resubmit(actor: Actor, item_id: int, *, answer: str, amount=None, details: dict | None = None,
             expected_version: int | None = None, files: list | None = None) -> WorkItem:
    """The requester (or, for an item no person requested, its source system) answers the
    question and sends the item back to the step's approver. The answer may amend the amount
    (never upward: a larger amount may need more approval, so it is a new request) or the
    subtype's fields; the amendment is audited with before and after, and it changes the facts
    decided on, so no link sent before can decide it. Files sent with the answer are added in
    the same transaction (app.work.attachments)."""
    from app.work.attachments import attach_files, check_uploads

    answer = (answer or "").strip()
    if not answer:
        raise ValidationFailed("Answer the question before resubmitting.",
                               {"comment": "is required"})
    item = _approval(actor, item_id)
    _require_requester(actor, item, "resubmit")
    check_uploads(list(files or ()))
    before = item.state
    amended = _amendment(item, amount, details)
    item = transition(actor, item, "resubmit", comment=answer, expected_version=expected_version,
                      values={name: after for name, (_before, after) in amended.items()},
                      data={"amended": {name: {"before": b, "after": a}
                                        for name, (b, a) in amended.items()}}
                      if amended else None)
    if before != item.state:  # not a repeated click: the files go with the answer once
        attach_files(actor, item, list(files or ()))
    step = item.current_step()
    named = named_approver_id(step) if step is not None else None
    if before != item.state and named is not None:
        # The old links died with the question; the approver gets a fresh one.
        add_message("approval.step_assigned",
                    {"item_id": item.id, "step_id": step.id, "approver_id": named},
                    item.tenant_id)
    return item


def _amendment(item: WorkItem, amount, details: dict | None) -> dict[str, tuple]:
    """{column: (before, after)} of what an answer amends, checked by the write path's rules."""
    out: dict[str, tuple] = {}
    if amount not in (None, ""):
        new = clean_item_amounts(item.kind, item.subtype, {"amount": amount},
                                 currency=item.currency,
                                 ceiling=item.tenant.max_item_amount)["amount"]
        if new > item.amount:
            raise ValidationFailed(
                "A larger amount may need more approval: withdraw this request and raise a new "
                "one for the new amount.",
                {"amount": f"at most {item.currency} {item.amount:,.2f} when answering"})
        if new != item.amount:
            out["amount"] = (item.amount, new)
    if details:
        wanted = {k: v for k, v in details.items() if v not in (None, "")}
        merged = {**(item.details or {}), **kinds.clean_details(item.kind, wanted)}
        if merged != (item.details or {}):
            out["details"] = (item.details or {}, merged)
    return out


def withdraw(actor: Actor, item_id: int, *, comment: str | None = None,
             expected_version: int | None = None) -> WorkItem:
    item = _approval(actor, item_id)
    _require_requester(actor, item, "withdraw")

    def cancel_steps(i: WorkItem) -> None:
        for s in i.steps:
            if s.state in (StepState.OPEN.value, StepState.WAITING.value):
                s.state = StepState.CANCELLED.value

    item = transition(actor, item, "withdraw", comment=comment,
                      expected_version=expected_version, before_flush=cancel_steps)
    revoke_links(item, RevokeReason.CLOSED)
    return item


# ---------------------------------------------------------------------------------------------
# Naming the approver of a step that opens, and revoking email links that no longer apply.


def _earlier_approvers(item: WorkItem) -> set[int]:
    ids: set[int] = set()
    for other in item.steps:
        if other.state == StepState.APPROVED.value:
            ids |= {i for i in (other.decided_by_id, other.on_behalf_of_id) if i is not None}
    return ids


def _may_decide(membership: Membership | None, item: WorkItem, step: ApprovalStep,
                excluded: set[int]) -> bool:
    """The same rules check_can_decide applies, asked before anyone acts."""
    return (membership is not None and membership.user.active
            and membership.user_id not in excluded
            and step.role in membership.role_set
            and membership.approval_limit >= step.min_limit)


def standing_delegate(membership: Membership, item: WorkItem | None = None) -> int | None:
    """The delegate of someone out of office today, or None; given an item, only when the
    delegation's scope (kinds, maximum amount) covers it."""
    today = utcnow().date()
    if membership.delegate_id is not None and membership.delegates_to(
            membership.delegate_id, today, item.kind if item is not None else None,
            item.amount if item is not None else None):
        return membership.delegate_id
    return None


def named_approver_id(step: ApprovalStep) -> int | None:
    """The step's approver: the one it is reserved for, else the one it was routed to."""
    if step.approver_id is not None:
        return step.approver_id
    assignment = db.session.get(ApprovalAssignment, step.id) if step.id is not None else None
    return assignment.approver_id if assignment else None


def step_recipient(item: WorkItem, step: ApprovalStep) -> User | None:
    """Who is mailed for a step today: its approver, or their delegate while they are out of
    office."""
    named = named_approver_id(step)
    if named is None:
        return None
    membership = db.session.scalars(select(Membership).where(
        Membership.tenant_id == item.tenant_id, Membership.user_id == named)).one_or_none()
    if membership is None:
        return None
    delegate_id = standing_delegate(membership, item)
    return db.session.get(User, delegate_id) if delegate_id else membership.user


def _workload():
    """Open steps per approver, reserved or routed."""
    who = func.coalesce(ApprovalStep.approver_id, ApprovalAssignment.approver_id)
    return (
        select(who.label("approver_id"), func.count().label("n"))
        .select_from(ApprovalStep)
        .outerjoin(ApprovalAssignment, ApprovalAssignment.step_id == ApprovalStep.id)
        .where(ApprovalStep.state == StepState.OPEN.value, who.is_not(None))
        .group_by(who).subquery()
    )


def choose_approver(item: WorkItem, step: ApprovalStep) -> int | None:
    """The member to route a step to: holds the step's role with a sufficient limit, is not
    the requester and approved no earlier step; the one with the fewest open steps wins (then
    the longest-standing member). Someone out of office is chosen only if their delegate could
    decide the step, so the work never lands with nobody; someone out of office whose
    delegation does not cover the item (its kind or amount) only when nobody present can."""
    excluded = _earlier_approvers(item) | ({item.requester_id} if item.requester_id else set())
    load = _workload()
    ranked = (
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .join(MembershipRole, MembershipRole.membership_id == Membership.id)
        .outerjoin(load, load.c.approver_id == Membership.user_id)
        .where(Membership.tenant_id == item.tenant_id, MembershipRole.role == step.role,
               Membership.approval_limit >= step.min_limit, User.active.is_(True))
        .order_by(func.coalesce(load.c.n, 0), Membership.user_id)
    )
    today = utcnow().date()
    away_uncovered = None
    # The first few least-loaded members almost always include the one chosen; loading every
    # approver of a large tenant (and their memberships) for each step would cost far more.
    seen = 0
    for limit in (CANDIDATES_FIRST, None):
        candidates = db.session.scalars(ranked.limit(limit)).all()
        for membership in candidates[seen:]:
            if not _may_decide(membership, item, step, excluded):
                continue
            delegate_id = standing_delegate(membership, item)
            if delegate_id is not None:
                delegate = db.session.scalars(select(Membership).where(
                    Membership.tenant_id == item.tenant_id, Membership.user_id == delegate_id)
                ).one_or_none()
                if not _may_decide(delegate, item, step, excluded):
                    continue
            elif membership.is_away(today):
                away_uncovered = away_uncovered or membership.user_id
                continue
            return membership.user_id
        seen = len(candidates)
        if limit is not None and len(candidates) < limit:
            break
    return away_uncovered


CANDIDATES_FIRST = 8


def assign_step_approver(item: WorkItem, step: ApprovalStep) -> int | None:
    """Route a step that has just opened to its approver and queue the mail to them (or their
    delegate). A step reserved for someone goes to them; otherwise choose_approver picks; with
    nobody eligible it stays with the queue. Returns the approver's id, which the caller puts
    in the audit event of the change that opened the step. Never commits."""
    approver_id = step.approver_id or choose_approver(item, step)
    if approver_id is None:
        return None
    if step.approver_id is None:
        db.session.add(ApprovalAssignment(step_id=step.id, item_id=item.id,
                                          approver_id=approver_id))
    add_message("approval.step_assigned",
                {"item_id": item.id, "step_id": step.id, "approver_id": approver_id},
                item.tenant_id)
    return approver_id


def assign_open_step(item: WorkItem) -> int | None:
    """For a new approval: route its first open step."""
    step = item.current_step()
    return assign_step_approver(item, step) if step is not None else None


def revoke_links(item: WorkItem, reason: RevokeReason) -> None:
    """Revoke every unused email link of the item: the step it was for has been decided (or
    the item moved on), so the link must not act later."""
    db.session.execute(
        update(ApprovalLinkToken)
        .where(ApprovalLinkToken.item_id == item.id, ApprovalLinkToken.used_at.is_(None),
               ApprovalLinkToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason.value)
    )
