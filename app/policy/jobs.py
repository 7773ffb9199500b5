"""Policy jobs: evaluating an item when it arrives (an outbox handler, after the commit that
created it) and the periodic sweep that decides, in batches, whatever is still undecided."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait

from flask import current_app

from app.extensions import db
from app.heap import collector_paused
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
    `max_seconds` have passed. A worker killed half-way loses only its open batches, which the
    next sweep decides.

    On PostgreSQL the sweep runs `POLICY_SWEEP_LANES` batches at once, each on a connection of
    its own (each takes rows the others have not locked), so one batch's Python runs while
    another waits for the database; SQLite has one writer at a time, and one lane."""
    config = current_app.config
    batch = batch or config.get("POLICY_SWEEP_BATCH", 1000)
    deadline = time.monotonic() + (max_seconds or config.get("POLICY_SWEEP_SECONDS", 50))
    lanes = max(1, config.get("POLICY_SWEEP_LANES", 2))
    if lanes == 1 or db.session.get_bind().dialect.name != "postgresql":
        return _sweep(batch, deadline)
    app = current_app._get_current_object()
    with ThreadPoolExecutor(lanes - 1, thread_name_prefix="policy-sweep") as pool:
        others = [pool.submit(_sweep_in_lane, app, batch, deadline) for _ in range(lanes - 1)]
        try:
            decided = [_sweep(batch, deadline)]
        finally:
            # Every lane's batches are its own: a lane that failed rolled back only its open
            # batch, and its error fails the job (to be retried) once the others are done.
            wait(others)
        decided += [lane.result() for lane in others]
    current_app.logger.info("policy sweep: %d decided in %d lanes (%s)", sum(decided), lanes,
                            ", ".join(map(str, decided)))
    return sum(decided)


def _sweep_in_lane(app, batch: int, deadline: float) -> int:
    with app.app_context():
        try:
            return _sweep(batch, deadline)
        finally:
            db.session.remove()


def _sweep(batch: int, deadline: float) -> int:
    decided = 0
    while time.monotonic() < deadline:
        rows = undecided_receipts(batch)
        if not rows:
            db.session.rollback()
            break
        by_tenant: dict[int, list[int]] = {}
        for tenant_id, item_id in rows:
            by_tenant.setdefault(tenant_id, []).append(item_id)
        with collector_paused():
            for tenant_id, item_ids in sorted(by_tenant.items()):
                decided += sum(evaluate_items(policy_actor(tenant_id), item_ids).values())
            commit()
    return decided


# The policy decides or routes new approvals before anyone hears of them (first: the webhooks'
# item.created event then carries the decided item).
register_handler(evaluate_arrival, "item.created", batch=evaluate_arrivals_together, first=True)
register_handler(evaluate_arrivals, "items.created", first=True)
