"""The periodic SLA sweep: keeps each open item's SLA state current and escalates: an item that
turns at risk is reported to its tenant's managers; one that breaches is raised a priority
step, optionally moved to the least-loaded colleague (the tenant's sla_reassign_on_breach,
off by default), and reported to them. Each happens once per item and level; the reports of
one sweep reach each manager as one digest mail."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select, update

from app.actors import Actor
from app.audit.services import record_event
from app.extensions import db
from app.models import SlaState, Tenant, WorkItem
from app.sla.services import escalate_breach, queue_sla_digest, record_notices, sla_state_at
from app.types import utcnow
from app.unit_of_work import commit
from app.work.services import open_items

SYSTEM = Actor.system("sla")


def refresh_sla_states(batch: int = 5000) -> dict[str, int]:
    """Recompute on track / at risk / breached for every open item whose clock runs. An item
    that newly turns at risk or breaches is escalated once, in the transaction that marks it
    (audit events, the escalation's changes, outbox messages for its managers). Running it
    again changes nothing more. At the end, what the sweep reported goes out as one digest
    per manager (one outbox message, sla.digest).
    SLA state is derived, so it is written without bumping the item's version: a person's open
    form on the item stays valid."""
    now = utcnow()
    tenants = {t.id: t for t in db.session.scalars(select(Tenant))}
    counts: dict[str, int] = defaultdict(int)
    last_id = 0
    while True:
        rows = db.session.execute(
            select(WorkItem.id, WorkItem.tenant_id, WorkItem.kind, WorkItem.priority,
                   WorkItem.sla_due_at, WorkItem.sla_state)
            .where(open_items(), WorkItem.sla_paused_at.is_(None),
                   WorkItem.sla_due_at.is_not(None), WorkItem.id > last_id)
            .order_by(WorkItem.id).limit(batch)
        ).all()
        if not rows:
            break
        moves: dict[str, list[int]] = defaultdict(list)
        at_risk: list[tuple[int, int, str]] = []
        for row in rows:
            state = sla_state_at(tenants[row.tenant_id], row.kind, row.priority, row.sla_due_at,
                                 now)
            if state != row.sla_state:
                moves[state].append(row.id)
        for state, ids in moves.items():
            guarded = (update(WorkItem)
                       .where(WorkItem.id.in_(ids), WorkItem.sla_state != state, open_items(),
                              WorkItem.sla_paused_at.is_(None))
                       .values(sla_state=state)
                       .returning(WorkItem.id, WorkItem.tenant_id, WorkItem.sla_due_at)
                       .execution_options(synchronize_session=False))
            for item_id, tenant_id, due in db.session.execute(guarded).all():
                counts[state] += 1
                if state == SlaState.BREACHED.value:
                    record_event(SYSTEM, "item.sla_breached", tenant_id=tenant_id,
                                 item_id=item_id, data={"sla_due_at": due})
                    escalate_breach(SYSTEM, item_id)
                elif state == SlaState.AT_RISK.value:
                    record_event(SYSTEM, "item.sla_at_risk", tenant_id=tenant_id,
                                 item_id=item_id, data={"sla_due_at": due})
                    at_risk.append((tenant_id, item_id, state))
        record_notices(at_risk)
        commit()
        last_id = rows[-1].id
    queue_sla_digest()
    commit()
    return dict(counts)
