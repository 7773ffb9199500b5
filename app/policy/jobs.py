"""Policy jobs: evaluating an item when it arrives (an outbox handler, after the commit that
created it) and the periodic sweep that decides, in batches, whatever is still undecided."""
from __future__ import annotations

import time

from flask import current_app

from app.extensions import db
from app.outbox.services import register_handler
from app.policy.evaluation import evaluate_items, policy_actor, undecided_receipts
from app.unit_of_work import commit


def evaluate_arrival(message) -> None:
    """Outbox handler of item.created: decide the item under the policy in force. Runs in the
    delivery job's transaction, which commits the decision with the message's processing."""
    item_id = message.payload.get("item_id")
    if item_id is None or message.tenant_id is None:
        return
    evaluate_items(policy_actor(message.tenant_id), [item_id])


def evaluate_arrivals_together(messages: list) -> None:
    """Batch form of evaluate_arrival (several item.created messages taken together under a
    backlog): their items decided as one batch per tenant, as an import's are."""
    by_tenant: dict[int, list[int]] = {}
    for message in messages:
        item_id = (message.payload or {}).get("item_id")
        if item_id is not None and message.tenant_id is not None:
            by_tenant.setdefault(message.tenant_id, []).append(item_id)
    for tenant_id, item_ids in sorted(by_tenant.items()):
        evaluate_items(policy_actor(tenant_id), item_ids)


def evaluate_arrivals(message) -> None:
    """Outbox handler of items.created (a batch of new items): decide them in one batch.
    Exactly once per item: evaluate_items claims each undecided receipt first."""
    item_ids = (message.payload or {}).get("item_ids") or []
    if not item_ids or message.tenant_id is None:
        return
    evaluate_items(policy_actor(message.tenant_id), item_ids)


def sweep_undecided(batch: int | None = None, max_seconds: float | None = None) -> int:
    """Decide undecided items, `batch` at a time, one commit per batch, until none is left or
    `max_seconds` have passed. A worker killed half-way loses only its open batch, which the
    next sweep decides."""
    batch = batch or current_app.config.get("POLICY_SWEEP_BATCH", 1000)
    max_seconds = max_seconds or current_app.config.get("POLICY_SWEEP_SECONDS", 50)
    started = time.monotonic()
    decided = 0
    while time.monotonic() - started < max_seconds:
        rows = undecided_receipts(batch)
        if not rows:
            db.session.rollback()
            break
        by_tenant: dict[int, list[int]] = {}
        for tenant_id, item_id in rows:
            by_tenant.setdefault(tenant_id, []).append(item_id)
        for tenant_id, item_ids in sorted(by_tenant.items()):
            decided += sum(evaluate_items(policy_actor(tenant_id), item_ids).values())
        commit()
    return decided


# The policy decides or routes new approvals before anyone hears of them (first: the webhooks'
# item.created event then carries the decided item).
register_handler(evaluate_arrival, "item.created", batch=evaluate_arrivals_together, first=True)
register_handler(evaluate_arrivals, "items.created", first=True)
