"""The one write path for work items: every change of state, assignment and comment, from any
entry point, goes through these functions. They check tenant, permission, state and version,
write the audit event and outbox messages in the caller's transaction, and never commit."""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from flask import current_app
from sqlalchemy import select, text

from app.actors import Actor, ActorType
from app.audit.models import AuditEvent
from app.audit.services import record_event
from app.bulk import insert_rows
from app.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import (
    ApprovalStep,
    Kind,
    Membership,
    Priority,
    Role,
    StepState,
    Tenant,
    User,
    WorkItem,
)
from app.outbox.services import add_message
from app.types import utcnow
from app.unit_of_work import savepoint
from app.work import kinds, ledger
from app.work.assignment_notices import note_assignment
from app.work.ledger import conflict_for, describe_user, stamp
from app.work.mentions import mentioned_members, record_mentions
from app.work.money import clean_item_amounts, item_amounts
from app.work.queries import get_item
from app.work.sla_clock import sla_due_at
from app.work.states import (
    ACTION_ROLES,
    COMMENT_ROLES,
    FINAL_STATES,
    INITIAL_STATE,
    TRANSITIONS,
    WORKER_ROLES,
    target_state,
)

# ---------------------------------------------------------------------------------------------
# Helpers shared by every change.


def check_version(item: WorkItem, expected_version: int | None) -> None:
    if expected_version is not None and item.version != expected_version:
        raise conflict_for(item)


def _require_member(actor: Actor, item: WorkItem) -> set[str]:
    if actor.type is not ActorType.SYSTEM and item.tenant_id not in actor.tenant_ids():
        raise NotFound("No such item.")
    return actor.roles_in(item.tenant_id)


# ---------------------------------------------------------------------------------------------
# Creating items.


ITEM_FIELDS = ("kind", "subtype", "title", "external_ref", "source_system", "counterparty",
               "amount", "currency", "region", "product_line", "partner_type", "priority",
               "details", "amount_at_risk", "claimed_amount", "calculated_amount",
               "requester_id")


def creation_tenant(actor: Actor, tenant_id: int) -> Tenant:
    """The tenant new items go to, if the actor reaches it."""
    if tenant_id not in actor.tenant_ids() and actor.type is not ActorType.SYSTEM:
        raise NotFound("No such tenant.")
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant.")
    return tenant


# Plain strings, looked up once (an Enum member's .value is slow in a batch's loop).
_APPROVAL, _BILLING_EXCEPTION, _SETTLEMENT_DISPUTE = (
    Kind.APPROVAL.value, Kind.BILLING_EXCEPTION.value, Kind.SETTLEMENT_DISPUTE.value)
_RAISE_APPROVALS = frozenset({Role.REQUESTER.value})
_RAISE_OTHER_WORK = frozenset({Role.ANALYST.value, Role.MANAGER.value})
_PRIORITIES = frozenset(p.value for p in Priority)


class RequesterDirectory:
    """Who may be named as an item's requester in one tenant: its active members, by email
    (case-insensitive). Read once per batch, so an import of thousands of rows asks once."""

    def __init__(self, tenant_id: int):
        self.tenant_id = tenant_id
        self._ids: dict[str, int] | None = None

    def _load(self) -> dict[str, int]:
        if self._ids is None:
            self._ids = {e.lower(): i for e, i in db.session.execute(
                select(User.email, User.id).join(Membership, Membership.user_id == User.id)
                .where(Membership.tenant_id == self.tenant_id, User.active.is_(True)))}
        return self._ids

    def member_id(self, email: str) -> int | None:
        return self._load().get((email or "").strip().lower())

    def emails(self) -> frozenset[str]:
        return frozenset(self._load())


