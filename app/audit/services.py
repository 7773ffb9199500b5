"""Writing audit events into the chain, and proving a chain was not altered."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select, update

from app.actors import Actor
from app.audit.chain import event_hash, jsonable
from app.audit.models import GENESIS_HASH, GLOBAL_CHAIN, AuditChainHead, AuditEvent
from app.extensions import db
from app.types import utcnow


def _dialect_insert():
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert


def _advance_head(chain_id: int) -> tuple[int, str]:
    """Take the next sequence number of a chain. The UPDATE locks the head row until commit,
    so writers of one tenant queue here and the sequence stays gapless."""
    stmt = (
        update(AuditChainHead)
        .where(AuditChainHead.chain_id == chain_id)
        .values(last_seq=AuditChainHead.last_seq + 1)
        .returning(AuditChainHead.last_seq, AuditChainHead.last_hash)
    )
    row = db.session.execute(stmt).one_or_none()
    if row is None:
        db.session.execute(
            _dialect_insert()(AuditChainHead)
            .values(chain_id=chain_id, last_seq=0, last_hash=GENESIS_HASH)
            .on_conflict_do_nothing()
        )
        row = db.session.execute(stmt).one()
    return row.last_seq, row.last_hash


def record_event(
    actor: Actor,
    action: str,
    *,
    tenant_id: int | None,
    item_id: int | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    comment: str | None = None,
    on_behalf_of_id: int | None = None,
    data: dict | None = None,
) -> dict:
    """Append one event to the tenant's chain in the caller's transaction (never commits)."""
    chain_id = tenant_id if tenant_id is not None else GLOBAL_CHAIN
    seq, prev_hash = _advance_head(chain_id)
    payload = dict(data or {})
    if actor.ip:
        payload.setdefault("ip", actor.ip)
    if actor.user_agent:
        payload.setdefault("user_agent", actor.user_agent[:300])
    fields = {
        "chain_id": chain_id,
        "seq": seq,
        "tenant_id": tenant_id,
        "occurred_at": utcnow(),
        "actor_type": actor.type.value,
        "actor_id": actor.user_id,
        "actor_label": actor.label or actor.type.value,
        "on_behalf_of_id": on_behalf_of_id,
        "action": action,
        "item_id": item_id,
        "from_state": from_state,
        "to_state": to_state,
        "comment": comment,
        "data": jsonable(payload),
        "prev_hash": prev_hash,
    }
    fields["hash"] = event_hash(fields)
    db.session.execute(insert(AuditEvent).values(**fields))
    db.session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.chain_id == chain_id)
        .values(last_hash=fields["hash"])
    )
    return fields


@dataclass
class ChainReport:
    chain_id: int
    events: int
    ok: bool
    problem: str | None = None
    bad_seq: int | None = None


_VERIFY_COLUMNS = [getattr(AuditEvent, name) for name in (
    "chain_id", "seq", "tenant_id", "occurred_at", "actor_type", "actor_id", "actor_label",
    "on_behalf_of_id", "action", "item_id", "from_state", "to_state", "comment", "data",
    "prev_hash", "hash", "id",
)]


def _original_seq(fields: dict, around: int, window: int = 2000) -> int | None:
    """The sequence number an event was hashed with, if it was moved within `window`."""
    probe = dict(fields)
    for candidate in range(max(1, around - window), around + window + 1):
        probe["seq"] = candidate
        if candidate != around and event_hash(probe) == fields["hash"]:
            return candidate
    return None


def _broken_link(fields: dict, seq: int) -> str:
    original = _original_seq(fields, seq)
    if original is None:
        return (f"event #{seq} does not link to event #{seq - 1} and does not match its hash: "
                "it was forged or edited")
    if original == seq - 1:
        return f"event #{seq} was #{original}: an event was inserted before it"
    return f"event #{seq} was #{original}: events were reordered or renumbered"


def verify_chain(chain_id: int, batch: int = 5000) -> ChainReport:
    """Walk one chain in sequence order and name the first event that breaks it:
    an edited event (its hash no longer matches), a deleted one (a gap), an inserted one (a
    repeated sequence number, or a renumbered chain), a reordered pair, or a chain that ends
    before its head says it should (events cut off the end)."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    stmt = (
        select(*_VERIFY_COLUMNS)
        .where(AuditEvent.chain_id == chain_id)
        .order_by(AuditEvent.seq, AuditEvent.id)
        .execution_options(yield_per=batch)
    )
    result = db.session.execute(stmt)
    try:
        for row in result:
            fields = row._asdict()
            seq = fields["seq"]
            if seq < expected_seq:
                return ChainReport(chain_id, count, False,
                                   f"event #{seq} (id {fields['id']}) repeats a sequence number: "
                                   "an event was inserted", seq)
            if seq > expected_seq:
                return ChainReport(chain_id, count, False,
                                   f"event #{expected_seq} is missing: deleted", expected_seq)
            content_ok = event_hash(fields) == fields["hash"]
            if fields["prev_hash"] != prev_hash:
                if content_ok:
                    return ChainReport(chain_id, count, False,
                                       f"event #{seq} does not link to event #{seq - 1}: "
                                       "an event before it was replaced", seq)
                return ChainReport(chain_id, count, False, _broken_link(fields, seq), seq)
            if not content_ok:
                if _original_seq(fields, seq) is not None:
                    return ChainReport(chain_id, count, False, _broken_link(fields, seq), seq)
                return ChainReport(chain_id, count, False,
                                   f"event #{seq} was edited: its content no longer matches its hash",
                                   seq)
            prev_hash = fields["hash"]
            expected_seq += 1
            count += 1
    finally:
        result.close()  # a server-side cursor on PostgreSQL
    head = db.session.get(AuditChainHead, chain_id)
    if head is not None and head.last_seq > count:
        return ChainReport(chain_id, count, False,
                           f"the chain ends at #{count} but its head records #{head.last_seq}: "
                           "events were cut off the end", count + 1)
    if head is not None and (head.last_seq < count or head.last_hash != prev_hash):
        return ChainReport(chain_id, count, False,
                           f"the chain runs to #{count} but its head records #{head.last_seq}: "
                           "events were added after the head", head.last_seq + 1)
    return ChainReport(chain_id, count, True)


def verify_all() -> list[ChainReport]:
    chain_ids = set(db.session.scalars(select(AuditChainHead.chain_id)))
    chain_ids |= set(db.session.scalars(select(AuditEvent.chain_id).distinct()))
    return [verify_chain(c) for c in sorted(chain_ids)]
