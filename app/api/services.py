"""What the JSON API does, in the domain's words: create, list and read items, relay
decisions, read an item's events, and remember answers to Idempotency-Keys. Every change goes
through the write path (app.work.services, app.work.actions) with an API actor."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app import params
from app.actors import Actor, ActorType
from app.api.models import IdempotencyRecord
from app.api.schemas import DecisionIn, ItemCreate, ItemQuery, ResubmitIn
from app.audit.models import AuditEvent
from app.audit.services import dialect_insert
from app.errors import Conflict, DomainError, NotFound, ValidationFailed
from app.extensions import db
from app.models import Membership, User, WorkItem
from app.queues.filters import BadCursor, QueueFilters
from app.types import utcnow
from app.work.actions import perform
from app.work.attachments import add_attachments
from app.work.queries import get_item, scoped_items
from app.work.services import create_item

# Keys of an event's data that describe the staff member's browser, not the work.
PRIVATE_EVENT_DATA = ("ip", "user_agent")


class BadRequest(DomainError):
    """The request itself is malformed (not the data it carries): answered 400."""

    status = 400

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.fields = fields or {}


class IdempotencyMismatch(DomainError):
    """An Idempotency-Key sent again with another request: answered 422."""

    status = 422


# --- items -----------------------------------------------------------------------------------

def create_item_from_api(actor: Actor, body: ItemCreate) -> tuple[WorkItem, bool]:
    data = body.model_dump()
    return create_item(actor, tenant_id=actor.tenant_id, **data)


def list_items(actor: Actor, query: ItemQuery) -> tuple[list[WorkItem], str | None]:
    """A page of the tenant's items in the keyset order of the queues (never OFFSET)."""
    filters = QueueFilters(kind=query.kind, subtype=query.subtype, region=query.region,
                           min_amount=query.min_amount, max_amount=query.max_amount,
                           sla=query.sla, q=query.q, sort=query.sort)
    conditions = filters.conditions(viewer_id=0)
    if query.state:
        conditions.append(WorkItem.state == query.state)
    if query.source_system:
        conditions.append(WorkItem.source_system == query.source_system)
    if query.external_ref:
        conditions.append(WorkItem.external_ref == query.external_ref)
    if query.sort == "sla":
        conditions.append(WorkItem.sla_due_at.is_not(None))  # the cursor needs a value
    if query.cursor:
        try:
            conditions.extend(filters.after(query.cursor))
        except BadCursor as bad:
            raise BadRequest("The cursor is not one this API gave for this sort order.",
                             {"cursor": str(bad)}) from None
    rows = list(db.session.scalars(
        scoped_items(actor).where(*conditions).order_by(*filters.order_by())
        .options(selectinload(WorkItem.steps)).limit(query.limit + 1)))
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    return rows, (filters.cursor_for(rows[-1]) if more and rows else None)


def read_item(actor: Actor, item_id: int) -> WorkItem:
    if not 1 <= item_id <= params.MAX_BIG_ID:  # beyond what any database column holds
        raise NotFound("No such item.")
    return get_item(actor, item_id)