def prepare_item(
    actor: Actor,
    tenant: Tenant,
    *,
    kind: str,
    subtype: str,
    title: str,
    external_ref: str,
    source_system: str,
    counterparty: str,
    amount,
    currency: str | None = None,
    region: str | None = None,
    product_line: str | None = None,
    partner_type: str | None = None,
    priority: str = Priority.NORMAL.value,
    details: dict | None = None,
    amount_at_risk=None,
    claimed_amount=None,
    calculated_amount=None,
    requester_id: int | None = None,
    requester_email: str | None = None,
    requesters: RequesterDirectory | None = None,
) -> dict:
    """Check a new item the way every entry point must (permission, kind, subtype, required
    fields, priority, currency, money, details) and return its column values, those that
    depend on the moment of creation aside. Writes nothing: create_item and create_items
    both start here, so the single and the batch path cannot drift apart."""
    errors: dict[str, str] = {}
    if kind not in kinds.SUBTYPES:
        raise ValidationFailed("Unknown kind of work.", {"kind": "unknown kind"})
    if actor.type is ActorType.USER:
        roles = actor.roles_in(tenant.id)
        if not roles & (_RAISE_APPROVALS if kind == _APPROVAL else _RAISE_OTHER_WORK):
            raise PermissionDenied("Your roles in this tenant do not let you raise this work.")
        if kind == _APPROVAL:
            requester_id = actor.user_id
    if requester_email and not (actor.type is ActorType.USER and kind == _APPROVAL):
        # A source system or an import names who asked: a member of the tenant, so
        # segregation of duties holds for its items as for those raised in the app.
        requester_id = (requesters or RequesterDirectory(tenant.id)).member_id(requester_email)
        if requester_id is None:
            errors["requester_email"] = "is not an active member of this tenant"
    if subtype not in kinds.SUBTYPES[kind]:
        errors["subtype"] = "unknown subtype for this kind"
    for name, value in (("title", title), ("external_ref", external_ref),
                        ("source_system", source_system), ("counterparty", counterparty)):
        if not value or not str(value).strip():
            errors[name] = "is required"
    if priority not in _PRIORITIES:
        errors["priority"] = "unknown priority"
    if currency and currency != tenant.currency:
        errors["currency"] = f"this tenant works in {tenant.currency}"
    if errors:
        raise ValidationFailed("The item is not valid.", errors)
    # Money rules, whatever the channel: the sign the kind and subtype allow, the currency's
    # decimals, the tenant's ceiling.
    money = clean_item_amounts(
        kind, subtype, item_amounts(kind, {"amount": amount, "amount_at_risk": amount_at_risk,
                                           "claimed_amount": claimed_amount,
                                           "calculated_amount": calculated_amount}),
        currency=tenant.currency, ceiling=tenant.max_item_amount)
    values = dict(
        tenant_id=tenant.id, kind=kind, subtype=subtype, title=title.strip(),
        external_ref=external_ref, source_system=source_system, counterparty=counterparty,
        region=region, product_line=product_line, partner_type=partner_type,
        amount=money["amount"], currency=tenant.currency, priority=priority,
        state=INITIAL_STATE[kind], requester_id=requester_id,
        details=kinds.clean_details(kind, details), last_actor_id=actor.user_id,
        amount_at_risk=money.get("amount_at_risk"), claimed_amount=money.get("claimed_amount"),
        calculated_amount=money.get("calculated_amount"))
    return values


def arrival_values(tenant: Tenant, values: dict, now, due_cache: dict | None = None) -> dict:
    """The columns fixed by the moment an item arrives: created, last action, SLA due time
    (from the tenant's business calendar; `due_cache` shares it among a batch's items of one
    kind and priority, which arrive at the same moment)."""
    key = (values["kind"], values["priority"])
    cache = due_cache if due_cache is not None else {}
    if key not in cache:
        cache[key] = sla_due_at(tenant, values["kind"], values["priority"], now)
    return dict(created_at=now, last_action_at=now, sla_due_at=cache[key], sla_state="on_track")


def created_event_data(values: dict) -> dict:
    """What the audit event of a new item says about it (one shape for both paths)."""
    return {"kind": values["kind"], "subtype": values["subtype"], "amount": values["amount"],
            "currency": values["currency"], "external_ref": values["external_ref"],
            "source_system": values["source_system"]}


