"""The policy's write path: evaluating arrived items (auto-approve, or create their approval
chain), and the life of a policy version (draft, rule edits, submit, four-eyes activation,
kill switch). Every function takes its actor, checks tenant and permission, writes its audit
events and outbox messages in the caller's transaction, and never commits."""
from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, or_, select, update

from app.actors import Actor, ActorType
from app.approvals.models import ApprovalAssignment
from app.bulk import insert_rows
from app.audit.services import dialect_insert, record_event
from app.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import (
    ApprovalStep,
    ApproverGroup,
    ApproverGroupMember,
    Kind,
    Membership,
    MembershipRole,
    Role,
    StepState,
    Tenant,
    User,
    WorkItem,
)
from app.outbox.services import add_messages
from app.policy import engine
from app.policy.models import (
    Outcome,
    PolicyBudgetDay,
    PolicyDecision,
    PolicyKillSwitch,
    PolicyRule,
    PolicyState,
    PolicyVersion,
)
from app.policy.rules import KIND_WORDS, check_condition
from app.types import utcnow
from app.work import ledger
from app.work.assignment import least_loaded, loads
from app.work.assignment_notices import note_assignment
from app.work.kinds import parse_money
from app.work.states import INITIAL_STATE, WORKER_ROLES, ApprovalState

POLICY_LABEL = "policy"
REJECTION_WINDOW_DAYS = 90


def policy_actor(tenant_id: int) -> Actor:
    """The policy engine acting in one tenant."""
    return Actor(ActorType.POLICY, label=POLICY_LABEL, tenant_id=tenant_id)


# ---------------------------------------------------------------------------------------------
# Which version is in force.


def receive_item(item: WorkItem) -> int | None:
    """At arrival (called by create_item): under a policy in force, an approval waits for its
    evaluation (an undecided receipt) instead of taking the default chain; an exception or a
    dispute gets one when the policy has rules for its kind (it stays workable meanwhile).
    Returns the version it arrived under, or None (no policy: the default chain applies)."""
    policy = PolicyVersion.in_force(item.tenant_id, item.created_at)
    if policy is None:
        return None
    if item.kind != Kind.APPROVAL.value and not any(
            (r.kind or Kind.APPROVAL.value) == item.kind for r in policy.rules):
        return None
    db.session.add(PolicyDecision(item_id=item.id, tenant_id=item.tenant_id,
                                  arrived_at=item.created_at))
    return policy.version


# ---------------------------------------------------------------------------------------------
# Evaluating items: one function for the arrival job (one item) and the sweep (a batch).


def kill_switch_engaged(tenant_id: int) -> bool:
    return bool(db.session.scalar(select(PolicyKillSwitch.engaged)
                                  .where(PolicyKillSwitch.tenant_id == tenant_id)))


def _lock_budget(tenant: Tenant, now: datetime) -> PolicyBudgetDay:
    """The tenant's budget row for its local day, locked until commit (auto-approvals of one
    tenant spend it one transaction at a time)."""
    day = now.astimezone(ZoneInfo(tenant.timezone)).date()
    db.session.execute(dialect_insert()(PolicyBudgetDay)
                       .values(tenant_id=tenant.id, day=day, count=0, amount=Decimal("0.00"))
                       .on_conflict_do_nothing())
    query = select(PolicyBudgetDay).where(PolicyBudgetDay.tenant_id == tenant.id,
                                          PolicyBudgetDay.day == day)
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return db.session.scalars(query.execution_options(populate_existing=True)).one()


def rejections_by_counterparty(tenant_id: int, counterparties, now: datetime) -> dict[str, int]:
    """Approvals of each counterparty that people rejected in the last 90 days."""
    if not counterparties:
        return {}
    since = now - engine_window()
    return dict(db.session.execute(
        select(WorkItem.counterparty, func.count())
        .where(WorkItem.tenant_id == tenant_id, WorkItem.state == ApprovalState.REJECTED.value,
               WorkItem.counterparty.in_(sorted(set(counterparties))),
               WorkItem.resolved_at >= since)
        .group_by(WorkItem.counterparty)).all())


def engine_window():
    from datetime import timedelta

    return timedelta(days=REJECTION_WINDOW_DAYS)


class _Router:
    """Chooses the approver of each routed item's first step for a whole batch, by the rules
    of app.approvals.services.choose_approver (role, limit, active, not the requester, a
    delegate who could decide it when out of office; the least loaded first, by
    app.work.assignment), with the members and their load read once per batch."""

    def __init__(self, tenant_id: int):
        from app.approvals.services import standing_delegate

        self.members = db.session.scalars(
            select(Membership).where(Membership.tenant_id == tenant_id)
            .order_by(Membership.user_id)).all()
        self.by_user = {m.user_id: m for m in self.members}
        self.load = loads(self.by_user)
        self.standing_delegate = standing_delegate
        self.today = utcnow().date()

    def _eligible(self, m: Membership | None, role: str, limit: Decimal, excluded) -> bool:
        return (m is not None and m.user.active and m.user_id not in excluded
                and role in m.role_set and m.approval_limit >= limit)

    def choose(self, role: str, limit: Decimal, item) -> int | None:
        """`item`: anything with requester_id, kind and amount (a delegation's scope)."""
        excluded = {item.requester_id} if item.requester_id else set()
        best = away_uncovered = None
        for m in self.members:
            if not self._eligible(m, role, limit, excluded):
                continue
            delegate = self.standing_delegate(m, item)
            if delegate is not None:
                if not self._eligible(self.by_user.get(delegate), role, limit, excluded):
                    continue
            elif m.is_away(self.today):
                # Away, and the delegation does not cover this item: only if nobody present can.
                away_uncovered = away_uncovered or m.user_id
                continue
            if best is None or self.load.get(m.user_id, 0) < self.load.get(best, 0):
                best = m.user_id  # members are in id order: the lowest id wins a tie
        best = best if best is not None else away_uncovered
        if best is not None:
            self.load[best] = self.load.get(best, 0) + 1
        return best


# What the engine reads of an item, then what the ledger reads before changing it.
ITEM_COLUMNS = tuple(getattr(WorkItem, name) for name in dict.fromkeys((
    "id", "tenant_id", "kind", "state", "version", "amount", "currency", "subtype", "region",
    "product_line", "partner_type", "priority", "source_system", "counterparty", "details",
    "requester_id", "sla_due_at", "created_at", "first_action_at", *ledger.BEFORE)))


