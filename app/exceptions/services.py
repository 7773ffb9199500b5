"""Working billing exceptions and settlement disputes through their states."""
from __future__ import annotations

from decimal import Decimal

from app.actors import Actor
from app.errors import InvalidTransition, ValidationFailed
from app.models import Kind, WorkItem
from app.work import kinds
from app.work.actions import register_actions
from app.work.queries import get_item
from app.work.services import require_action_role, transition


def _item_of(actor: Actor, item_id: int, kind: str) -> WorkItem:
    item = get_item(actor, item_id)
    if item.kind != kind:
        raise InvalidTransition(f"This is not a {Kind(kind).label.lower()}.")
    return item


def act_on_exception(actor: Actor, item_id: int, action: str, *, comment: str | None = None,
                     resolution_code: str | None = None,
                     expected_version: int | None = None) -> WorkItem:
    """investigate, resolve (with a resolution code), wait_on_customer, escalate."""
    item = _item_of(actor, item_id, Kind.BILLING_EXCEPTION.value)
    require_action_role(actor, item, action)
    data: dict = {"amount_at_risk": item.amount_at_risk}
    values = None
    if action == "resolve":
        if resolution_code not in kinds.RESOLUTION_CODES:
            raise ValidationFailed("Choose a resolution code.",
                                   {"resolution_code": "choose one of the listed codes"})
        data["resolution_code"] = resolution_code
        values = {"resolution_code": resolution_code}
    if action in ("escalate", "wait_on_customer") and not (comment or "").strip():
        raise ValidationFailed("Say why.", {"comment": "is required"})
    return transition(actor, item, action, comment=comment, expected_version=expected_version,
                      data=data, values=values)


def act_on_dispute(actor: Actor, item_id: int, action: str, *, comment: str | None = None,
                   adjustment_amount=None, expected_version: int | None = None) -> WorkItem:
    """review, accept, reject (with a reason), partially_accept (with an adjustment), escalate."""
    item = _item_of(actor, item_id, Kind.SETTLEMENT_DISPUTE.value)
    require_action_role(actor, item, action)
    data: dict = {"claimed_amount": item.claimed_amount,
                  "calculated_amount": item.calculated_amount, "delta": item.delta}
    values = None
    if action in ("reject", "escalate") and not (comment or "").strip():
        raise ValidationFailed("Give a reason.", {"comment": "a reason is required"})
    if action == "partially_accept":
        if adjustment_amount in (None, ""):
            raise ValidationFailed("Enter the adjustment amount.",
                                   {"adjustment_amount": "is required"})
        adjustment = kinds.parse_money(adjustment_amount, "adjustment_amount")
        ceiling = abs(item.delta or Decimal("0"))
        if adjustment <= 0 or adjustment >= ceiling:
            raise ValidationFailed(
                "A partial acceptance adjusts by more than nothing and less than the whole "
                f"delta ({item.currency} {ceiling:,.2f}).",
                {"adjustment_amount": f"between 0 and {ceiling:,.2f}, exclusive"})
        data["adjustment_amount"] = adjustment
        values = {"adjustment_amount": adjustment}
    return transition(actor, item, action, comment=comment, expected_version=expected_version,
                      data=data, values=values)


def _perform_on_exception(actor: Actor, item_id: int, action: str, given) -> WorkItem:
    return act_on_exception(actor, item_id, action, comment=given.comment,
                            resolution_code=given.resolution_code,
                            expected_version=given.expected_version)


def _perform_on_dispute(actor: Actor, item_id: int, action: str, given) -> WorkItem:
    return act_on_dispute(actor, item_id, action, comment=given.comment,
                          adjustment_amount=given.adjustment_amount,
                          expected_version=given.expected_version)


# What app.work.actions.perform hands over for these kinds.
register_actions(Kind.BILLING_EXCEPTION.value,
                 ("investigate", "resolve", "wait_on_customer", "escalate"), _perform_on_exception)
register_actions(Kind.SETTLEMENT_DISPUTE.value,
                 ("review", "accept", "reject", "partially_accept", "escalate"),
                 _perform_on_dispute)