def create_item(actor: Actor, *, tenant_id: int, **fields) -> tuple[WorkItem, bool]:
    """Create an item, idempotent on (tenant, source system, external reference): posting the
    same one again returns the existing item and False. `fields`: those of prepare_item."""
    tenant = creation_tenant(actor, tenant_id)
    return _create_prepared(actor, tenant, prepare_item(actor, tenant, **fields))


def _create_prepared(actor: Actor, tenant: Tenant, values: dict) -> tuple[WorkItem, bool]:
    tenant_id = tenant.id
    kind, source_system, external_ref = (values["kind"], values["source_system"],
                                         values["external_ref"])
    amount = values["amount"]

    existing = db.session.scalars(
        select(WorkItem).where(
            WorkItem.tenant_id == tenant_id,
            WorkItem.source_system == source_system,
            WorkItem.external_ref == external_ref,
        )
    ).one_or_none()
    if existing is not None:
        return existing, False

    from sqlalchemy.exc import IntegrityError

    row = {**values, **arrival_values(tenant, values, utcnow())}
    try:
        # In a savepoint: a losing insert fails inside it, not the outer transaction. Nothing
        # is read inside it (on SQLite a read there would make the write wait in vain).
        with savepoint():
            item_id = ledger.insert_item(actor, row)
    except IntegrityError:  # a concurrent create of the same reference won the race
        existing = db.session.scalars(
            select(WorkItem).where(
                WorkItem.tenant_id == tenant_id,
                WorkItem.source_system == source_system,
                WorkItem.external_ref == external_ref,
            )
        ).one()
        return existing, False
    item = db.session.get(WorkItem, item_id)
    data = created_event_data(values)
    # Imported here: the policy decides arrivals and builds on this module.
    from app.policy.evaluation import receive_item

    if kind != Kind.APPROVAL.value:
        # Under a policy with rules for its kind, the policy routes it (app.policy.jobs).
        arrived_under = receive_item(item)
        if arrived_under is not None:
            data["awaiting_policy_version"] = arrived_under
    else:
        # Imported here: the approvals package builds on this module.
        from app.approvals.services import assign_open_step

        # Under a policy the item waits for its evaluation (app.policy.jobs); without one it
        # takes the default chain now.
        arrived_under = receive_item(item)
        if arrived_under is not None:
            data["awaiting_policy_version"] = arrived_under
        else:
            item.steps = default_steps(amount)
            db.session.flush()
            data["approver_id"] = assign_open_step(item)  # routing the first step is part of it
    ledger.record_created(actor, item.id, tenant_id, item.state, data)
    return item, True


# ---------------------------------------------------------------------------------------------
# Creating many items in one unit of work (an import): the same checks (prepare_item), the same
# idempotency, SLA due times, audit events and dashboard rollups as create_item, written with
# a few statements per batch instead of several per item.

# Ids per items.created outbox message (OUTBOX_BATCH_ITEMS): one delivery job evaluates and
# fans out that many.
ITEMS_PER_MESSAGE = 1000
_REF_CHUNK = 5000  # references per look-up query (SQLite's bound-parameter limit)


def prepare_items(actor: Actor, tenant: Tenant, rows: list[dict]) -> list[dict]:
    """prepare_item for every row, before anything is written: the first row that fails
    refuses the whole batch, named by its position (1-based)."""
    prepared = []
    requesters = RequesterDirectory(tenant.id)
    for number, row in enumerate(rows, start=1):
        try:
            prepared.append(prepare_item(actor, tenant, **row, requesters=requesters))
        except ValidationFailed as error:
            raise ValidationFailed(
                f"Item {number}: {error.message}",
                {f"{number}.{name}": message for name, message in error.fields.items()},
            ) from None
    return prepared


def create_items(actor: Actor, tenant_id: int, rows: list[dict]) -> tuple[list[int], int]:
    """Create many items of one tenant (each row: create_item's fields); returns the new
    items' ids and how many were there already. All rows are checked before anything is
    written."""
    tenant = creation_tenant(actor, tenant_id)
    return create_prepared_items(actor, tenant, prepare_items(actor, tenant, rows))