def evaluate_items(actor: Actor, item_ids: list[int]) -> dict[str, int]:
    """Decide every arrived, undecided item of `item_ids` in the actor's tenant under the
    policy in force now: auto-approve it, or create its approval chain and route its first
    step, and fill in its decision receipt. Exactly once per item: the receipt is claimed
    first (an UPDATE that requires it undecided), so a second run, a concurrent worker or a
    retry after a crash finds nothing left to decide. Never commits."""
    if actor.type is not ActorType.POLICY or actor.tenant_id is None:
        raise PermissionDenied("Only the policy engine evaluates items.")
    counts: dict[str, int] = defaultdict(int)
    if not item_ids:
        return counts
    tenant = db.session.get(Tenant, actor.tenant_id)
    now = utcnow()
    receipts = PolicyDecision.__table__.c
    claimed = set(db.session.scalars(
        update(PolicyDecision.__table__)
        .where(receipts.tenant_id == tenant.id, receipts.item_id.in_(item_ids),
               receipts.decided_at.is_(None))
        .values(decided_at=now).returning(receipts.item_id)))
    if not claimed:
        return counts
    query = (select(*ITEM_COLUMNS).where(WorkItem.id.in_(claimed),
                                         WorkItem.tenant_id == tenant.id)
             .order_by(WorkItem.id))
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=WorkItem.__table__)
    items = db.session.execute(query).all()
    pending = [i for i in items if i.kind == Kind.APPROVAL.value
               and i.state == ApprovalState.PENDING.value]
    # Exceptions and disputes nobody has touched yet (claimed or moved on: people decide).
    cases = [i.id for i in items if i.kind != Kind.APPROVAL.value
             and i.state == INITIAL_STATE[i.kind] and i.assignee_id is None]
    skipped = claimed - {i.id for i in pending} - set(cases)
    policy = PolicyVersion.in_force(tenant.id, now)
    compiled = engine.compile_policy(policy) if policy is not None else None
    verdicts: list[tuple] = []
    if pending:
        rejections = rejections_by_counterparty(tenant.id, [i.counterparty for i in pending], now)
        kill = kill_switch_engaged(tenant.id)
        budget_row = budget = None
        if compiled is not None and any(r.outcome == Outcome.AUTO_APPROVE.value
                                        for r in compiled.rules):
            budget_row = _lock_budget(tenant, now)
            budget = engine.Budget.of(compiled, budget_row.count, budget_row.amount)
        for item in pending:
            inputs = engine.item_inputs(item, rejections.get(item.counterparty, 0))
            if compiled is None:  # the policy was retired with no successor: default chain
                verdict = engine.Verdict(engine.ROUTED, None, 0, inputs,
                                         engine.default_chain(inputs["amount"]))
            else:
                verdict = engine.decide(compiled, item.id, inputs, kill_switch=kill,
                                        budget=budget)
            verdicts.append((item, verdict))
        if budget_row is not None and budget.used_count:
            budget_row.count += budget.used_count
            budget_row.amount += budget.used_amount
    _write_decisions(actor, tenant, policy, verdicts, now)
    if cases:
        if compiled is None:
            skipped |= set(cases)
        else:
            for outcome in _decide_cases(actor, tenant, policy, compiled, cases, now):
                counts[outcome] += 1
    if skipped:
        db.session.execute(update(PolicyDecision.__table__)
                           .where(receipts.item_id.in_(skipped))
                           .values(outcome=engine.SKIPPED, policy_id=policy.id if policy else None,
                                   policy_version=policy.version if policy else None))
    for _item, verdict in verdicts:
        counts[verdict.outcome] += 1
    counts[engine.SKIPPED] += len(skipped)
    return counts


def _write_decisions(actor: Actor, tenant: Tenant, policy: PolicyVersion | None,
                     verdicts: list[tuple], now: datetime) -> None:
    """Auto-approve or route the batch's approvals, through the ledger's batch door (which
    applies the finishing rules of the approval, writes the events and the rollup changes and
    tells source systems of the state changes in one message)."""
    if not verdicts:
        return
    version = policy.version if policy else None
    routed = [(i, v) for i, v in verdicts if v.outcome != engine.AUTO_APPROVED]
    step_rows, first_steps, special_first = [], {}, set()
    if routed:
        from app.approvals.escalation import escalation_window

        groups = group_ids(tenant.id)
        for item, verdict in routed:
            for position, step in enumerate(verdict.steps, start=1):
                row = {"item_id": item.id, "position": position, "role": step[0],
                       "min_limit": step[1],
                       "state": (StepState.OPEN.value if position == 1
                                 else StepState.WAITING.value),
                       **step_routing_columns(step, groups)}
                # Every row names the same columns (one COPY); the first step waits from now.
                row["escalates_at"] = (escalation_window(tenant, row["escalate_after"], now)
                                       if position == 1 and row["escalate_after"] else None)
                step_rows.append(row)
                if position == 1 and (row["need"] or row["source_field"]):
                    special_first.add(item.id)
        step_ids = insert_rows(ApprovalStep.__table__, step_rows, with_ids=True)
        for row, step_id in zip(step_rows, step_ids):
            if row["position"] == 1:
                first_steps[row["item_id"]] = step_id
    router = _Router(tenant.id) if routed else None
    assignments, changes, receipts, assigned = [], [], [], []
    for item, verdict in verdicts:
        rule = verdict.rule
        inputs = _plain(verdict.inputs)  # once, for the receipt and the event alike
        decided = {"policy_version": version, "rule": rule.position if rule else None,
                   "rule_name": rule.name if rule else None, "outcome": verdict.outcome,
                   "risk_score": verdict.risk_score, "inputs": inputs}
        receipt = {"item_id": item.id, "policy_id": policy.id if policy else None,
                   "policy_version": version, "rule_position": rule.position if rule else None,
                   "rule_name": rule.name if rule else None, "outcome": verdict.outcome,
                   "held_by": verdict.held_by, "risk_score": verdict.risk_score,
                   "inputs": inputs, "queue": verdict.queue,
                   "steps": [step_dict(step) for step in verdict.steps]}
        receipts.append(receipt)
        if verdict.outcome == engine.AUTO_APPROVED:
            decided["amount"] = item.amount
            # first_action_at in every row (not only where unset): one statement for all.
            changes.append(ledger.Change(
                item, {"state": ApprovalState.APPROVED.value, "risk_score": verdict.risk_score,
                       "policy_version": version, "last_actor_id": actor.user_id,
                       "last_action_at": now, "first_action_at": item.first_action_at or now},
                action="item.approve", data=decided))
            continue
        role, limit = verdict.steps[0]
        step_id = first_steps[item.id]
        owner = None
        if item.id in special_first:
            owner, members = _open_special_step(item, step_id)
            role = db.session.get(ApprovalStep, step_id).role  # a fallback changes it
            if members is not None:
                # A parallel step: each member gets their own request and link.
                for member in members:
                    assigned.append({"item_id": item.id, "step_id": step_id,
                                     "approver_id": member, "parallel": True})
                decided.update(held_by=verdict.held_by, queue=verdict.queue,
                               steps=receipt["steps"], approver_id=None, members=members)
                changes.append(ledger.Change(
                    item, {"risk_score": verdict.risk_score, "team_queue": verdict.queue,
                           "policy_version": version, "last_action_at": now},
                    action="policy.routed", data=decided, event_states=True))
                continue
        approver_id = owner if owner is not None else router.choose(role, limit, item)
        if approver_id is not None and owner is not None:
            assigned.append({"item_id": item.id, "step_id": step_id, "approver_id": owner})
        elif approver_id is not None:
            assignments.append({"step_id": step_id, "item_id": item.id,
                                "approver_id": approver_id, "assigned_at": now})
            assigned.append({"item_id": item.id, "step_id": step_id,
                             "approver_id": approver_id})
        decided.update(held_by=verdict.held_by, queue=verdict.queue,
                       steps=receipt["steps"], approver_id=approver_id)
        changes.append(ledger.Change(
            item, {"risk_score": verdict.risk_score, "team_queue": verdict.queue,
                   "policy_version": version, "last_action_at": now},
            action="policy.routed", data=decided, event_states=True))
    ledger.apply_changes(actor, tenant.id, changes, now=now)
    if assignments:
        insert_rows(ApprovalAssignment.__table__, assignments)
    # One message per batch and topic (not per item): the worker's jobs stay few. The members
    # of a parallel step share its step id, so each has a message of their own.
    single = [a for a in assigned if not a.get("parallel")]
    if single:
        add_messages("approval.steps_assigned", [{"assignments": single}], tenant.id)
    members = [{k: v for k, v in a.items() if k != "parallel"} for a in assigned
               if a.get("parallel")]
    if members:
        add_messages("approval.step_assigned", members, tenant.id)
    update_rows(PolicyDecision.__table__, receipts, match=("item_id",))


