"""The states of each kind of work, and the one table of allowed moves between them."""
from __future__ import annotations

import enum

from app.models import Kind, Role


class ApprovalState(str, enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    INFO_REQUESTED = "info_requested"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


class ExceptionState(str, enum.Enum):
    OPEN = "open"
    INVESTIGATING = "investigating"
    RESOLVED = "resolved"
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    ESCALATED = "escalated"


class DisputeState(str, enum.Enum):
    OPEN = "open"
    UNDER_REVIEW = "under_review"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PARTIALLY_ACCEPTED = "partially_accepted"
    ESCALATED = "escalated"


STATE_ENUMS: dict[str, type[enum.Enum]] = {
    Kind.APPROVAL.value: ApprovalState,
    Kind.BILLING_EXCEPTION.value: ExceptionState,
    Kind.SETTLEMENT_DISPUTE.value: DisputeState,
}

INITIAL_STATE = {
    Kind.APPROVAL.value: ApprovalState.PENDING.value,
    Kind.BILLING_EXCEPTION.value: ExceptionState.OPEN.value,
    Kind.SETTLEMENT_DISPUTE.value: DisputeState.OPEN.value,
}

A, E, D = ApprovalState, ExceptionState, DisputeState

# kind -> {(from, to): the action name that makes the move}. Nothing else is allowed.
TRANSITIONS: dict[str, dict[tuple[str, str], str]] = {
    Kind.APPROVAL.value: {
        (A.PENDING, A.APPROVED): "approve",
        (A.PENDING, A.REJECTED): "reject",
        (A.PENDING, A.INFO_REQUESTED): "request_info",
        (A.INFO_REQUESTED, A.PENDING): "resubmit",
        (A.PENDING, A.WITHDRAWN): "withdraw",
        (A.INFO_REQUESTED, A.WITHDRAWN): "withdraw",
        (A.PENDING, A.EXPIRED): "expire",
        (A.INFO_REQUESTED, A.EXPIRED): "expire",
    },
    Kind.BILLING_EXCEPTION.value: {
        (E.OPEN, E.INVESTIGATING): "investigate",
        (E.WAITING_ON_CUSTOMER, E.INVESTIGATING): "investigate",
        (E.ESCALATED, E.INVESTIGATING): "investigate",
        (E.OPEN, E.RESOLVED): "resolve",
        (E.INVESTIGATING, E.RESOLVED): "resolve",
        (E.WAITING_ON_CUSTOMER, E.RESOLVED): "resolve",
        (E.ESCALATED, E.RESOLVED): "resolve",
        (E.OPEN, E.WAITING_ON_CUSTOMER): "wait_on_customer",
        (E.INVESTIGATING, E.WAITING_ON_CUSTOMER): "wait_on_customer",
        (E.OPEN, E.ESCALATED): "escalate",
        (E.INVESTIGATING, E.ESCALATED): "escalate",
        (E.WAITING_ON_CUSTOMER, E.ESCALATED): "escalate",
    },
    Kind.SETTLEMENT_DISPUTE.value: {
        (D.OPEN, D.UNDER_REVIEW): "review",
        (D.ESCALATED, D.UNDER_REVIEW): "review",
        (D.OPEN, D.ACCEPTED): "accept",
        (D.UNDER_REVIEW, D.ACCEPTED): "accept",
        (D.ESCALATED, D.ACCEPTED): "accept",
        (D.OPEN, D.REJECTED): "reject",
        (D.UNDER_REVIEW, D.REJECTED): "reject",
        (D.ESCALATED, D.REJECTED): "reject",
        (D.OPEN, D.PARTIALLY_ACCEPTED): "partially_accept",
        (D.UNDER_REVIEW, D.PARTIALLY_ACCEPTED): "partially_accept",
        (D.ESCALATED, D.PARTIALLY_ACCEPTED): "partially_accept",
        (D.OPEN, D.ESCALATED): "escalate",
        (D.UNDER_REVIEW, D.ESCALATED): "escalate",
    },
}
TRANSITIONS = {
    kind: {(f.value, t.value): action for (f, t), action in moves.items()}
    for kind, moves in TRANSITIONS.items()
}

FINAL_STATES: dict[str, frozenset[str]] = {
    Kind.APPROVAL.value: frozenset({A.APPROVED, A.REJECTED, A.WITHDRAWN, A.EXPIRED}),
    Kind.BILLING_EXCEPTION.value: frozenset({E.RESOLVED}),
    Kind.SETTLEMENT_DISPUTE.value: frozenset({D.ACCEPTED, D.REJECTED, D.PARTIALLY_ACCEPTED}),
}
FINAL_STATES = {k: frozenset(s.value for s in v) for k, v in FINAL_STATES.items()}

# No state is final for one kind and open for another, so "open" is one list of states:
# queue queries and their partial indexes use it.
ALL_STATES = frozenset(s.value for enum_ in STATE_ENUMS.values() for s in enum_)
OPEN_STATES = tuple(sorted(ALL_STATES - frozenset().union(*FINAL_STATES.values())))
assert not set(OPEN_STATES) & frozenset().union(*FINAL_STATES.values())

# States in which the item waits on someone outside finance (the SLA clock pauses).
WAITING_STATES = frozenset({A.INFO_REQUESTED.value, E.WAITING_ON_CUSTOMER.value})

# kind -> action -> roles that may take it. `withdraw`/`resubmit` belong to the requester of the
# item (checked by the service); `expire` only to the system.
ACTION_ROLES: dict[str, dict[str, frozenset[str]]] = {
    Kind.APPROVAL.value: {
        # The open step names the exact role it needs (approver, or manager for a second step).
        "approve": frozenset({Role.APPROVER, Role.MANAGER}),
        "reject": frozenset({Role.APPROVER, Role.MANAGER}),
        "request_info": frozenset({Role.APPROVER, Role.MANAGER}),
        "resubmit": frozenset({Role.REQUESTER}),
        "withdraw": frozenset({Role.REQUESTER}),
        "expire": frozenset(),
    },
    Kind.BILLING_EXCEPTION.value: {
        "investigate": frozenset({Role.ANALYST, Role.MANAGER}),
        "resolve": frozenset({Role.ANALYST, Role.MANAGER}),
        "wait_on_customer": frozenset({Role.ANALYST, Role.MANAGER}),
        "escalate": frozenset({Role.ANALYST, Role.MANAGER}),
    },
    Kind.SETTLEMENT_DISPUTE.value: {
        "review": frozenset({Role.ANALYST, Role.MANAGER}),
        "accept": frozenset({Role.ANALYST, Role.MANAGER}),
        "reject": frozenset({Role.ANALYST, Role.MANAGER}),
        "partially_accept": frozenset({Role.ANALYST, Role.MANAGER}),
        "escalate": frozenset({Role.ANALYST, Role.MANAGER}),
    },
}
ACTION_ROLES = {
    kind: {action: frozenset(r.value for r in roles) for action, roles in actions.items()}
    for kind, actions in ACTION_ROLES.items()
}

# Who may claim (work) items of a kind.
WORKER_ROLES: dict[str, frozenset[str]] = {
    Kind.APPROVAL.value: frozenset({Role.APPROVER.value, Role.MANAGER.value}),
    Kind.BILLING_EXCEPTION.value: frozenset({Role.ANALYST.value, Role.MANAGER.value}),
    Kind.SETTLEMENT_DISPUTE.value: frozenset({Role.ANALYST.value, Role.MANAGER.value}),
}
# Who may comment: everyone in the tenant except the read-only auditor.
COMMENT_ROLES = frozenset(r.value for r in Role if r is not Role.AUDITOR)
# Who may act on some item at all: take an action of a kind, or claim work (which tenant, kind
# and state allow what is the services' to decide).
ACTING_ROLES = frozenset().union(*(roles for actions in ACTION_ROLES.values()
                                   for roles in actions.values()), *WORKER_ROLES.values())


def target_state(kind: str, from_state: str, action: str) -> str | None:
    """The state `action` leads to from `from_state`, or None if the table does not allow it."""
    for (src, dst), name in TRANSITIONS[kind].items():
        if src == from_state and name == action:
            return dst
    return None


def actions_from(kind: str, state: str) -> list[str]:
    seen: list[str] = []
    for (src, _dst), name in TRANSITIONS[kind].items():
        if src == state and name not in seen:
            seen.append(name)
    return seen


ACTION_LABELS = {
    "approve": "Approve",
    "reject": "Reject",
    "request_info": "Request info",
    "resubmit": "Resubmit",
    "withdraw": "Withdraw",
    "expire": "Expire",
    "investigate": "Investigate",
    "resolve": "Resolve",
    "wait_on_customer": "Waiting on customer",
    "escalate": "Escalate",
    "review": "Start review",
    "accept": "Accept",
    "partially_accept": "Partially accept",
}