def create_prepared_items(actor: Actor, tenant: Tenant,
                          prepared: list[dict]) -> tuple[list[int], int]:
    """Write items checked by prepare_items, idempotent on (tenant, source system, external
    reference) against the database and within the batch. One insert for the items, one
    audit event each (through the commit-time chain writer), their rollup changes, and one
    items.created outbox message per OUTBOX_BATCH_ITEMS items (policy evaluation and webhooks
    take them in batches). Approvals arriving with no policy in force take the default chain
    and its first approver one at a time, through create_item's own path. Never commits."""
    # Imported here: the policy package builds on this module.
    from app.policy.models import PolicyVersion

    there = _existing_refs(tenant.id, prepared)
    now = utcnow()
    policy = PolicyVersion.in_force(tenant.id, now)
    fresh, one_by_one, seen = [], [], set()
    for values in prepared:
        key = (values["source_system"], values["external_ref"])
        if key in there or key in seen:
            continue
        seen.add(key)
        if values["kind"] == _APPROVAL and policy is None:
            one_by_one.append(values)
        else:
            fresh.append(values)
    due_cache: dict = {}
    rows = [{**values, **arrival_values(tenant, values, now, due_cache)} for values in fresh]
    rows, ids = _insert_new_items(tenant.id, rows)
    created = list(ids)
    if rows:
        _after_batch_insert(actor, tenant, rows, ids, policy, now)
    for values in one_by_one:
        item, made = _create_prepared(actor, tenant, values)
        if made:
            created.append(item.id)
    return created, len(prepared) - len(created)


def _existing_refs(tenant_id: int, prepared: list[dict]) -> set[tuple[str, str]]:
    by_source: dict[str, list[str]] = {}
    for values in prepared:
        by_source.setdefault(values["source_system"], []).append(values["external_ref"])
    postgres = db.session.get_bind().dialect.name == "postgresql"
    there: set[tuple[str, str]] = set()
    for source, refs in by_source.items():
        for start in range(0, len(refs), _REF_CHUNK):
            chunk = refs[start:start + _REF_CHUNK]
            if postgres:
                # Each reference joined to the unique index: with `IN (...)` a bulk load
                # that outruns the table's statistics has the planner read all of the
                # tenant's rows and test each against the list (seconds a batch, measured).
                found = db.session.scalars(text(
                    "SELECT w.external_ref FROM unnest(CAST(:refs AS varchar[])) AS r(ref) "
                    "JOIN work_items AS w ON w.tenant_id = :tenant_id "
                    "AND w.source_system = :source AND w.external_ref = r.ref"),
                    {"refs": chunk, "tenant_id": tenant_id, "source": source})
            else:
                found = db.session.scalars(select(WorkItem.external_ref).where(
                    WorkItem.tenant_id == tenant_id, WorkItem.source_system == source,
                    WorkItem.external_ref.in_(chunk)))
            there.update((source, ref) for ref in found)
    return there


def _insert_new_items(tenant_id: int, rows: list[dict]) -> tuple[list[dict], list[int]]:
    """Insert the rows (COPY on PostgreSQL); a concurrent writer that made one of them first
    makes the insert fail as a whole, in a savepoint: those are left out and it goes again."""
    from sqlalchemy.exc import IntegrityError

    # COPY runs on the driver's own cursor, whose errors SQLAlchemy does not wrap.
    duplicate = (IntegrityError, db.session.get_bind().dialect.dbapi.IntegrityError)
    for _attempt in range(3):
        if not rows:
            return [], []
        try:
            with savepoint():
                return rows, ledger.insert_rows(rows)
        except duplicate:
            there = _existing_refs(tenant_id, rows)
            rows = [r for r in rows if (r["source_system"], r["external_ref"]) not in there]
    raise Conflict("Other writers keep creating the same items; try again.")


