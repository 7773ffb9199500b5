"""Appending many events to one chain at once (a worker deciding a batch of items): the head
moves once by the batch, each event links to the one before it exactly as record_event would
have linked them one by one, and the rows go in one round trip."""
from __future__ import annotations

from sqlalchemy import update

from app.actors import Actor
from app.audit.chain import event_hash, jsonable
from app.audit.models import GENESIS_HASH, GLOBAL_CHAIN, AuditChainHead, AuditEvent
from app.audit.services import _dialect_insert
from app.bulk import insert_rows
from app.extensions import db
from app.types import utcnow


def record_events(actor: Actor, tenant_id: int | None, events: list[dict]) -> list[dict]:
    """Append `events` (each: action and any of item_id, from_state, to_state, comment,
    on_behalf_of_id, data) to the tenant's chain, in order, in the caller's transaction."""
    if not events:
        return []
    chain_id = tenant_id if tenant_id is not None else GLOBAL_CHAIN
    n = len(events)
    take = (update(AuditChainHead).where(AuditChainHead.chain_id == chain_id)
            .values(last_seq=AuditChainHead.last_seq + n)
            .returning(AuditChainHead.last_seq, AuditChainHead.last_hash))
    row = db.session.execute(take).one_or_none()
    if row is None:
        db.session.execute(_dialect_insert()(AuditChainHead)
                           .values(chain_id=chain_id, last_seq=0, last_hash=GENESIS_HASH)
                           .on_conflict_do_nothing())
        row = db.session.execute(take).one()
    seq, prev = row.last_seq - n, row.last_hash
    now = utcnow()
    rows = []
    for event in events:
        seq += 1
        payload = dict(event.get("data") or {})
        if actor.ip:
            payload.setdefault("ip", actor.ip)
        fields = {
            "chain_id": chain_id, "seq": seq, "tenant_id": tenant_id, "occurred_at": now,
            "actor_type": actor.type.value, "actor_id": actor.user_id,
            "actor_label": actor.label or actor.type.value,
            "on_behalf_of_id": event.get("on_behalf_of_id"), "action": event["action"],
            "item_id": event.get("item_id"), "from_state": event.get("from_state"),
            "to_state": event.get("to_state"), "comment": event.get("comment"),
            "data": jsonable(payload), "prev_hash": prev,
        }
        fields["hash"] = prev = event_hash(fields)
        rows.append(fields)
    insert_rows(AuditEvent.__table__, rows)
    db.session.execute(update(AuditChainHead).where(AuditChainHead.chain_id == chain_id)
                       .values(last_hash=prev))
    return rows
