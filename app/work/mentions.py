"""@mentions in comments: `@someone@example.com` names a member of the item's tenant, who is
mailed the comment and may then see the item even as a requester-only member (need-to-know:
what they are mentioned on, and their own requests). Rows are kept per item and person."""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import ForeignKey, func, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from app.actors import ActorType
from app.errors import PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import Membership, User, WorkItem
from app.types import UTCDateTime, utcnow
from app.work.states import COMMENT_ROLES

MENTION = re.compile(r"(?<![\w.])@([A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})")
MOST_MENTIONS = 20


class ItemMention(db.Model):
    __tablename__ = "item_mentions"

    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"),
                                         primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    mentioned_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def mentioned_members(item: WorkItem, text: str) -> list[User]:
    """The active members of the item's tenant a comment mentions, in order; an address that
    is not one is refused with its name, so a typo is not silently nobody."""
    emails = list(dict.fromkeys(m.lower() for m in MENTION.findall(text or "")))
    if not emails:
        return []
    if len(emails) > MOST_MENTIONS:
        raise ValidationFailed("Too many mentions.", {"comment": f"at most {MOST_MENTIONS}"})
    found = {u.email.lower(): u for u in db.session.scalars(
        select(User).join(Membership, Membership.user_id == User.id)
        .where(Membership.tenant_id == item.tenant_id, User.active.is_(True)))
        if u.email.lower() in emails}
    unknown = [e for e in emails if e not in found]
    if unknown:
        raise ValidationFailed("Mention members of this team only.",
                               {"comment": "not a member here: " + ", ".join(unknown)})
    return [found[e] for e in emails]


def record_mentions(item: WorkItem, people: list[User], by: int | None) -> list[int]:
    """Remember who was mentioned on the item (once each); returns their ids."""
    already = set(db.session.scalars(select(ItemMention.user_id).where(
        ItemMention.item_id == item.id, ItemMention.user_id.in_([p.id for p in people]))))
    for person in people:
        if person.id not in already:
            db.session.add(ItemMention(item_id=item.id, user_id=person.id, mentioned_by_id=by))
    db.session.flush()
    return [p.id for p in people]


def mentioned_item_ids(user_id: int):
    """A subquery of the items `user_id` was mentioned on."""
    return select(ItemMention.item_id).where(ItemMention.user_id == user_id)


MOST_CANDIDATES = 8


def mention_candidates(actor, item_id: int, typed: str) -> list[User]:
    """Members of the item's tenant a comment on it may mention, matching what follows the
    `@` (the start of an email, or any part of a name): for someone who may see the item and
    comment on it, never another tenant's people."""
    # Imported here: app.work.queries imports this module.
    from app.work.queries import get_item

    item = get_item(actor, item_id)
    if actor.type is ActorType.USER and not actor.roles_in(item.tenant_id) & COMMENT_ROLES:
        raise PermissionDenied("Your roles do not let you comment.")
    typed = (typed or "").strip().lower()[:100]
    query = (select(User).join(Membership, Membership.user_id == User.id)
             .where(Membership.tenant_id == item.tenant_id, User.active.is_(True)))
    if typed:
        query = query.where(or_(func.lower(User.email).startswith(typed, autoescape=True),
                                func.lower(User.name).contains(typed, autoescape=True)))
    return list(db.session.scalars(query.order_by(User.name, User.id).limit(MOST_CANDIDATES)))
