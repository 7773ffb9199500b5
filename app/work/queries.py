"""Reading work items: the one place a query of items is limited to what the actor may see
(`scoped_items`), what "open" means in a query (`open_items`), and one item with its steps
(`get_item`). The write path, the queues, the API and the jobs read through these."""
from __future__ import annotations

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import joinedload

from app.actors import Actor, ActorType
from app.errors import NotFound
from app.extensions import db
from app.models import WorkItem
from app.work.mentions import mentioned_item_ids
from app.work.states import OPEN_STATES

def scoped_items(actor: Actor) -> Select:
    if actor.type is ActorType.SYSTEM:
        return select(WorkItem)  # jobs and CLI commands work across tenants by item id
    own_only = actor.own_requests_only()
    if not own_only:
        return select(WorkItem).where(WorkItem.tenant_id.in_(actor.tenant_ids()))
    return select(WorkItem).where(or_(
        WorkItem.tenant_id.in_(actor.tenant_ids() - own_only),
        and_(WorkItem.tenant_id.in_(own_only),
             or_(WorkItem.requester_id == actor.user_id,
                 WorkItem.id.in_(mentioned_item_ids(actor.user_id))))))


def open_items():
    """A condition true for items not yet in a final state of their kind (the condition the
    queue indexes are partial on)."""
    return WorkItem.state.in_(OPEN_STATES)


def get_item(actor: Actor, item_id: int) -> WorkItem:
    """The item if the actor's tenants include it; otherwise NotFound (no hint that it exists).
    The item and its steps come from one statement, so they agree with each other even while
    another decision commits (two statements could see the item before it and the steps
    after)."""
    item = db.session.scalars(
        scoped_items(actor).where(WorkItem.id == item_id).options(joinedload(WorkItem.steps))
    ).unique().one_or_none()
    if item is None:
        raise NotFound("No such item.")
    return item