def step_dict(step) -> dict:
    """A chain's step as the receipt keeps it: role and limit, and its routing if any."""
    return {"role": step[0], "min_limit": str(step[1]), **getattr(step, "routing", {})}


def group_ids(tenant_id: int) -> dict[str, int]:
    """The tenant's approver groups by name (case-insensitive)."""
    return {name.casefold(): group_id for group_id, name in db.session.execute(
        select(ApproverGroup.id, ApproverGroup.name).where(ApproverGroup.tenant_id == tenant_id))}


def step_routing_columns(step, groups: dict[str, int]) -> dict:
    """The step row's routing columns from a chain's step. A group the tenant no longer has
    leaves a plain step of the step's role (the group's name stays in the receipt)."""
    routing = getattr(step, "routing", {}) or {}
    group_id = groups.get(routing["group"].casefold()) if routing.get("group") else None
    need = routing.get("need")
    if routing.get("group") and group_id is None:
        need = None
    escalates = not need and routing.get("escalate_after") and routing.get("escalate_to")
    return {"need": need, "reject_when": routing.get("reject_when") if need else None,
            "group_id": group_id, "source_field": routing.get("field"),
            "fallback_role": routing.get("fallback") if need else None,
            "escalate_after": routing.get("escalate_after") if escalates else None,
            "escalate_to": list(routing.get("escalate_to")) if escalates else None}


def _open_special_step(item, step_id: int) -> tuple[int | None, list[int] | None]:
    """The first step of a routed item, when it names its approver by a field of the item
    (returns the owner, or None to route by its role) or is parallel (returns its members, or
    None when too few may decide it and it fell back to one person of its fallback role)."""
    from app.approvals.services import name_owner, open_parallel_step

    step = db.session.get(ApprovalStep, step_id)
    excluded = {item.requester_id} if item.requester_id else set()
    if step.need:
        members = open_parallel_step(item, step, excluded)
        if members is not None:
            return None, members
        return None, None  # fell back to one person of its fallback role
    return name_owner(item, step, excluded), None


class _LeastLoaded:
    """Who gets the next item of a batch that a rule assigns to "the least-loaded holder of a
    role": the tenant's active members holding the role and present today (not out of office),
    with the fewest open items assigned, ties to the lowest id. Members and their open items
    are read once per batch and role; each assignment made in the batch counts at once, so a
    batch spreads its items as one-by-one evaluation would, without two queries per item."""

    def __init__(self, tenant_id: int):
        self.tenant_id = tenant_id
        self.present: dict[str, list[int]] = {}
        self.load: dict[int, int] = {}

    def pick(self, role: str, kind: str) -> int | None:
        if role not in WORKER_ROLES[kind]:
            return None
        if role not in self.present:
            self._read(role)
        present = self.present[role]
        if not present:
            return None
        return least_loaded(present, self.load)

    def assigned(self, user_id: int, previous: int | None) -> None:
        if user_id in self.load:
            self.load[user_id] += 1
        if previous in self.load:
            self.load[previous] -= 1

    def _read(self, role: str) -> None:
        today = utcnow().date()
        members = db.session.scalars(
            select(Membership).join(MembershipRole, MembershipRole.membership_id == Membership.id)
            .join(User, User.id == Membership.user_id)
            .where(Membership.tenant_id == self.tenant_id, MembershipRole.role == role,
                   User.active.is_(True)).order_by(Membership.user_id)).all()
        present = self.present[role] = [m.user_id for m in members if not m.is_away(today)]
        self.load.update(loads(user_id for user_id in present if user_id not in self.load))


def _decide_cases(actor: Actor, tenant: Tenant, policy: PolicyVersion,
                  compiled: engine.CompiledPolicy, item_ids: list[int], now: datetime) -> list[str]:
    """Route untouched billing exceptions and settlement disputes by their kind's rules: a named
    queue, an assignee holding a role, a priority (with the SLA due time it implies), and the
    risk score, through the ledger's batch door; an item no rule matches is left as it is,
    only its receipt says so."""
    from app.sla.services import sla_due_at, sla_state_at

    outcomes = []
    least_loaded = _LeastLoaded(tenant.id)
    items = db.session.scalars(select(WorkItem).where(WorkItem.id.in_(item_ids))
                               .order_by(WorkItem.id)
                               .execution_options(populate_existing=True)).all()
    routed, notices = [], []
    for item in items:
        verdict = engine.decide_case(compiled, item.kind, engine.case_inputs(item))
        rule = verdict.rule
        assignee_id = None
        changes: dict = {}
        values: dict = {}
        if verdict.outcome != engine.UNROUTED:
            values.update(risk_score=verdict.risk_score, policy_version=policy.version,
                          last_action_at=now)
            if verdict.queue:
                values["team_queue"] = changes["queue"] = verdict.queue
            if verdict.priority and verdict.priority != item.priority:
                changes["priority"] = {"from": item.priority, "to": verdict.priority}
                values["priority"] = verdict.priority
                if item.sla_due_at is not None:
                    due = values["sla_due_at"] = sla_due_at(tenant, item.kind, verdict.priority,
                                                            item.created_at)
                    values["sla_state"] = sla_state_at(tenant, item.kind, verdict.priority,
                                                       due, now)
            if verdict.assign_role:
                assignee_id = least_loaded.pick(verdict.assign_role, item.kind)
                if assignee_id is not None:
                    least_loaded.assigned(assignee_id, item.assignee_id)
                    values.update(assignee_id=assignee_id, claimed_at=now)
                    notices.append((item, assignee_id, rule))
                changes["assignee_id"] = assignee_id
        inputs = _plain(verdict.inputs)
        db.session.execute(update(PolicyDecision.__table__)
                           .where(PolicyDecision.__table__.c.item_id == item.id)
                           .values(policy_id=policy.id, policy_version=policy.version,
                                   rule_position=rule.position if rule else None,
                                   rule_name=rule.name if rule else None,
                                   outcome=verdict.outcome, risk_score=verdict.risk_score,
                                   inputs=inputs, queue=verdict.queue,
                                   priority=verdict.priority, assign_role=verdict.assign_role,
                                   assignee_id=assignee_id, steps=[]))
        if verdict.outcome != engine.UNROUTED:
            routed.append(ledger.Change(
                item, values, action="policy.routed", event_states=True,
                data={"policy_version": policy.version, "rule": rule.position,
                      "rule_name": rule.name, "outcome": verdict.outcome,
                      "risk_score": verdict.risk_score, "inputs": inputs,
                      "assign_role": verdict.assign_role, **changes}))
        outcomes.append(verdict.outcome)
    ledger.apply_changes(actor, tenant.id, routed, now=now)
    for item, assignee_id, rule in notices:
        note_assignment(actor, item, assignee_id, policy_version=policy.version,
                        rule_name=rule.name, rule_position=rule.position)
    return outcomes


