"""Appending many events to a tenant's chain at once (a worker deciding a batch of items).
They join the same pending list as record_event's, in order, and are numbered, linked and
written together when the transaction commits (COPY on PostgreSQL for a large batch)."""
from __future__ import annotations

from app.actors import Actor
from app.audit.services import record_event


def record_events(actor: Actor, tenant_id: int | None, events: list[dict]) -> list[dict]:
    """Append `events` (each: action and any of item_id, from_state, to_state, comment,
    on_behalf_of_id, data) to the tenant's chain, in order, in the caller's transaction."""
    return [record_event(actor, event["action"], tenant_id=tenant_id,
                         item_id=event.get("item_id"), from_state=event.get("from_state"),
                         to_state=event.get("to_state"), comment=event.get("comment"),
                         on_behalf_of_id=event.get("on_behalf_of_id"), data=event.get("data"))
            for event in events]
