"""The periodic SLA sweep: keeps each open item's SLA state current and escalates: an item that
turns at risk is reported to its tenant's managers; one that breaches is raised a priority
step, optionally moved to the least-loaded colleague (the tenant's sla_reassign_on_breach,
off by default), and reported to them. Each happens once per item and level; the reports of
one sweep reach each manager as one digest mail. Approval steps waiting past their policy's
window escalate a level; approvals past their policy's expiry are closed as expired."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select

from app.actors import Actor
from app.approvals.escalation import escalate_waiting_steps
from app.extensions import db
from app.models import SlaState, Tenant, WorkItem
from app.policy.evaluation import expire_overdue
from app.sla.services import escalate_breach, queue_sla_digest, record_notices
from app.types import utcnow
from app.unit_of_work import as_unit_of_work, commit
from app.work import ledger
from app.work.queries import open_items
from app.work.sla_clock import sla_state_at

SYSTEM = Actor.system("sla")


@as_unit_of_work
def refresh_sla_states(batch: int = 5000) -> dict[str, int]:
    """Recompute on track / at risk / breached for every open item whose clock runs. An item
    that newly turns at risk or breaches is escalated once, in the transaction that marks it
    (audit events, the escalation's changes, outbox messages for its managers). Running it
    again changes nothing more. At the end, what the sweep reported goes out as one digest
    per manager (one outbox message, sla.digest).
    SLA state is derived, so the ledger writes it without bumping the item's version (a
    person's open form on the item stays valid); an item someone changed since it was read is
    left to the next sweep."""
    now = utcnow()
    tenants = {t.id: t for t in db.session.scalars(select(Tenant))}
    counts: dict[str, int] = defaultdict(int)
    last_id = 0
    while True:
        rows = db.session.execute(
            select(*ledger.before_columns())
            .where(open_items(), WorkItem.sla_paused_at.is_(None),
                   WorkItem.sla_due_at.is_not(None), WorkItem.id > last_id)
            .order_by(WorkItem.id).limit(batch)
        ).all()
        if not rows:
            break
        changes: dict[int, list[ledger.Change]] = defaultdict(list)
        for row in rows:
            state = sla_state_at(tenants[row.tenant_id], row.kind, row.priority, row.sla_due_at,
                                 now)
            if state != row.sla_state:
                changes[row.tenant_id].append(ledger.Change(
                    row, {"sla_state": state}, action=EVENTS.get(state),
                    data={"sla_due_at": row.sla_due_at}, bump=False))
        at_risk: list[tuple[int, int, str]] = []
        for tenant_id, tenant_changes in changes.items():
            for change in ledger.apply_changes(SYSTEM, tenant_id, tenant_changes, now=now,
                                               lost="skip"):
                state = change.values["sla_state"]
                counts[state] += 1
                if state == SlaState.BREACHED.value:
                    escalate_breach(SYSTEM, change.item_id)
                elif state == SlaState.AT_RISK.value:
                    at_risk.append((tenant_id, change.item_id, state))
        record_notices(at_risk)
        commit()
        last_id = rows[-1].id
    # Approval steps waiting past their window escalate to their next level.
    last_step = 0
    while last_step is not None:
        escalated, last_step = escalate_waiting_steps(SYSTEM, now, last_step)
        if escalated:
            counts["escalated_steps"] += escalated
        commit()
    # Approvals nobody decided within their policy's expiry are closed as expired.
    while (expired := expire_overdue(SYSTEM, now)):
        counts["expired"] += expired
        commit()
    queue_sla_digest()
    return dict(counts)


EVENTS = {SlaState.BREACHED.value: "item.sla_breached", SlaState.AT_RISK.value: "item.sla_at_risk"}