def update_rows(table, rows: list[dict], *, match: tuple[str, ...], fixed: dict | None = None,
                fixed_sql: dict[str, str] | None = None):
    """Update many rows, each with its own values (`rows`: column -> value, the `match`
    columns picking the row) plus the same `fixed` values. On PostgreSQL one statement
    whatever the number of rows (each column travels as one array, unnested; `fixed_sql` adds
    SQL expressions over the row, `t`); elsewhere an executemany."""
    if not rows:
        return
    fixed = fixed or {}
    names = list(rows[0])
    assigned = [n for n in names if n not in match]
    dialect = db.session.get_bind().dialect
    if dialect.name != "postgresql":
        from sqlalchemy import literal_column

        extra = {n: literal_column(sql.replace("t.", f"{table.name}."))
                 for n, sql in (fixed_sql or {}).items()}
        db.session.execute(
            update(table).where(*[table.c[n] == bindparam(f"p_{n}") for n in match])
            .values(**{n: bindparam(f"p_{n}") for n in assigned}, **fixed, **extra),
            [{f"p_{n}": row[n] for n in names} for row in rows])
        return
    import json

    from sqlalchemy import JSON, text

    # The rows travel as one JSON document (json.dumps is C; binding a thousand-element array
    # per column made the driver inspect every element), typed by json_to_recordset.
    columns = ", ".join(
        f"{n} " + ("json" if isinstance(table.c[n].type, JSON)
                   else table.c[n].type.compile(dialect=dialect)) for n in names)
    params = {"rows": json.dumps(rows, default=_json_scalar)}
    for n, value in fixed.items():
        params[f"f_{n}"] = value
    sets = [f"{n} = v.{n}" for n in assigned]
    sets += [f"{n} = :f_{n}" for n in fixed]
    sets += [f"{n} = {sql}" for n, sql in (fixed_sql or {}).items()]
    where = " AND ".join(f"t.{n} = v.{n}" for n in match)
    db.session.execute(text(
        f"UPDATE {table.name} AS t SET {', '.join(sets)} "
        f"FROM json_to_recordset(CAST(:rows AS json)) AS v({columns}) WHERE {where}"), params)


def _json_scalar(value):
    """Money and times in update_rows' JSON: as the text PostgreSQL reads back exactly."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a batch update")


def _plain(inputs: dict) -> dict:
    from app.types import jsonable

    return jsonable(inputs)


# ---------------------------------------------------------------------------------------------
# The life of a policy version. Admins of the tenant only; every step audited.


def require_policy_admin(actor: Actor, tenant_id: int) -> Tenant:
    if tenant_id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant.")
    if Role.ADMIN.value not in actor.roles_in(tenant_id):
        raise PermissionDenied(f"Only admins of {tenant.display_name} manage its policy.")
    return tenant


def get_version(actor: Actor, tenant_id: int, policy_id: int) -> PolicyVersion:
    require_policy_admin(actor, tenant_id)
    policy = db.session.get(PolicyVersion, policy_id)
    if policy is None or policy.tenant_id != tenant_id:
        raise NotFound("No such policy version.")
    return policy


def open_draft(tenant_id: int) -> PolicyVersion | None:
    return db.session.scalars(
        select(PolicyVersion).where(PolicyVersion.tenant_id == tenant_id,
                                    PolicyVersion.state.in_((PolicyState.DRAFT.value,
                                                             PolicyState.PENDING.value)))
        .order_by(PolicyVersion.version.desc()).limit(1)).first()


def latest_active(tenant_id: int) -> PolicyVersion | None:
    """The version in force now, else the newest scheduled one."""
    return PolicyVersion.in_force(tenant_id) or db.session.scalars(
        select(PolicyVersion).where(PolicyVersion.tenant_id == tenant_id,
                                    PolicyVersion.state == PolicyState.ACTIVE.value)
        .order_by(PolicyVersion.version.desc()).limit(1)).first()


DEFAULT_FALLBACK = [{"role": "approver", "min_limit": "amount"}]


def _copy_rules(source: PolicyVersion | None) -> list[PolicyRule]:
    if source is None:
        return []
    return [PolicyRule(position=r.position, kind=r.kind, name=r.name, condition=r.condition,
                       outcome=r.outcome, steps=list(r.steps or []), queue=r.queue,
                       set_priority=r.set_priority, assign_role=r.assign_role)
            for r in source.rules]


def create_draft(actor: Actor, tenant_id: int) -> PolicyVersion:
    """A new draft copied from the version in force (or an empty one); one open draft at a
    time per tenant."""
    require_policy_admin(actor, tenant_id)
    if open_draft(tenant_id) is not None:
        raise InvalidTransition("There is already a draft or a version waiting for approval.")
    source = latest_active(tenant_id)
    number = (db.session.scalar(select(func.max(PolicyVersion.version))
                                .where(PolicyVersion.tenant_id == tenant_id)) or 0) + 1
    draft = PolicyVersion(
        tenant_id=tenant_id, version=number, state=PolicyState.DRAFT.value,
        based_on_id=source.id if source else None, author_id=actor.user_id, created_at=utcnow(),
        max_auto_amount=source.max_auto_amount if source else Decimal("1000.00"),
        daily_auto_count=source.daily_auto_count if source else 200,
        daily_auto_amount=source.daily_auto_amount if source else Decimal("50000.00"),
        qa_sample_pct=source.qa_sample_pct if source else 5,
        qa_role=source.qa_role if source else Role.MANAGER.value,
        risk=dict(source.risk) if source else {"base": 10, "per_10k": 10, "max_auto_risk": 60},
        sla_targets=dict(source.sla_targets) if source else {},
        fallback_steps=list(source.fallback_steps) if source else list(DEFAULT_FALLBACK),
        expire_after_days=source.expire_after_days if source else None,
        rules=_copy_rules(source),
    )
    db.session.add(draft)
    db.session.flush()
    record_event(actor, "policy.draft_created", tenant_id=tenant_id,
                 data={"policy_id": draft.id, "version": number,
                       "based_on_version": source.version if source else None})
    return draft


def _editable(actor: Actor, tenant_id: int, policy_id: int) -> PolicyVersion:
    policy = get_version(actor, tenant_id, policy_id)
    if policy.state != PolicyState.DRAFT.value:
        raise InvalidTransition(f"Version {policy.version} is {policy.state}; only a draft "
                                "can be edited.")
    if policy.author_id != actor.user_id:
        # Whoever shaped a version may not activate it; so only its author shapes it.
        raise PermissionDenied("Only the author of a draft edits it; another admin reviews "
                               "and activates it.")
    return policy


STEP_ROLES = (Role.APPROVER.value, Role.MANAGER.value)


_LIMIT = r"(?:\s*>=\s*(?P<limit>\S.*))?"
_NEED = r"(?P<need>all|any|\d{1,3})\s+of\s+"
GROUP_STEP = re.compile(_NEED + r'group\s+"(?P<group>[^"]{1,80})"'
                        r"(?:\s+else\s+(?P<fallback>\w+))?" + _LIMIT + "$", re.I)
ROLE_QUORUM_STEP = re.compile(_NEED + r"(?P<role>\w+)" + _LIMIT + "$", re.I)
OWNER_STEP = re.compile(r"owner\s+(?P<field>\w+)\s+else\s+(?P<role>\w+)" + _LIMIT + "$", re.I)
REJECT_ON_QUORUM = ", reject when quorum lost"
ESCALATION = re.compile(r",\s*escalate\s+after\s+(?P<n>\d{1,3})\s+(?P<business>business\s+)?"
                        r"(?P<unit>hours?|days?)\s+to\s+(?P<levels>.+)$", re.I)
ESCALATION_LEVEL = re.compile(r'(?:(?P<manager>manager)|group\s+"(?P<group>[^"]{1,80})")'
                              r"(?:\s+then\s+|$)", re.I)
MAX_ESCALATION_LEVELS = 5
OWNER_FIELDS = ("account_owner_email", "cost_centre_owner_email", "budget_holder_email")
STEP_SYNTAX = ('write "role >= limit", "all of group \"Treasury\" >= 5000", '
               '"2 of group \"Regional controllers EMEA\"", "2 of manager >= 10000" or '
               '"owner account_owner_email else manager >= 1000"; a parallel step may end with '
               f'"{REJECT_ON_QUORUM}", a one-person step with ", escalate after 2 days to '
               'manager then group \"Treasury\""')


def clean_steps(text: str, groups: set[str] | None = None) -> list[dict]:
    """Steps written one per line: "role" or "role >= limit" (limit a number or amount); a
    parallel step "all|any|N of group \"Name\" [>= limit]" or "N of role [>= limit]", which
    may end with ", reject when quorum lost" (a member's rejection then rejects only once the
    quorum can no longer be met); an approver from the item "owner FIELD else role
    [>= limit]". `groups`: the tenant's group names (casefolded) to check names against."""
    steps, errors = [], []
    for n, line in enumerate((text or "").splitlines(), start=1):
        line = " ".join(line.split())
        if not line:
            continue
        try:
            steps.append(_clean_step(line, groups))
        except ValueError as problem:
            errors.append(f"line {n}: {problem}")
    if errors:
        raise ValidationFailed("Some steps are not valid.", {"steps": "; ".join(errors)})
    return steps