def _after_batch_insert(actor: Actor, tenant: Tenant, rows: list[dict], ids: list[int],
                        policy, now) -> None:
    # Imported here: the policy package builds on this module.
    from app.policy.models import PolicyDecision

    events = []  # the data of each item's item.created event
    receipts = []
    # As receive_item: under the policy in force an approval waits for its evaluation, and an
    # exception or a dispute does when the policy has rules for its kind.
    routed_kinds = ({_APPROVAL} | {r.kind or _APPROVAL for r in policy.rules}
                    if policy is not None else set())
    for row, item_id in zip(rows, ids):
        data = created_event_data(row)
        if row["kind"] in routed_kinds:
            receipts.append({"item_id": item_id, "tenant_id": tenant.id, "arrived_at": now})
            data["awaiting_policy_version"] = policy.version
        events.append(data)
    insert_rows(PolicyDecision.__table__, receipts)
    per_message = int(current_app.config.get("OUTBOX_BATCH_ITEMS", ITEMS_PER_MESSAGE))
    ledger.record_items_created(actor, tenant.id, rows, ids, events, per_message)


def default_steps(amount: Decimal) -> list[ApprovalStep]:
    """The chain without a policy (kinds.default_chain) as steps: the first open, the rest
    waiting. Tenant policies (routing rules) replace this when they exist."""
    return [ApprovalStep(position=n, role=role, min_limit=limit,
                         state=StepState.OPEN.value if n == 1 else StepState.WAITING.value)
            for n, (role, limit) in enumerate(kinds.default_chain(amount), start=1)]


# ---------------------------------------------------------------------------------------------
# State transitions.


def transition(
    actor: Actor,
    item: WorkItem,
    action: str,
    *,
    comment: str | None = None,
    expected_version: int | None = None,
    on_behalf_of_id: int | None = None,
    data: dict | None = None,
    values: dict | None = None,
    before_flush: Callable[[WorkItem], None] | None = None,
) -> WorkItem:
    """Move an item by `action` according to its kind's transition table, through the ledger
    (which applies the rules of the new state). Kind-specific rules are checked by the caller:
    its item columns come in `values` (a resolution code, an adjustment), its changes of other
    rows (steps) in `before_flush`."""
    from_state = item.state
    to_state = target_state(item.kind, from_state, action)
    if to_state is None:
        if _is_repeat(item, action, actor):
            return item  # a double click or a retried job: nothing more to do
        if action in {a for a in TRANSITIONS[item.kind].values()} and (
            from_state in FINAL_STATES[item.kind]
        ):
            raise conflict_for(item)
        raise InvalidTransition(
            f"Cannot {action.replace('_', ' ')} an item that is {from_state.replace('_', ' ')}."
        )
    check_version(item, expected_version)
    now = utcnow()  # one moment for the change, its SLA clock and its record
    if before_flush:
        before_flush(item)
    return ledger.change_item(
        actor, item, {"state": to_state, **ledger.touched(actor, item, now), **(values or {})},
        action=f"item.{action}", comment=comment, on_behalf_of_id=on_behalf_of_id, data=data,
        now=now)


def _is_repeat(item: WorkItem, action: str, actor: Actor) -> bool:
    """True when the item's last recorded change is this same action by this same actor."""
    last = db.session.execute(
        select(AuditEvent.action, AuditEvent.actor_type, AuditEvent.actor_id,
               AuditEvent.actor_label)
        .where(AuditEvent.chain_id == item.tenant_id, AuditEvent.item_id == item.id,
               AuditEvent.action.startswith("item."),
               AuditEvent.action.not_in(("item.commented", "item.claimed", "item.released",
                                         "item.reassigned")))
        .order_by(AuditEvent.seq.desc()).limit(1)
    ).one_or_none()
    return (last is not None and last.action == f"item.{action}"
            and last.actor_type == actor.type.value and last.actor_id == actor.user_id
            and last.actor_label == (actor.label or actor.type.value))


def require_action_role(actor: Actor, item: WorkItem, action: str) -> set[str]:
    roles = _require_member(actor, item)
    needed = ACTION_ROLES[item.kind].get(action, frozenset())
    if actor.acts_as_person and not roles & needed:
        raise PermissionDenied(
            f"Your roles in {item.tenant.display_name} do not allow you to "
            f"{action.replace('_', ' ')} this item."
        )
    return roles


