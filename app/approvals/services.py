"""Deciding approvals: steps in order, approval limits, and segregation of duties. A step is
decided by one person, or (a parallel step) by the votes of its members: all of them, any one,
or M of N."""
from __future__ import annotations

from sqlalchemy import func, select, update

from app.actors import Actor, ActorType
from app.approvals.models import ApprovalLinkToken, ApprovalStepMember, ApprovalVote, RevokeReason
from app.audit.services import record_event
from app.errors import InvalidTransition, PermissionDenied, SegregationOfDuties, ValidationFailed
from app.extensions import db
from app.models import (
    ApprovalAssignment,
    ApprovalStep,
    ApproverGroup,
    ApproverGroupMember,
    Kind,
    Membership,
    MembershipRole,
    Role,
    StepState,
    User,
    WorkItem,
)
from app.outbox.services import add_message
from app.types import money_text, utcnow
from app.work import kinds, ledger
from app.work.actions import register_actions
from app.work.assignment import load_table
from app.work.attachments import attach_files, check_uploads
from app.work.money import clean_item_amounts
from app.work.queries import get_item
from app.work.rollups import record_step_decision
from app.work.services import (
    check_version,
    describe_user,
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
    if step.parallel:
        if actor.user_id == item.requester_id:
            raise SegregationOfDuties("You requested this item; someone else must decide it.")
        on_behalf_of = _voting_for(actor, item, step)
    else:
        if step.role not in roles:
            raise PermissionDenied(f"Step {step.position} needs the {step.role} role.")
        on_behalf_of = _acting_for(actor, item, step)
    if actor.user_id == item.requester_id:
        raise SegregationOfDuties("You requested this item; someone else must decide it.")
    earlier = _approvers_by_step(item)
    for other in item.steps:
        if other.id != step.id and actor.user_id in earlier.get(other.id, ()):
            raise SegregationOfDuties(
                f"You approved step {other.position} of this item; "
                "another approver must decide this step."
            )
    membership = actor.user.membership_in(item.tenant_id)
    if membership.approval_limit < step.min_limit:
        raise PermissionDenied(
            f"Your approval limit ({money_text(item, membership.approval_limit)}) is below what "
            f"step {step.position} needs ({money_text(item, step.min_limit)})."
        )
    return step, on_behalf_of


def _voting_for(actor: Actor, item: WorkItem, step: ApprovalStep) -> int | None:
    """Whose vote the actor casts on a parallel step: their own as a member (None), or that of
    a member who is out of office and delegated to them. No one counts twice: a person who
    has voted (for themselves or for someone) casts no other vote on the step."""
    votes = step_votes(step)
    if any(v.decided_by_id == actor.user_id for v in votes):
        raise SegregationOfDuties(f"You have already decided on step {step.position}; "
                                  "your vote counts once.")
    voted = {v.member_id for v in votes}
    members = step_member_ids(step)
    if actor.user_id in members and actor.user_id not in voted:
        return None
    if actor.user_id in members or actor.user_id in voted:
        raise SegregationOfDuties(f"Your vote on step {step.position} has been cast already.")
    today = utcnow().date()
    standing_for = db.session.scalars(select(Membership).where(
        Membership.tenant_id == item.tenant_id, Membership.user_id.in_(members - voted),
        Membership.delegate_id == actor.user_id).order_by(Membership.user_id)).all()
    for membership in standing_for:
        if membership.delegates_to(actor.user_id, today, item.kind, item.amount):
            return membership.user_id
    raise PermissionDenied(f"Step {step.position} waits on {step_who(step)}; "
                           "you are not one of them.")


def step_member_ids(step: ApprovalStep) -> set[int]:
    return set(db.session.scalars(select(ApprovalStepMember.user_id)
                                  .where(ApprovalStepMember.step_id == step.id)))


def step_votes(step: ApprovalStep) -> list[ApprovalVote]:
    return list(db.session.scalars(select(ApprovalVote).where(ApprovalVote.step_id == step.id)
                                   .order_by(ApprovalVote.id)))


def step_who(step: ApprovalStep) -> str:
    """Who a parallel step waits on, in words: the group's name, or the role's holders."""
    if step.group_id is not None:
        group = db.session.get(ApproverGroup, step.group_id)
        return f"the members of {group.name}" if group else "a group's members"
    return f"the {step.role}s named on it"


def need_words(step: ApprovalStep) -> str:
    if step.need == "all":
        return "all of"
    if step.need == "any":
        return "any one of"
    return f"{step.quorum} of"


def step_progress(step: ApprovalStep) -> dict | None:
    """A parallel step as people read it: whom it waits on and how many of them, who has
    decided (and how, for whom), who is still needed, how many more approvals it takes; None
    for a one-person step. What the item page, the API and the receipt show."""
    if not step.parallel:
        return None
    votes = step_votes(step)
    members = step_member_ids(step)
    voted = {v.member_id for v in votes}
    waiting = sorted(members - voted)
    approvals = sum(1 for v in votes if v.decision == "approve")
    users = {u.id: u for u in db.session.scalars(select(User).where(
        User.id.in_(members | voted | {v.decided_by_id for v in votes})))} if members else {}
    quorum = step.quorum or 0
    return {
        "who": step_who(step), "need": need_words(step), "quorum": quorum,
        "members": [users[m] for m in sorted(members) if m in users],
        "votes": [{"member": users.get(v.member_id), "decided_by": users.get(v.decided_by_id),
                   "decision": v.decision, "decided_at": v.decided_at, "comment": v.comment}
                  for v in votes],
        "waiting": [users[m] for m in waiting if m in users],
        "approvals": approvals,
        "more": max(quorum - approvals, 0) if step.state == StepState.OPEN.value else 0,
        "reject_when": step.reject_when or "any",
        "cannot_be_met": step.state == StepState.OPEN.value and approvals + len(waiting) < quorum,
    }


def _decide_step(item: WorkItem, step: ApprovalStep, actor: Actor, state: str,
                 on_behalf_of: int | None, comment: str | None) -> None:
    step.state = state
    step.decided_by_id = actor.user_id
    step.on_behalf_of_id = on_behalf_of
    step.decided_at = utcnow()
    step.comment = comment
    record_step_decision(db.session, item, step)


def approve_step(actor: Actor, item_id: int, *, comment: str | None = None,
                 expected_version: int | None = None) -> WorkItem:
    """Approve the open step; the last step approves the item, an earlier one opens the next.
    On a parallel step the approval is the actor's vote, and the vote that meets the quorum
    approves the step."""
    item = _approval(actor, item_id)
    item = _locked_for_votes(actor, item)
    step, on_behalf_of = check_can_decide(actor, item, "approve")
    if item.state != ApprovalState.PENDING.value or step is None:
        return transition(actor, item, "approve", expected_version=expected_version)
    data = {"step": step.position, "amount": item.amount, "policy_version": item.policy_version}
    if step.parallel:
        tally = _cast_vote(actor, item, step, on_behalf_of, "approve", comment)
        data.update(tally)
        if tally["approvals"] < step.quorum:
            return _record_vote(actor, item, step, on_behalf_of, comment, expected_version, data)
    return _step_approved(actor, item, step, on_behalf_of, comment, expected_version, data)


def _step_approved(actor: Actor, item: WorkItem, step: ApprovalStep, on_behalf_of: int | None,
                   comment: str | None, expected_version: int | None, data: dict) -> WorkItem:
    later = [s for s in item.steps if s.position > step.position
             and s.state == StepState.WAITING.value]
    if later:
        check_version(item, expected_version)
        _decide_step(item, step, actor, StepState.APPROVED.value, on_behalf_of, comment)
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
        before_flush=lambda i: _decide_step(i, step, actor, StepState.APPROVED.value,
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
    item = _locked_for_votes(actor, item)
    step, on_behalf_of = check_can_decide(actor, item, "reject")
    data = {"step": step.position if step else None}
    if step is not None and step.parallel and item.state == ApprovalState.PENDING.value:
        tally = _cast_vote(actor, item, step, on_behalf_of, "reject", reason)
        data.update(tally)
        if step.reject_when == "quorum" and tally["approvals"] + tally["undecided"] >= step.quorum:
            # The quorum can still be met: the rejection is one member's vote.
            return _record_vote(actor, item, step, on_behalf_of, reason, expected_version, data)

    def close_steps(i: WorkItem) -> None:
        _decide_step(i, step, actor, StepState.REJECTED.value, on_behalf_of, reason)
        for s in i.steps:
            if s.state == StepState.WAITING.value:
                s.state = StepState.CANCELLED.value

    item = transition(actor, item, "reject", comment=reason, expected_version=expected_version,
                      on_behalf_of_id=on_behalf_of, data=data,
                      before_flush=close_steps if step else None)
    revoke_links(item, RevokeReason.DECIDED)
    return item


def _locked_for_votes(actor: Actor, item: WorkItem) -> WorkItem:
    """Members of a parallel step deciding at the same moment take turns: the item's row is
    locked (PostgreSQL) and read again, so each vote counts against the votes committed before
    it and exactly one of them meets the quorum (or rejects). A one-person step needs no lock:
    its version guard lets one decision win and tells the other who won."""
    step = item.current_step()
    if step is None or not step.parallel:
        return item
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(select(WorkItem.id).where(WorkItem.id == item.id).with_for_update())
    for row in (item, *item.steps):
        db.session.expire(row)
    return _approval(actor, item.id)


def _cast_vote(actor: Actor, item: WorkItem, step: ApprovalStep, on_behalf_of: int | None,
               decision: str, comment: str | None) -> dict:
    """Record the actor's vote on a parallel step; returns the tally with it counted."""
    member = on_behalf_of or actor.user_id
    db.session.add(ApprovalVote(step_id=step.id, item_id=item.id, member_id=member,
                                decided_by_id=actor.user_id, decision=decision,
                                comment=comment, decided_at=utcnow()))
    db.session.flush()
    votes = step_votes(step)
    members = step_member_ids(step)
    approvals = sum(1 for v in votes if v.decision == "approve")
    return {"vote": decision, "member_id": member, "approvals": approvals,
            "rejections": sum(1 for v in votes if v.decision == "reject"),
            "undecided": len(members - {v.member_id for v in votes}), "needed": step.quorum}


def _record_vote(actor: Actor, item: WorkItem, step: ApprovalStep, on_behalf_of: int | None,
                 comment: str | None, expected_version: int | None, data: dict) -> WorkItem:
    """A vote that leaves the step open: the item stays pending, its version moves (so a
    page read before the vote shows the new count), and the vote is audited."""
    check_version(item, expected_version)
    now = utcnow()
    ledger.change_item(actor, item, ledger.touched(actor, item, now), action="approval.voted",
                       event_states=True, comment=comment, on_behalf_of_id=on_behalf_of,
                       data=data, now=now)
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
    if before != item.state and step is not None:
        # Imported here: app.approvals.escalation imports this module.
        from app.approvals.escalation import start_waiting

        # Its approver had nothing to decide while the question was out: the escalation
        # window starts again.
        if step.escalates_at is not None:
            start_waiting(item, step)
        # The old links died with the question; the approver (each member of a parallel
        # step who has not voted) gets a fresh one.
        for approver_id in waiting_approvers(step):
            add_message("approval.step_assigned",
                        {"item_id": item.id, "step_id": step.id, "approver_id": approver_id},
                        item.tenant_id)
    return item


def waiting_approvers(step: ApprovalStep) -> list[int]:
    """Who a step waits on now: its approver, or the members of a parallel step who have not
    voted."""
    if step.parallel:
        voted = {v.member_id for v in step_votes(step)}
        return sorted(step_member_ids(step) - voted)
    named = named_approver_id(step)
    return [named] if named is not None else []


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


def _approvers_by_step(item: WorkItem) -> dict[int, set[int]]:
    """Who approved each step of the item, by step id: the person who decided a one-person
    step (and whom they stood in for), every approving voter of a parallel step (and whom
    they stood in for), approved or still open."""
    out: dict[int, set[int]] = {}
    for other in item.steps:
        if other.state == StepState.APPROVED.value and not other.parallel:
            out[other.id] = {i for i in (other.decided_by_id, other.on_behalf_of_id)
                             if i is not None}
    if any(s.parallel for s in item.steps):
        for vote in db.session.scalars(select(ApprovalVote).where(
                ApprovalVote.item_id == item.id, ApprovalVote.decision == "approve")):
            out.setdefault(vote.step_id, set()).update({vote.member_id, vote.decided_by_id})
    return out


def earlier_approvers(item: WorkItem) -> set[int]:
    ids: set[int] = set()
    for approvers in _approvers_by_step(item).values():
        ids |= approvers
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


def step_recipient(item: WorkItem, step: ApprovalStep, named: int | None = None) -> User | None:
    """Who is mailed for a step today: its approver (`named`: a member of a parallel step), or
    their delegate while they are out of office."""
    named = named if named is not None else named_approver_id(step)
    if named is None:
        return None
    membership = db.session.scalars(select(Membership).where(
        Membership.tenant_id == item.tenant_id, Membership.user_id == named)).one_or_none()
    if membership is None:
        return None
    delegate_id = standing_delegate(membership, item)
    return db.session.get(User, delegate_id) if delegate_id else membership.user


def choose_approver(item: WorkItem, step: ApprovalStep) -> int | None:
    """The member to route a step to: holds the step's role with a sufficient limit, is not
    the requester and approved no earlier step; the one with the fewest open steps wins (then
    the longest-standing member). Someone out of office is chosen only if their delegate could
    decide the step, so the work never lands with nobody; someone out of office whose
    delegation does not cover the item (its kind or amount) only when nobody present can.
    Load is app.work.assignment's: open items and open steps waiting on the person."""
    excluded = earlier_approvers(item) | ({item.requester_id} if item.requester_id else set())
    load = load_table(select(Membership.user_id).where(Membership.tenant_id == item.tenant_id))
    ranked = (
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .join(MembershipRole, MembershipRole.membership_id == Membership.id)
        .outerjoin(load, load.c.user_id == Membership.user_id)
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
    # Imported here: app.approvals.escalation imports this module.
    from app.approvals.escalation import start_waiting

    excluded = earlier_approvers(item) | ({item.requester_id} if item.requester_id else set())
    start_waiting(item, step)
    if step.parallel:
        members = open_parallel_step(item, step, excluded)
        if members is not None:
            for member in members:
                add_message("approval.step_assigned",
                            {"item_id": item.id, "step_id": step.id, "approver_id": member},
                            item.tenant_id)
            return members[0] if members else None
        # Too few could decide it: it fell back to one person of its fallback role.
    if step.source_field:
        name_owner(item, step, excluded)
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


APPROVING_ROLES = (Role.APPROVER.value, Role.MANAGER.value)
OWNER_FIELDS = ("account_owner_email", "cost_centre_owner_email", "budget_holder_email")


def _eligible_voter(membership: Membership | None, step: ApprovalStep, excluded: set[int]) -> bool:
    """May vote on a parallel step: active, not excluded (the requester, an earlier step's
    approver), a sufficient limit, and the step's role (a group's members: any approving
    role)."""
    if membership is None or not membership.user.active or membership.user_id in excluded:
        return False
    if membership.approval_limit < step.min_limit:
        return False
    if step.group_id is not None:
        return bool(membership.role_set & set(APPROVING_ROLES))
    return step.role in membership.role_set


def open_parallel_step(item, step: ApprovalStep, excluded: set[int]) -> list[int] | None:
    """Fix the members of a parallel step as it opens: the group's members (or the holders
    of the step's role) who may decide it, and the quorum from what the step needs ("all"
    counts the members fixed here). `item`: anything with id, tenant_id. Returns the member
    ids, each of whom is mailed; or None when fewer may decide it than it needs: then, rather
    than wait until it expires, it becomes a one-person step of its fallback role (manager
    unless the policy names another), with an audit event saying why, and the caller routes
    it as such. Never commits."""
    query = select(Membership).where(Membership.tenant_id == item.tenant_id)
    if step.group_id is not None:
        query = query.join(ApproverGroupMember,
                           ApproverGroupMember.user_id == Membership.user_id).where(
            ApproverGroupMember.group_id == step.group_id)
    members = [m.user_id for m in db.session.scalars(query.order_by(Membership.user_id))
               if _eligible_voter(m, step, excluded)]
    if step.need == "all":
        needed = max(len(members), 1)
    else:
        needed = 1 if step.need == "any" else int(step.need)
    if len(members) < needed:
        _fall_back(item, step, len(members), needed)
        return None
    for user_id in members:
        db.session.add(ApprovalStepMember(step_id=step.id, user_id=user_id, item_id=item.id))
    step.quorum = needed
    db.session.flush()
    return members


def _fall_back(item, step: ApprovalStep, eligible: int, needed: int) -> None:
    who = step_who(step)
    step.role = step.fallback_role or Role.MANAGER.value
    record_event(Actor.system("routing"), "approval.step_fell_back", tenant_id=item.tenant_id,
                 item_id=item.id, data={
                     "step": step.position, "group_id": step.group_id, "need": step.need,
                     "eligible": eligible, "needed": needed, "role": step.role,
                     "why": f"{eligible} of {who} may decide it and it needs {needed}: it goes "
                            f"to one {step.role} instead"})
    step.need = step.quorum = step.reject_when = None
    db.session.flush()


def name_owner(item, step: ApprovalStep, excluded: set[int]) -> int | None:
    """A step whose approver is named by a field of the item (an owner's email): reserve it for
    that person when they may decide it (an active member with an approving role and the
    limit, not the requester nor an earlier approver); out of office, their delegate decides
    for them as for any reserved step. Otherwise the step stays with its fallback role.
    Returns the owner's id, or None. Never commits."""
    email = ((item.details or {}).get(step.source_field) or "").strip().lower()
    if not email:
        return None
    membership = db.session.scalars(
        select(Membership).join(User, User.id == Membership.user_id)
        .where(Membership.tenant_id == item.tenant_id, func.lower(User.email) == email)
    ).one_or_none()
    if (membership is None or not membership.user.active or membership.user_id in excluded
            or membership.approval_limit < step.min_limit):
        return None
    held = [r for r in APPROVING_ROLES if r in membership.role_set]
    if not held:
        return None
    if step.role not in held:
        step.role = held[0]
    step.approver_id = membership.user_id
    db.session.flush()
    return membership.user_id


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


def _perform(actor: Actor, item_id: int, action: str, given) -> WorkItem:
    """An approval's action as app.work.actions.perform hands it over."""
    v = given.expected_version
    if action == "approve":
        return approve_step(actor, item_id, comment=given.comment, expected_version=v)
    if action == "reject":
        return reject_approval(actor, item_id, reason=given.comment, expected_version=v)
    if action == "request_info":
        return request_info(actor, item_id, question=given.comment, expected_version=v)
    if action == "resubmit":
        return resubmit(actor, item_id, answer=given.comment, amount=given.amount,
                        expected_version=v, files=given.files)
    return withdraw(actor, item_id, comment=given.comment, expected_version=v)


register_actions(Kind.APPROVAL.value,
                 ("approve", "reject", "request_info", "resubmit", "withdraw"), _perform)