def check_steps(actor: Actor, tenant_id: int,
                text: str) -> tuple[str | None, list[str], list[str]]:
    """Live check of a steps text as an admin types it: the problems, or each step in words
    (with how many members a group has today), and warnings: a parallel step that fewer
    people may decide today than it needs (it would go to one person of its fallback role
    as it opens). Changes nothing."""
    from app.approvals.wording import step_words

    tenant = require_policy_admin(actor, tenant_id)
    try:
        steps = clean_steps(text, set(group_ids(tenant_id)))
    except ValidationFailed as failed:
        return failed.fields.get("steps", failed.message), [], []
    words, warnings = [], []
    for n, step in enumerate(steps, start=1):
        line = step_words(step, tenant.currency)
        if step.get("need"):
            size, eligible = parallel_capacity(tenant_id, step)
            if step.get("group"):
                line += f" ({size} member{'s' if size != 1 else ''} today"
                line += f", {eligible} of them may decide it)" if eligible != size else ")"
            needed = 1 if step["need"] == "any" else None if step["need"] == "all" \
                else int(step["need"])
            if eligible == 0 or (needed is not None and eligible < needed):
                who = f"“{step['group']}”" if step.get("group") else f"The {step['role']}s"
                fallback = step.get("fallback") or "manager"
                warnings.append(
                    f"Step {n}: {who} ha{'s' if step.get('group') else 've'} {eligible} "
                    f"{'member' if step.get('group') else 'holder'}{'s' if eligible != 1 else ''}"
                    f" who may decide it today: {step['need']} of them can never approve, so it "
                    f"will go to one {fallback} instead")
        words.append(line)
    return None, words, warnings


def parallel_capacity(tenant_id: int, step: dict) -> tuple[int, int]:
    """(members, members who may decide it) of a parallel policy step today: the group's
    members (or the role's holders), and those active, holding an approving role (the step's
    role, for a role's holders) with the step's limit (a limit of the item's amount is not
    known yet: any limit)."""
    from app.approvals.services import APPROVING_ROLES

    query = select(Membership).join(User, User.id == Membership.user_id).where(
        Membership.tenant_id == tenant_id)
    if step.get("group"):
        group_id = group_ids(tenant_id).get(step["group"].casefold())
        query = query.join(ApproverGroupMember,
                           ApproverGroupMember.user_id == Membership.user_id).where(
            ApproverGroupMember.group_id == group_id)
        roles = set(APPROVING_ROLES)
    else:
        query = query.join(MembershipRole, MembershipRole.membership_id == Membership.id).where(
            MembershipRole.role == step["role"])
        roles = {step["role"]}
    limit = Decimal(step["min_limit"]) if step.get("min_limit") not in (None, "amount") \
        else Decimal(0)
    members = db.session.scalars(query.limit(1000)).all()
    eligible = [m for m in members if m.user.active and m.role_set & roles
                and m.approval_limit >= limit]
    return len(members), len(eligible)


def _clean_limit(limit: str | None) -> str:
    limit = (limit or "").strip() or "0"
    if limit == "amount":
        return limit
    try:
        return str(parse_money(limit, "limit"))
    except ValidationFailed:
        raise ValueError("the limit must be a number or amount") from None


def _clean_escalation(match: re.Match, groups: set[str] | None) -> dict:
    """", escalate after N [business] hours|days to LEVEL [then LEVEL ...]": each level is
    "manager" (the manager of whoever has the step then) or group "Name"."""
    n = int(match["n"])
    unit = match["unit"].lower().rstrip("s")
    if not 1 <= n <= (90 if unit == "day" else 999):
        raise ValueError("escalate after 1 to 90 days, or 1 to 999 hours")
    after = f"{n} {'business ' if match['business'] else ''}{unit}{'s' if n != 1 else ''}"
    text, levels, at = match["levels"].strip(), [], 0
    while at < len(text):
        level = ESCALATION_LEVEL.match(text, at)
        if level is None:
            raise ValueError('escalate to manager, or to group "Name", joined by "then"')
        if level["manager"]:
            levels.append({"to": "manager"})
        else:
            name = level["group"].strip()
            if groups is not None and name.casefold() not in groups:
                raise ValueError(f"there is no approver group named “{name}” (create it under "
                                 "Approver groups first)")
            levels.append({"to": "group", "group": name})
        at = level.end()
    if not levels or len(levels) > MAX_ESCALATION_LEVELS:
        raise ValueError(f"escalate through 1 to {MAX_ESCALATION_LEVELS} levels")
    return {"escalate_after": after, "escalate_to": levels}