# ---------------------------------------------------------------------------------------------
# Assignment and comments.


def claim_item(actor: Actor, item_id: int, expected_version: int | None = None) -> WorkItem:
    """Take an unassigned item. Two people claiming at once: exactly one wins; the other is
    told who has it."""
    item = get_item(actor, item_id)
    roles = _require_member(actor, item)
    if not roles & WORKER_ROLES[item.kind]:
        raise PermissionDenied("Your roles do not let you work this kind of item.")
    if item.state in FINAL_STATES[item.kind]:
        raise InvalidTransition(f"This item is already {item.state.replace('_', ' ')}.")
    if item.assignee_id == actor.user_id:
        return item
    if item.assignee_id is not None:
        raise _claim_conflict(item)
    check_version(item, expected_version)
    now = utcnow()
    return ledger.change_item(
        actor, item, {"assignee_id": actor.user_id, "claimed_at": now,
                      **ledger.touched(actor, item, now)},
        action="item.claimed", data={"assignee_id": actor.user_id}, now=now,
        describe=_claim_conflict)


def _claim_conflict(item: WorkItem) -> Conflict:
    if item.assignee_id is not None:
        return Conflict(f"Already claimed by {describe_user(item.assignee)} at "
                        f"{stamp(item.claimed_at, item.tenant)}.")
    return conflict_for(item)


def release_item(actor: Actor, item_id: int, expected_version: int | None = None) -> WorkItem:
    item = get_item(actor, item_id)
    roles = _require_member(actor, item)
    if item.assignee_id is None:
        return item
    if item.assignee_id != actor.user_id and Role.MANAGER.value not in roles:
        raise PermissionDenied(f"Only {describe_user(item.assignee)} or a manager can release it.")
    check_version(item, expected_version)
    now = utcnow()
    return ledger.change_item(
        actor, item, {"assignee_id": None, "claimed_at": None, **ledger.touched(actor, item, now)},
        action="item.released", data={"previous_assignee_id": item.assignee_id}, now=now)


def reassign_item(actor: Actor, item_id: int, assignee_id: int,
                  expected_version: int | None = None) -> WorkItem:
    item = get_item(actor, item_id)
    roles = _require_member(actor, item)
    if Role.MANAGER.value not in roles:
        raise PermissionDenied("Only a manager can reassign work.")
    target = db.session.scalars(
        select(Membership).where(Membership.tenant_id == item.tenant_id,
                                 Membership.user_id == assignee_id)
    ).one_or_none()
    if target is None or not target.user.active or not target.role_set & WORKER_ROLES[item.kind]:
        raise ValidationFailed("That person cannot work this item.",
                               {"assignee_id": "not a member who works this kind of item"})
    check_version(item, expected_version)
    previous = item.assignee_id
    now = utcnow()
    ledger.change_item(
        actor, item, {"assignee_id": assignee_id, "claimed_at": now,
                      **ledger.touched(actor, item, now)},
        action="item.reassigned",
        data={"previous_assignee_id": previous, "assignee_id": assignee_id}, now=now)
    if previous != assignee_id:
        note_assignment(actor, item, assignee_id)  # mailed once the unit of work commits
    return item


def add_comment(actor: Actor, item_id: int, text: str) -> None:
    item = get_item(actor, item_id)
    roles = _require_member(actor, item)
    if actor.type is ActorType.USER and not roles & COMMENT_ROLES:
        raise PermissionDenied("Your roles do not let you comment.")
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("Write a comment first.", {"comment": "is required"})
    if len(text) > 5000:
        raise ValidationFailed("That comment is too long.", {"comment": "at most 5000 characters"})
    mentioned = record_mentions(item, mentioned_members(item, text), actor.user_id)
    record_event(actor, "item.commented", tenant_id=item.tenant_id, item_id=item.id, comment=text,
                 data={"mentioned": mentioned} if mentioned else None)
    if mentioned:
        add_message("item.mentioned", {"item_id": item.id, "user_ids": mentioned,
                                       "by": actor.user_id, "comment": text}, item.tenant_id)
