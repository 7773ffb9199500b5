"""One entry for "do this action on that item", used by the browser, email links, the API and
the CLI alike; it routes to the kind's service function, which holds the rules."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.actors import Actor
from app.errors import InvalidTransition, ValidationFailed
from app.models import WorkItem
from app.work import services as work


@dataclass(frozen=True)
class Given:
    """What came with an action, for the kind's function to take what it needs."""

    comment: str | None
    resolution_code: str | None
    adjustment_amount: object
    expected_version: int | None
    amount: object
    files: list | None


# kind -> action -> the kind's function doing it, called as (actor, item_id, action, given).
# The kinds register theirs (`register_actions`), so this module, below them, names none.
KIND_ACTIONS: dict[str, dict[str, Callable[..., WorkItem]]] = {}


def register_actions(kind: str, actions: tuple[str, ...],
                     handler: Callable[..., WorkItem]) -> None:
    KIND_ACTIONS.setdefault(kind, {}).update(dict.fromkeys(actions, handler))


def perform(actor: Actor, item_id: int, action: str, *, comment: str | None = None,
            resolution_code: str | None = None, adjustment_amount=None,
            expected_version: int | None = None, assignee_id: int | None = None,
            amount=None, files: list | None = None) -> WorkItem:
    """`files` (evidence, app.work.attachments.Upload) go only with a requester's answer."""
    if files and action != "resubmit":
        raise ValidationFailed("Add files with the Add files button, or with your answer.",
                               {"files": "not taken with this action"})
    if action == "claim":
        return work.claim_item(actor, item_id, expected_version)
    if action == "release":
        return work.release_item(actor, item_id, expected_version)
    if action == "reassign":
        return work.reassign_item(actor, item_id, assignee_id or 0, expected_version)
    item = work.get_item(actor, item_id)
    handler = KIND_ACTIONS.get(item.kind, {}).get(action)
    if handler is not None:
        return handler(actor, item_id, action, Given(
            comment=comment, resolution_code=resolution_code, adjustment_amount=adjustment_amount,
            expected_version=expected_version, amount=amount, files=files))
    raise InvalidTransition(f"'{action}' is not an action on {item.kind_label.lower()}s.")