def _clean_step(line: str, groups: set[str] | None) -> dict:
    reject_when = None
    escalation = ESCALATION.search(line)
    if escalation:
        line = line[:escalation.start()].strip()
        escalate = _clean_escalation(escalation, groups)
        if GROUP_STEP.match(line) or ROLE_QUORUM_STEP.match(line):
            raise ValueError("only a one-person step escalates (a parallel step waits on its "
                             "members)")
        return {**_clean_step(line, groups), **escalate}
    if line.lower().endswith(REJECT_ON_QUORUM):
        line, reject_when = line[:-len(REJECT_ON_QUORUM)].strip(), "quorum"
    parallel = GROUP_STEP.match(line) or ROLE_QUORUM_STEP.match(line)
    if parallel:
        need = parallel["need"].lower()
        if need not in ("all", "any") and not 1 <= int(need) <= 50:
            raise ValueError("a parallel step needs between 1 and 50 approvals")
        step = {"role": Role.APPROVER.value, "min_limit": _clean_limit(parallel["limit"]),
                "need": str(int(need)) if need.isdigit() else need}
        if "group" in parallel.re.groupindex:
            name = parallel["group"].strip()
            if groups is not None and name.casefold() not in groups:
                raise ValueError(f"there is no approver group named “{name}” (create it under "
                                 "Approver groups first)")
            step["group"] = name
            if parallel["fallback"]:
                if parallel["fallback"] not in STEP_ROLES:
                    raise ValueError(f"the fallback role must be one of {', '.join(STEP_ROLES)}")
                step["fallback"] = parallel["fallback"]
        else:
            if parallel["role"] not in STEP_ROLES:
                raise ValueError(f"the role must be one of {', '.join(STEP_ROLES)}")
            step["role"] = parallel["role"]
        if reject_when:
            step["reject_when"] = reject_when
        return step
    if reject_when:
        raise ValueError(f"only a parallel step can end with “{REJECT_ON_QUORUM}”")
    owner = OWNER_STEP.match(line)
    if owner:
        if owner["field"] not in OWNER_FIELDS:
            raise ValueError(f"the owner field must be one of {', '.join(OWNER_FIELDS)}")
        if owner["role"] not in STEP_ROLES:
            raise ValueError(f"the fallback role must be one of {', '.join(STEP_ROLES)}")
        return {"role": owner["role"], "min_limit": _clean_limit(owner["limit"]),
                "field": owner["field"]}
    role, _, limit = (part.strip() for part in line.partition(">="))
    if role not in STEP_ROLES:
        raise ValueError(f"the role must be one of {', '.join(STEP_ROLES)}, or {STEP_SYNTAX}")
    return {"role": role, "min_limit": _clean_limit(limit)}


QUEUE_NAME = re.compile(r"^[^\W_][\w &.,()'+-]{0,47}$")
CASE_ROLES = (Role.ANALYST.value, Role.MANAGER.value)
OUTCOMES_BY_KIND = {
    Kind.APPROVAL.value: (Outcome.AUTO_APPROVE.value, Outcome.STEPS.value, Outcome.QUEUE.value),
    Kind.BILLING_EXCEPTION.value: (Outcome.QUEUE.value, Outcome.ASSIGN.value,
                                   Outcome.PRIORITIZE.value),
    Kind.SETTLEMENT_DISPUTE.value: (Outcome.QUEUE.value, Outcome.ASSIGN.value,
                                    Outcome.PRIORITIZE.value),
}


def clean_queue_name(queue: str | None) -> tuple[str | None, str | None]:
    """(the name, or an error): letters, digits, spaces and a little punctuation, at most 48
    characters; the QA sample's queue is the policy's own."""
    queue = " ".join((queue or "").split()) or None
    if queue is None:
        return None, "name the queue"
    if not QUEUE_NAME.match(queue):
        return None, ("letters, digits, spaces and - & . , ( ) ' + only, starting with a letter "
                      "or digit, at most 48 characters")
    if queue.casefold() == engine.QA_QUEUE.casefold():
        return None, f"“{engine.QA_QUEUE}” is the QA sample's own queue; choose another name"
    return queue, None


def _clean_rule(name: str, condition: str, outcome: str, steps_text: str,
                queue: str | None, kind: str = Kind.APPROVAL.value,
                set_priority: str | None = None, assign_role: str | None = None,
                groups: set[str] | None = None) -> dict:
    from app.models import Priority

    errors: dict[str, str] = {}
    kind = kind or Kind.APPROVAL.value
    if kind not in OUTCOMES_BY_KIND:
        raise ValidationFailed("Unknown kind of work.", {"kind": "unknown kind"})
    kind_words = KIND_WORDS[kind]
    name = (name or "").strip()
    if not name:
        errors["name"] = "is required"
    try:
        check_condition(condition, kind)
    except ValidationFailed as error:
        errors["condition"] = error.message
    allowed = OUTCOMES_BY_KIND[kind]
    if outcome == Outcome.AUTO_APPROVE.value and kind != Kind.APPROVAL.value:
        errors["outcome"] = (f"{kind_words.capitalize()} are never auto-approved: people "
                             "resolve them. Send them to a queue, assign them to a role or set "
                             "their priority.")
    elif outcome == Outcome.STEPS.value and kind != Kind.APPROVAL.value:
        errors["outcome"] = (f"Approval steps are for approvals; send {kind_words} to a queue "
                             "or assign them to a role.")
    elif outcome not in allowed:
        errors["outcome"] = "choose " + ", ".join(o.replace("_", "-") for o in allowed)
    steps: list[dict] = []
    if kind == Kind.APPROVAL.value:
        try:
            steps = clean_steps(steps_text, groups)
        except ValidationFailed as error:
            errors.update(error.fields)
    elif (steps_text or "").strip():
        errors["steps"] = f"approval steps are for approvals, not {kind_words}"
    if outcome == Outcome.STEPS.value and not steps and "steps" not in errors:
        errors["steps"] = "name at least one step"
    clean_queue = None
    if outcome == Outcome.QUEUE.value:
        clean_queue, problem = clean_queue_name(queue)
        if problem:
            errors["queue"] = problem
    set_priority = (set_priority or "").strip() or None
    if set_priority is not None:
        if kind == Kind.APPROVAL.value:
            errors["set_priority"] = "a rule sets the priority of exceptions and disputes only"
        elif set_priority not in {p.value for p in Priority}:
            errors["set_priority"] = "one of " + ", ".join(p.value for p in Priority)
    if outcome == Outcome.PRIORITIZE.value and set_priority is None \
            and "set_priority" not in errors:
        errors["set_priority"] = "choose the priority to set"
    assign_role = (assign_role or "").strip() or None
    if outcome == Outcome.ASSIGN.value and assign_role not in CASE_ROLES:
        errors["assign_role"] = f"one of {', '.join(CASE_ROLES)}"
    if errors:
        first = errors.get("condition") or errors.get("outcome") or "The rule is not valid."
        raise ValidationFailed(first, errors)
    return {"name": name[:120], "condition": condition.strip(), "outcome": outcome,
            "kind": kind,
            "steps": steps if outcome in (Outcome.STEPS.value, Outcome.QUEUE.value) else [],
            "queue": clean_queue,
            "set_priority": set_priority if kind != Kind.APPROVAL.value else None,
            "assign_role": assign_role if outcome == Outcome.ASSIGN.value else None}


def save_rule(actor: Actor, tenant_id: int, policy_id: int, *, rule_id: int | None,
              name: str, condition: str, outcome: str, steps_text: str = "",
              queue: str | None = None, kind: str = Kind.APPROVAL.value,
              set_priority: str | None = None, assign_role: str | None = None) -> PolicyRule:
    """Add a rule at the end of a draft, or change one. A rule decides one kind of work; an
    exception or a dispute is never auto-approved (refused here, with the reason)."""
    policy = _editable(actor, tenant_id, policy_id)
    fields = _clean_rule(name, condition, outcome, steps_text, queue, kind, set_priority,
                         assign_role, set(group_ids(tenant_id)))
    if rule_id is None:
        rule = PolicyRule(position=len(policy.rules) + 1, **fields)
        policy.rules.append(rule)
        before = None
    else:
        rule = next((r for r in policy.rules if r.id == rule_id), None)
        if rule is None:
            raise NotFound("No such rule.")
        before = _rule_dict(rule)
        for key, value in fields.items():
            setattr(rule, key, value)
    db.session.flush()
    record_event(actor, "policy.rule_saved", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version,
                       "position": rule.position, "before": before, "after": _rule_dict(rule)})
    return rule


