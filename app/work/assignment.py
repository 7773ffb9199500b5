"""Who gets the work: one definition of a person's load, and one rule for choosing among the
people who may take an item or a step.

A person's load is the open work waiting on them, in every tenant (one person, one pair of
hands): the open items assigned to them (the dashboard's open rollups, kept by the ledger) and
the open approval steps reserved or routed to them. Among the people who may take the work,
the least loaded gets it, then the longest-standing (the lowest id). Step routing
(app.approvals.services.choose_approver), the policy's batch routing and its "least-loaded
holder of a role", and the SLA's reassignment on breach all choose by it; each decides for
itself who *may* take the work (role, limit, presence, segregation of duties)."""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Select, func, select, union_all

from app.extensions import db
from app.models import ApprovalAssignment, ApprovalStep, StepState
from app.work.rollup_tables import open_rollups


def open_steps_per_approver():
    """Open steps per approver, reserved (the step names them) or routed (an assignment)."""
    who = func.coalesce(ApprovalStep.approver_id, ApprovalAssignment.approver_id)
    return (
        select(who.label("approver_id"), func.count().label("n"))
        .select_from(ApprovalStep)
        .outerjoin(ApprovalAssignment, ApprovalAssignment.step_id == ApprovalStep.id)
        .where(ApprovalStep.state == StepState.OPEN.value, who.is_not(None))
        .group_by(who).subquery()
    )


def load_table(user_ids: Iterable[int] | Select):
    """(user_id, n): the load of each of `user_ids` (ids, or a SELECT of them) with any open
    work, as a subquery to order candidates by in SQL (outer-join it: no row is no load)."""
    o = open_rollups.c
    steps = open_steps_per_approver()
    items = select(o.assignee_id.label("user_id"), func.sum(o["items"]).label("n")).where(
        o.assignee_id != 0).group_by(o.assignee_id)
    waiting = select(steps.c.approver_id.label("user_id"), steps.c.n.label("n"))
    ids = user_ids if isinstance(user_ids, Select) else sorted(set(user_ids))
    items = items.where(o.assignee_id.in_(ids))
    waiting = waiting.where(steps.c.approver_id.in_(ids))
    both = union_all(items, waiting).subquery()
    return (select(both.c.user_id, func.sum(both.c.n).label("n"))
            .group_by(both.c.user_id).subquery())


def loads(user_ids: Iterable[int]) -> dict[int, int]:
    """The load of each of `user_ids` (0 for someone with no open work)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    table = load_table(ids)
    found = {user_id: int(n or 0) for user_id, n in db.session.execute(
        select(table.c.user_id, table.c.n)).all()}
    return {user_id: found.get(user_id, 0) for user_id in ids}


def least_loaded(candidates: Iterable[int], load: dict[int, int]) -> int | None:
    """The one of `candidates` with the least load, then the lowest id."""
    return min(candidates, key=lambda user_id: (load.get(user_id, 0), user_id), default=None)
