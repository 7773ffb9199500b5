"""The policy at work: which version is in force for an arriving item, evaluating arrived items
(auto-approve, create their approval chain, or route them to a queue) within the budget and the
kill switch, and expiring approvals left undecided. Every function takes its actor, writes its
audit events and outbox messages in the caller's transaction, and never commits."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update

from app.actors import Actor, ActorType
from app.audit.services import dialect_insert
from app.bulk import insert_rows, update_rows
from app.errors import PermissionDenied
from app.extensions import db
from app.models import (
    ApprovalAssignment,
    ApprovalStep,
    ApproverGroup,
    Kind,
    Membership,
    MembershipRole,
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
    PolicyVersion,
)
from app.types import plain_json, utcnow
from app.work import ledger
from app.work.assignment import least_loaded, loads
from app.work.assignment_notices import note_assignment
from app.work.sla_clock import sla_due_at, sla_state_at
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


def _add_to_budget(tenant: Tenant, now: datetime, count: int, amount: Decimal) -> None:
    """Add a batch's auto-approvals to the tenant's tally for its local day, in one statement
    (a policy without a daily cap reads nothing first)."""
    day = now.astimezone(ZoneInfo(tenant.timezone)).date()
    budgets = PolicyBudgetDay.__table__
    stmt = dialect_insert()(budgets).values(tenant_id=tenant.id, day=day, count=count,
                                            amount=amount)
    db.session.execute(stmt.on_conflict_do_update(
        index_elements=[budgets.c.tenant_id, budgets.c.day],
        set_={"count": budgets.c["count"] + stmt.excluded["count"],
              "amount": budgets.c.amount + stmt.excluded.amount}))


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
        # Imported here: the approvals package imports the policy's (its mails' item summary).
        from app.approvals.services import standing_delegate

        self.members = db.session.scalars(
            select(Membership).where(Membership.tenant_id == tenant_id)
            .order_by(Membership.user_id)).all()
        self.by_user = {m.user_id: m for m in self.members}
        self.load = loads(self.by_user)
        self.standing_delegate = standing_delegate
        self.today = utcnow().date()
        # What eligibility reads of each member, once per batch rather than once per item.
        self.roles = {m.user_id: (m.role_set if m.user.active else frozenset())
                      for m in self.members}

    def _eligible(self, m: Membership | None, role: str, limit: Decimal, excluded) -> bool:
        return (m is not None and role in self.roles[m.user_id] and m.user_id not in excluded
                and m.approval_limit >= limit)

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
    budget_row = budget = None
    if pending:
        rejections = rejections_by_counterparty(tenant.id, [i.counterparty for i in pending], now)
        kill = kill_switch_engaged(tenant.id)
        if compiled is not None and any(r.outcome == Outcome.AUTO_APPROVE.value
                                        for r in compiled.rules):
            if compiled.daily_auto_count is None and compiled.daily_auto_amount is None:
                # No daily cap to check: nothing to read first, the day's tally is added to
                # once the batch is written (at the end), so the row is locked for the commit
                # only and two sweepers of one tenant decide side by side.
                budget = engine.Budget.of(compiled, 0, Decimal("0.00"))
            else:
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
    if budget_row is None and budget is not None and budget.used_count:
        # Last, so the row is locked from here to the commit only.
        _add_to_budget(tenant, now, budget.used_count, budget.used_amount)
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
        # Imported here: the approvals package imports the policy's (its mails' item summary).
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
    # Imported here: the approvals package imports the policy's (its mails' item summary).
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


def _plain(inputs: dict) -> dict:
    return plain_json(inputs)  # walked once, for the receipt and the audit event alike


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

    # Imported here: the approvals package imports the policy's (its mails' item summary).
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