def item_events(actor: Actor, item_id: int, limit: int, cursor: str | None
                ) -> tuple[list[AuditEvent], str | None]:
    item = read_item(actor, item_id)
    query = select(AuditEvent).where(AuditEvent.chain_id == item.tenant_id,
                                     AuditEvent.item_id == item.id)
    if cursor:
        query = query.where(AuditEvent.seq > _decode_seq(cursor))
    rows = list(db.session.scalars(query.order_by(AuditEvent.seq).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_encode_seq(rows[-1].seq) if more and rows else None)


def _encode_seq(seq: int) -> str:
    return params.encode_cursor(["events", seq])


def _decode_seq(cursor: str) -> int:
    try:
        parts = params.decode_cursor(cursor, "events")
        if len(parts) != 1:
            raise params.BadParam("cursor", "is not one this page gave")
        return params.cursor_id(parts[0])
    except params.BadParam as bad:
        raise BadRequest("The cursor is not one this API gave for events.",
                         {"cursor": bad.reason}) from None


def public_event_data(data: dict | None) -> dict:
    return {k: v for k, v in (data or {}).items() if k not in PRIVATE_EVENT_DATA}


# --- decisions -------------------------------------------------------------------------------

def decide_from_api(actor: Actor, item_id: int, body: DecisionIn) -> WorkItem:
    """Relay a decision taken by a named member of the token's tenant. The write path then
    treats them as the person acting (roles, approval limit, segregation of duties, state and
    version checks) and records the event as made through the API by this token."""
    read_item(actor, item_id)  # 404 before anything is said about the person
    person = db.session.scalars(
        select(User).join(Membership, Membership.user_id == User.id)
        .where(Membership.tenant_id == actor.tenant_id,
               func.lower(User.email) == body.decided_by.strip().lower())
    ).one_or_none()
    if person is None or not person.active:
        raise ValidationFailed("The person who decided is not an active member of this tenant.",
                               {"decided_by": "not an active member of this tenant"})
    acting = Actor(ActorType.API, user=person, label=actor.label, ip=actor.ip,
                   user_agent=actor.user_agent, tenant_id=actor.tenant_id, extra=actor.extra)
    return perform(acting, item_id, body.action, comment=body.comment,
                   resolution_code=body.resolution_code,
                   adjustment_amount=body.adjustment_amount,
                   expected_version=body.expected_version)


def resubmit_from_api(actor: Actor, item_id: int, body: ResubmitIn) -> WorkItem:
    """The source system answers the question about an item it raised. An item with a human
    requester is theirs to answer (they were mailed the question)."""
    item = read_item(actor, item_id)
    if item.requester_id is not None:
        raise Conflict("This request has a requester in Cleardesk; they answer it there.")
    return perform(actor, item_id, "resubmit", comment=body.answer, amount=body.amount,
                   expected_version=body.expected_version)


def attach_from_api(actor: Actor, item_id: int, uploads: list, expected_version: int | None):
    """A source system's evidence for an item of its tenant (another tenant's is NotFound)."""
    return add_attachments(actor, item_id, uploads, expected_version=expected_version)


# --- idempotency -----------------------------------------------------------------------------

@dataclass
class Replay:
    status: int
    body: dict


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def _answer_from(record: IdempotencyRecord, fingerprint: str) -> Replay:
    if record.request_hash != fingerprint:
        raise IdempotencyMismatch("This Idempotency-Key was used with another request.")
    return Replay(record.status_code, record.response_body)


def reserve_idempotency_key(actor: Actor, key: str, fingerprint: str
                            ) -> tuple[IdempotencyRecord | None, Replay | None]:
    """Claim the key for this request, or return the committed answer of the request that
    claimed it. INSERT .. ON CONFLICT DO NOTHING takes the unique index entry: a concurrent
    request with the same key waits there until the first commits and then inserts nothing
    and replays the first answer (or, if the first rolled back, claims the key itself). No
    savepoint and no failed statement, so the transaction stays usable on both databases."""
    claimed = db.session.execute(
        dialect_insert()(IdempotencyRecord)
        .values(tenant_id=actor.tenant_id, key=key, request_hash=fingerprint, status_code=0,
                response_body={}, token_id=actor.extra.get("token_id"), created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
        .returning(IdempotencyRecord.id)
    ).scalar_one_or_none()
    if claimed is not None:
        return db.session.get(IdempotencyRecord, claimed), None
    committed = db.session.scalars(select(IdempotencyRecord).where(
        IdempotencyRecord.tenant_id == actor.tenant_id, IdempotencyRecord.key == key)
    ).one()
    if committed.status_code == 0:
        raise Conflict("A request with this Idempotency-Key is still being processed.")
    return None, _answer_from(committed, fingerprint)


def remember_answer(record: IdempotencyRecord | None, status: int, body: dict) -> None:
    if record is not None:
        record.status_code = status
        record.response_body = body
        db.session.flush()