def delete_rule(actor: Actor, tenant_id: int, policy_id: int, rule_id: int) -> None:
    policy = _editable(actor, tenant_id, policy_id)
    rule = next((r for r in policy.rules if r.id == rule_id), None)
    if rule is None:
        raise NotFound("No such rule.")
    before = _rule_dict(rule)
    policy.rules.remove(rule)
    db.session.flush()
    _renumber(policy)
    record_event(actor, "policy.rule_deleted", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version, "before": before})


def move_rule(actor: Actor, tenant_id: int, policy_id: int, rule_id: int, direction: int) -> None:
    """Move a rule one place up (-1) or down (+1) in the priority order."""
    policy = _editable(actor, tenant_id, policy_id)
    rules = list(policy.rules)
    index = next((n for n, r in enumerate(rules) if r.id == rule_id), None)
    if index is None:
        raise NotFound("No such rule.")
    other = index + (1 if direction > 0 else -1)
    if not 0 <= other < len(rules):
        return
    rules[index], rules[other] = rules[other], rules[index]
    for rule in rules:  # clear positions first: (policy_id, position) is unique
        rule.position = -rule.id
    db.session.flush()
    for n, rule in enumerate(rules, start=1):
        rule.position = n
    db.session.flush()
    db.session.expire(policy, ["rules"])
    record_event(actor, "policy.rule_moved", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version,
                       "rule": rules[other].name, "to_position": other + 1})


def _renumber(policy: PolicyVersion) -> None:
    rules = sorted(policy.rules, key=lambda r: r.position)
    for rule in rules:
        rule.position = -rule.id
    db.session.flush()
    for n, rule in enumerate(rules, start=1):
        rule.position = n
    db.session.flush()


def _rule_dict(rule: PolicyRule) -> dict:
    return {"position": rule.position, "kind": rule.kind, "name": rule.name,
            "condition": rule.condition, "outcome": rule.outcome,
            "steps": list(rule.steps or []), "queue": rule.queue,
            "set_priority": rule.set_priority, "assign_role": rule.assign_role}


SETTINGS = ("max_auto_amount", "daily_auto_count", "daily_auto_amount", "qa_sample_pct",
            "qa_role", "risk", "sla_targets", "fallback_steps", "expire_after_days", "note")


def settings_dict(policy: PolicyVersion) -> dict:
    return {name: getattr(policy, name) for name in SETTINGS}


def save_settings(actor: Actor, tenant_id: int, policy_id: int, **values) -> PolicyVersion:
    """Guard rails, risk scoring, SLA targets and fallback steps of a draft."""
    policy = _editable(actor, tenant_id, policy_id)
    errors: dict[str, str] = {}
    clean: dict = {}
    for name in ("max_auto_amount", "daily_auto_amount"):
        raw = (values.get(name) or "").strip()
        if not raw:
            clean[name] = None
            continue
        try:
            clean[name] = parse_money(raw, name)
            if clean[name] < 0:
                errors[name] = "must be zero or more"
        except ValidationFailed:
            errors[name] = "must be an amount"
    numbers = [("daily_auto_count", 0, 10**9), ("qa_sample_pct", 0, 100)]
    if "expire_after_days" in values:
        numbers.append(("expire_after_days", 1, 3650))
    for name, low, high in numbers:
        raw = str(values.get(name) if values.get(name) is not None else "").strip()
        if not raw:
            clean[name] = 0 if name == "qa_sample_pct" else None
            continue
        try:
            clean[name] = int(raw)
            if not low <= clean[name] <= high:
                errors[name] = f"between {low} and {high}"
        except ValueError:
            errors[name] = "must be a whole number"
    qa_role = values.get("qa_role") or Role.MANAGER.value
    if qa_role not in STEP_ROLES:
        errors["qa_role"] = f"one of {', '.join(STEP_ROLES)}"
    clean["qa_role"] = qa_role
    try:
        clean["fallback_steps"] = clean_steps(values.get("fallback_steps_text") or "",
                                              set(group_ids(tenant_id)))
        if not clean["fallback_steps"]:
            errors["fallback_steps"] = "name at least one step"
    except ValidationFailed as error:
        errors["fallback_steps"] = error.fields.get("steps", "not valid")
    if "risk" in values:
        try:
            clean["risk"] = clean_risk(values["risk"])
        except ValidationFailed as error:
            errors.update(error.fields)
    if "sla_targets" in values:
        try:
            clean["sla_targets"] = clean_sla_targets(values["sla_targets"])
        except ValidationFailed as error:
            errors.update(error.fields)
    if errors:
        raise ValidationFailed("Some settings are not valid.", errors)
    before = _jsonable_settings(policy)
    for key, value in clean.items():
        setattr(policy, key, value)
    db.session.flush()
    record_event(actor, "policy.settings_saved", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version, "before": before,
                       "after": _jsonable_settings(policy)})
    return policy


def _jsonable_settings(policy: PolicyVersion) -> dict:
    from app.types import jsonable

    return jsonable(settings_dict(policy))


RISK_NUMBERS = ("base", "per_10k", "per_discount_pct", "max_auto_risk")
RISK_POINTS = ("regions", "partner_types", "counterparty_risk")


def clean_risk(risk: dict) -> dict:
    """Risk scoring inputs: numbers as exact strings, points per region, partner type and
    counterparty risk."""
    out: dict = {}
    for name in RISK_NUMBERS:
        raw = str((risk or {}).get(name) if (risk or {}).get(name) is not None else "").strip()
        if not raw:
            continue
        try:
            value = Decimal(raw)
            if not value.is_finite() or abs(value) > 1000:
                raise ValueError
        except (ValueError, ArithmeticError):
            raise ValidationFailed("Some risk inputs are not valid.",
                                   {f"risk_{name}": "a number between -1000 and 1000"}) from None
        out[name] = str(value)
    for name in RISK_POINTS:
        points = (risk or {}).get(name) or {}
        if points:
            out[name] = {str(k): str(Decimal(str(v))) for k, v in points.items()}
    return out


def clean_sla_targets(targets: dict) -> dict:
    """{kind: {priority: hours}} with known kinds and priorities and positive hours, kept as
    strings (exact, and fit for the audit trail)."""
    from app.models import Priority

    out: dict[str, dict[str, str]] = {}
    bad = []
    for kind, by_priority in (targets or {}).items():
        if kind not in {k.value for k in Kind} or not isinstance(by_priority, dict):
            bad.append(str(kind))
            continue
        for priority, hours in by_priority.items():
            if hours in (None, ""):
                continue
            try:
                value = Decimal(str(hours))
            except Exception:  # noqa: BLE001 - any unparsable text is refused below
                value = None
            if priority not in {p.value for p in Priority} or value is None or not (
                    Decimal("0") < value <= Decimal("2000")):
                bad.append(f"{kind} {priority}")
                continue
            out.setdefault(kind, {})[priority] = str(value)
    if bad:
        raise ValidationFailed("Some SLA targets are not valid.",
                               {"sla_targets": "hours between 0 and 2000 for: " + ", ".join(bad)})
    return out


def submit_version(actor: Actor, tenant_id: int, policy_id: int) -> PolicyVersion:
    policy = _editable(actor, tenant_id, policy_id)
    for rule in policy.rules:
        check_condition(rule.condition, rule.kind)  # still valid under today's field list
    policy.state = PolicyState.PENDING.value
    policy.submitted_at = utcnow()
    db.session.flush()
    record_event(actor, "policy.submitted", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version})
    return policy


