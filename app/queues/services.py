"""Bulk actions and saved views: changes made from the queue pages, through the write path."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from app.actors import Actor
from app.audit.services import record_event
from app.errors import DomainError, NotFound, ValidationFailed
from app.extensions import db
from app.queues.models import SavedView
from app.unit_of_work import savepoint
from app.approvals.wording import outcome_message
from app.work.actions import perform

BULK_ACTIONS = {"approve": "Approve", "release": "Release", "reassign": "Reassign",
                "claim": "Claim"}
BULK_LIMIT = 200


@dataclass
class BulkResult:
    done: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (item id, reason)
    # Done, but not what the action's name says: an approval whose step was approved while
    # a later step still waits. (item id, what truly happened)
    partly: list[tuple[int, str]] = field(default_factory=list)

    @property
    def fully_done(self) -> int:
        return len(self.done) - len(self.partly)


class NothingDone(DomainError):
    """Every item of the selection was refused: the caller rolls back, so not even the bulk
    request's own audit event is kept, and reports each refusal."""

    status = 403

    def __init__(self, result: BulkResult):
        super().__init__("None of the selected items could be changed.")
        self.result = result


def bulk_act(actor: Actor, item_ids: list[int], action: str, *,
             assignee_id: int | None = None, comment: str | None = None) -> BulkResult:
    """Apply one action to a selection in one transaction. Each item goes through the same
    write path as a single action, inside a savepoint: an item the actor may not act on is
    reported with its reason and the others still go through."""
    if action not in BULK_ACTIONS:
        raise ValidationFailed("Choose an action for the selection.", {"action": "unknown"})
    ids = list(dict.fromkeys(item_ids))
    if not ids:
        raise ValidationFailed("Select at least one item.", {"selected_ids": "empty"})
    if len(ids) > BULK_LIMIT:
        raise ValidationFailed(f"Select at most {BULK_LIMIT} items at a time.",
                               {"selected_ids": "too many"})
    if action == "reassign" and not assignee_id:
        raise ValidationFailed("Choose who gets the selection.", {"assignee_id": "required"})
    # The bulk request itself is on the record, whatever happens to its items.
    record_event(actor, "queue.bulk_action", tenant_id=None,
                 data={"action": action, "item_ids": ids, "assignee_id": assignee_id})
    result = BulkResult()
    for item_id in ids:
        try:
            with savepoint():
                item = perform(actor, item_id, action, comment=comment, assignee_id=assignee_id)
        except DomainError as error:
            reason = "No such item." if isinstance(error, NotFound) else error.message
            result.refused.append((item_id, reason))
        else:
            result.done.append(item_id)
            if action == "approve" and item.state == "pending":
                result.partly.append((item_id, outcome_message(item, action)))
    if not result.done:
        raise NothingDone(result)
    return result


def save_view(actor: Actor, name: str, queue: str, query: str) -> SavedView:
    name = (name or "").strip()
    if not name:
        raise ValidationFailed("Name the view.", {"name": "is required"})
    if len(name) > 80 or len(query) > 1000:
        raise ValidationFailed("That name or filter is too long.", {"name": "too long"})
    view = db.session.scalars(select(SavedView).where(
        SavedView.user_id == actor.user_id, SavedView.name == name)).one_or_none()
    if view is None:
        view = SavedView(user_id=actor.user_id, name=name, queue=queue, query=query)
        db.session.add(view)
    else:
        view.queue, view.query = queue, query
    db.session.flush()
    record_event(actor, "view.saved", tenant_id=None,
                 data={"view_id": view.id, "name": name, "queue": queue, "query": query})
    return view


def delete_view(actor: Actor, view_id: int) -> None:
    view = db.session.get(SavedView, view_id)
    if view is None or view.user_id != actor.user_id:
        raise NotFound("No such view.")
    db.session.delete(view)
    record_event(actor, "view.deleted", tenant_id=None, data={"view_id": view_id,
                                                              "name": view.name})


def views_of(actor: Actor) -> list[SavedView]:
    return list(db.session.scalars(select(SavedView).where(SavedView.user_id == actor.user_id)
                                   .order_by(SavedView.name)))
