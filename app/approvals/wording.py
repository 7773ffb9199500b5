"""Approval routing in words, one way everywhere: the rule editor's live check, the item's step
view, the decision receipt and the policy simulation all say what a step needs ("2 of the
members of Regional controllers EMEA"), how it escalates, and what became of it, with these
functions; and what an action on an item did, in the sentence the person who acted reads next.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from app.approvals.services import named_approver_id, step_progress
from app.extensions import db
from app.models import ApproverGroup, Kind, StepState, User, WorkItem
from app.types import tenant_time

# How a message names the role a step waits on ("now waiting on a manager").
ROLE_WORDS = {"approver": "an approver", "manager": "a manager"}
OWNER_WORDS = {"account_owner_email": "the account owner",
               "cost_centre_owner_email": "the cost centre's owner",
               "budget_holder_email": "the budget holder"}


def step_spec(step) -> dict:
    """An approval step row as a policy step (the receipt's and the editor's dict)."""
    spec = {"role": step.role, "min_limit": step.min_limit}
    if step.need:
        spec["need"] = step.need
        if step.group_id is not None:
            group = db.session.get(ApproverGroup, step.group_id)
            spec["group"] = group.name if group else "a group"
        if step.fallback_role:
            spec["fallback"] = step.fallback_role
    if step.source_field:
        spec["field"] = step.source_field
    if step.escalate_after:
        spec["escalate_after"] = step.escalate_after
        spec["escalate_to"] = step.escalate_to or []
    return spec


def limit_words(limit, currency: str | None) -> str:
    """"" for no limit, else ", with a limit of at least USD 5,000.00"."""
    if limit in (None, "", "0", "0.00"):
        return ""
    if limit == "amount":
        return ", with a limit of at least the item's amount"
    try:
        value = Decimal(str(limit))
    except InvalidOperation:
        return ""
    if value == 0:
        return ""
    return f", with a limit of at least {currency + ' ' if currency else ''}{value:,.2f}"


def _need_words(need: str, total: int | None = None) -> str:
    of = f" {total}" if total is not None else ""
    if need == "all":
        return f"all{of} of"
    if need == "any":
        return f"any one of{of}" if not of else f"any one of the{of}"
    return f"{need} of{of}"


def escalation_words(spec: dict) -> str:
    """"; escalates after 2 days to the approver's manager, then Treasury", or ""."""
    levels = spec.get("escalate_to") or []
    if not spec.get("escalate_after") or not levels:
        return ""
    names = []
    for level in levels:
        names.append("their manager" if level.get("to") == "manager" and names
                     else "the approver's manager" if level.get("to") == "manager"
                     else str(level.get("group")))
    return f"; escalates after {spec['escalate_after']} to {', then '.join(names)}"


def step_words(spec: dict, currency: str | None = None, members: int | None = None) -> str:
    """What a step needs, in words. `members`: how many its parallel step waits on, when
    known (an item's step, or a group's size today)."""
    limit = limit_words(spec.get("min_limit"), currency)
    if spec.get("need"):
        need = _need_words(spec["need"], members)
        if spec.get("group"):
            who = f"{need} {'members' if members is not None else 'the members'} of " \
                  f"{spec['group']}"
            fallback = spec.get("fallback") or "manager"
            tail = f" (else {ROLE_WORDS.get(fallback, fallback)} when too few may decide)"
        else:
            who = f"{need} {'the ' if members is None else ''}{spec['role']}s"
            tail = ""
        return f"{who}{limit.replace(', with', ', each with')}{tail}"
    role = ROLE_WORDS.get(spec.get("role"), spec.get("role"))
    if spec.get("field"):
        owner = OWNER_WORDS.get(spec["field"], spec["field"])
        return (f"{owner} named on the item (else {role}){limit}"
                f"{escalation_words(spec)}")
    return f"{role}{limit}{escalation_words(spec)}"


def steps_words(specs, currency: str | None = None) -> str:
    return "; then ".join(step_words(s, currency) for s in specs or [])


def _names(users) -> str:
    names = [u.name for u in users if u is not None]
    if not names:
        return "someone"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def fell_back(step) -> bool:
    """A group step that opened with too few who may decide it, and went to one person."""
    return step.need is None and step.group_id is not None


def step_needs(item, step, progress: dict | None = None) -> str:
    """What an item's step needs, in words, with how many members a parallel one waits on."""
    spec = step_spec(step)
    if fell_back(step):
        return (f"{ROLE_WORDS.get(step.role, step.role)}"
                f"{limit_words(step.min_limit, item.currency)} (its group had too few who "
                "may decide it)")
    return step_words(spec, item.currency,
                      members=len(progress["members"]) if progress else None)


def step_account(item, step, progress: dict | None = None) -> str:
    """An item's step and what became of it: "Step 2: 2 of 3 members of Regional controllers
    EMEA — approved by Anna and Ben on 7 Dec 2026 10:04; escalated after 2 days to Mia"."""
    tz = item.tenant.timezone
    head = f"Step {step.position}: {step_needs(item, step, progress)}"
    if progress is not None:
        approved = [v for v in progress["votes"] if v["decision"] == "approve"]
        rejected = [v for v in progress["votes"] if v["decision"] == "reject"]
        if step.state == "approved" and approved:
            outcome = (f"approved by {_names(v['decided_by'] for v in approved)} on "
                       f"{tenant_time(approved[-1]['decided_at'], tz)}")
        elif step.state == "rejected" and rejected:
            outcome = (f"rejected by {_names(v['decided_by'] for v in rejected)} on "
                       f"{tenant_time(rejected[-1]['decided_at'], tz)}")
        elif step.state == "open":
            outcome = (f"{progress['approvals']} of {progress['quorum']} approvals so far"
                       + (f", waiting on {_names(progress['waiting'])}"
                          if progress["waiting"] else ""))
        else:
            outcome = step.state
    elif step.state in ("approved", "rejected") and step.decided_at:
        who = step.decided_by.name if step.decided_by else "someone"
        if step.on_behalf_of:
            who += f" on behalf of {step.on_behalf_of.name}"
        outcome = f"{step.state} by {who} on {tenant_time(step.decided_at, tz)}"
    elif step.state == "open":
        named = named_approver_id(step)
        user = db.session.get(User, named) if named else None
        outcome = f"waiting on {user.name}" if user else "waiting in the queue"
    else:
        outcome = "not open yet" if step.state == "waiting" else step.state
    if step.escalation_level and step.escalate_after and step.approver_id:
        user = db.session.get(User, step.approver_id)
        outcome += (f"; escalated after {step.escalate_after} to "
                    f"{user.name if user else 'someone'} (level {step.escalation_level} of "
                    f"{len(step.escalate_to or [])})")
    return f"{head} — {outcome}"


# What an action on an item did, in the sentence the person who acted reads next.
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
    progress = step_progress(step) if step is not None else None
    if progress is None:
        return None
    more = progress["more"]
    needs = f"step {step.position} needs {more} more approval{'s' if more != 1 else ''}"
    if action == "reject":
        return (f"Your rejection of {ref} is counted; {needs}, and it is rejected once that "
                "can no longer be met")
    return f"Your approval of {ref} is counted — {needs}"