def withdraw_version(actor: Actor, tenant_id: int, policy_id: int) -> PolicyVersion:
    """Back to draft (its author or another admin), e.g. to change it after review."""
    policy = get_version(actor, tenant_id, policy_id)
    if policy.state != PolicyState.PENDING.value:
        raise InvalidTransition("Only a version waiting for approval can go back to draft.")
    policy.state = PolicyState.DRAFT.value
    policy.submitted_at = None
    db.session.flush()
    record_event(actor, "policy.returned_to_draft", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version})
    return policy


def activate_version(actor: Actor, tenant_id: int, policy_id: int,
                     effective_from: datetime | None = None, *,
                     code: str | None = None, passkey: dict | None = None,
                     origin: str | None = None) -> PolicyVersion:
    """A second admin activates a submitted version from `effective_from` (now if None); the
    version it supersedes is retired at that moment. The author cannot: four-eyes. An admin
    with a second factor steps up with a `code` of it, or a `passkey` answer made for the
    `origin` the request came to (FactorRefused, already audited, when it is wrong: the
    caller commits that and nothing else has changed)."""
    from app.auth.second_factor import verify_code
    from app.auth.services import has_second_factor

    policy = get_version(actor, tenant_id, policy_id)
    if policy.state != PolicyState.PENDING.value:
        raise InvalidTransition(f"Version {policy.version} is {policy.state}; submit it first.")
    if policy.author_id == actor.user_id:
        raise PermissionDenied("You wrote this version; another admin must activate it "
                               "(four-eyes).")
    if actor.type is ActorType.USER and actor.user is not None \
            and has_second_factor(actor.user):
        verify_code(actor, actor.user, code or "", purpose="step_up_policy",
                    tenant_id=tenant_id, passkey=passkey, origin=origin,
                    data={"policy_id": policy.id, "version": policy.version})
    now = utcnow()
    effective_from = effective_from or now
    if effective_from.tzinfo is None:
        raise ValidationFailed("Give the effective-from time with its timezone.",
                               {"effective_from": "needs a timezone"})
    if effective_from < now.replace(microsecond=0) and (now - effective_from).total_seconds() > 60:
        raise ValidationFailed("A version cannot take effect in the past.",
                               {"effective_from": "now or later"})
    effective_from = max(effective_from, now)
    superseded = db.session.scalars(
        select(PolicyVersion).where(
            PolicyVersion.tenant_id == tenant_id, PolicyVersion.id != policy.id,
            PolicyVersion.state == PolicyState.ACTIVE.value,
            or_(PolicyVersion.retired_at.is_(None),
                PolicyVersion.retired_at > effective_from))).all()
    for old in superseded:
        if old.effective_from >= effective_from:
            raise InvalidTransition(f"Version {old.version} takes effect later; "
                                    "choose a later effective-from time.")
        old.state = PolicyState.RETIRED.value
        old.retired_at = effective_from
    policy.state = PolicyState.ACTIVE.value
    policy.approver_id = actor.user_id
    policy.activated_at = now
    policy.effective_from = effective_from
    db.session.flush()
    record_event(actor, "policy.activated", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version,
                       "author_id": policy.author_id, "effective_from": effective_from,
                       "retires": [o.version for o in superseded]})
    return policy


def discard_draft(actor: Actor, tenant_id: int, policy_id: int) -> None:
    policy = get_version(actor, tenant_id, policy_id)
    if policy.state not in (PolicyState.DRAFT.value, PolicyState.PENDING.value):
        raise InvalidTransition("Only a draft can be discarded.")
    version = policy.version
    db.session.delete(policy)
    db.session.flush()
    record_event(actor, "policy.draft_discarded", tenant_id=tenant_id,
                 data={"policy_id": policy_id, "version": version})


def set_kill_switch(actor: Actor, tenant_id: int, engaged: bool, reason: str = "") -> PolicyKillSwitch:
    """Stop (or resume) auto-approval in a tenant at once."""
    require_policy_admin(actor, tenant_id)
    reason = (reason or "").strip()
    if engaged and not reason:
        raise ValidationFailed("Say why auto-approval stops.", {"reason": "is required"})
    switch = db.session.get(PolicyKillSwitch, tenant_id)
    if switch is None:
        switch = PolicyKillSwitch(tenant_id=tenant_id, engaged=False)
        db.session.add(switch)
    if bool(switch.engaged) == engaged:
        return switch
    switch.engaged = engaged
    switch.reason = reason or None
    switch.changed_by_id = actor.user_id
    switch.changed_at = utcnow()
    db.session.flush()
    record_event(actor, "policy.kill_switch_engaged" if engaged else "policy.kill_switch_released",
                 tenant_id=tenant_id, comment=reason or None, data={"engaged": engaged})
    return switch


def decision_receipt(item_id: int) -> PolicyDecision | None:
    return db.session.get(PolicyDecision, item_id)


def undecided_receipts(limit: int) -> list[tuple[int, int]]:
    """(tenant_id, item_id) of arrived items still waiting for their decision, oldest first;
    rows another sweeper has locked are skipped on PostgreSQL."""
    query = (select(PolicyDecision.tenant_id, PolicyDecision.item_id)
             .where(PolicyDecision.decided_at.is_(None))
             .order_by(PolicyDecision.item_id).limit(limit))
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [tuple(r) for r in db.session.execute(query).all()]



EXPIRY_BATCH = 1000


def expire_overdue(actor: Actor, now: datetime | None = None) -> int:
    """Close as expired every approval still undecided (pending, or waiting on its requester)
    past the expiry of the policy version that routed it, counted from its arrival: through
    the ledger's batch door (the requester hears the outcome from the state change), its open
    steps cancelled and its email links revoked in the same transaction. An item someone
    changed since it was read is left to the next sweep. Never commits; returns how many."""
    from datetime import timedelta

    from app.approvals.models import ApprovalLinkToken, RevokeReason

    now = now or utcnow()
    expired = 0
    versions = db.session.execute(
        select(PolicyVersion.tenant_id, PolicyVersion.version, PolicyVersion.expire_after_days)
        .where(PolicyVersion.expire_after_days.is_not(None))).all()
    for tenant_id, version, days in versions:
        rows = db.session.execute(
            select(*ledger.before_columns())
            .where(WorkItem.tenant_id == tenant_id, WorkItem.kind == Kind.APPROVAL.value,
                   WorkItem.policy_version == version,
                   WorkItem.state.in_((ApprovalState.PENDING.value,
                                       ApprovalState.INFO_REQUESTED.value)),
                   WorkItem.created_at < now - timedelta(days=days))
            .order_by(WorkItem.id).limit(EXPIRY_BATCH)).all()
        if not rows:
            continue
        changes = [ledger.Change(row, {"state": ApprovalState.EXPIRED.value,
                                       "last_actor_id": None, "last_action_at": now},
                                 action="item.expire",
                                 data={"policy_version": version, "expire_after_days": days})
                   for row in rows]
        done = [c.item_id for c in ledger.apply_changes(actor, tenant_id, changes, now=now,
                                                        lost="skip")]
        if not done:
            continue
        db.session.execute(
            update(ApprovalStep.__table__)
            .where(ApprovalStep.item_id.in_(done),
                   ApprovalStep.state.in_((StepState.OPEN.value, StepState.WAITING.value)))
            .values(state=StepState.CANCELLED.value))
        db.session.execute(
            update(ApprovalLinkToken.__table__)
            .where(ApprovalLinkToken.item_id.in_(done), ApprovalLinkToken.used_at.is_(None),
                   ApprovalLinkToken.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=RevokeReason.CLOSED.value))
        expired += len(done)
    return expired
