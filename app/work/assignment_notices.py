"""Collecting "assigned to you" notices: a billing exception or settlement dispute given to a
person by someone else (a manager's reassign) or by the policy (a rule's assign outcome). The
unit of work gathers them and, when it commits, writes ONE outbox message (work.assigned)
holding them all, so a bulk reassign or a policy batch mails each assignee once, not once per
item. The mails themselves are app.exceptions.notifications.mail_assignment_notices."""
from __future__ import annotations

from sqlalchemy.orm import Session

from app.actors import Actor
from app.models import Kind, WorkItem
from app.outbox.services import add_messages
from app.unit_of_work import register_writer, unit_of_work

TOPIC = "work.assigned"
# Approvals mail their approvers per step (approval.step_assigned); these kinds have no steps.
NOTIFIED_KINDS = frozenset({Kind.BILLING_EXCEPTION.value, Kind.SETTLEMENT_DISPUTE.value})


def note_assignment(actor: Actor, item: WorkItem, assignee_id: int | None, *,
                    policy_version: int | None = None, rule_name: str | None = None,
                    rule_position: int | None = None, reason: str | None = None) -> bool:
    """Call where an item's assignee is set by the write path. Nothing for approvals, for an
    unassignment, nor for someone assigning themselves (a claim, or a manager taking it).
    Returns whether a notice was collected."""
    if item.kind not in NOTIFIED_KINDS or assignee_id is None:
        return False
    if actor.user_id is not None and actor.user_id == assignee_id:
        return False
    notice = {"item_id": item.id, "tenant_id": item.tenant_id, "assignee_id": assignee_id,
              "by": actor.type.value}
    if policy_version is not None:
        notice.update(policy_version=policy_version, rule_name=rule_name,
                      rule_position=rule_position)
    else:
        notice.update(by_user_id=actor.user_id,
                      by_name=actor.user.name if actor.user is not None else actor.label)
    if reason:
        notice["reason"] = reason  # said in the mail instead of who reassigned it
    unit_of_work().add("assignment_notices", notice)
    return True


def _write_notices(session: Session, notices: list[dict]) -> None:
    # An item given twice in one unit of work (A, then B): only its last assignee hears of it.
    last = {n["item_id"]: n for n in notices}
    tenants = {n["tenant_id"] for n in last.values()}
    add_messages(TOPIC, [{"notices": list(last.values())}],
                 next(iter(tenants)) if len(tenants) == 1 else None)


register_writer("assignment_notices", _write_notices)
