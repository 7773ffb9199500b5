"""Read-only views of policy versions: a draft simulated over the tenant's recent items (with
the same deciding code the worker uses), and the differences between two versions."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select

from app.actors import Actor
from app.errors import ValidationFailed
from app.extensions import db
from app.models import Kind, WorkItem
from app.policy import engine
from app.policy.evaluation import kill_switch_engaged, rejections_by_counterparty, step_dict
from app.policy.forms import step_line
from app.policy.models import PolicyDecision, PolicyVersion
from app.policy.rules import KIND_WORDS
from app.policy.versions import get_version, require_policy_admin
from app.types import utcnow
from app.work.queries import open_items, scoped_items

MAX_DAYS = 365
MAX_ITEMS = 50000
SHOWN = 50
EDITS, SAMPLING, HOLDS, SINCE = "edits", "sampling", "holds", "since"
CAUSES = {
    EDITS: "Changed by your edits",
    SAMPLING: "QA sample drawn differently",
    HOLDS: "Held back by the daily budget or the kill switch",
    SINCE: "Same rules, read today",
}
_HOLDS = (engine.HOLD_BUDGET_COUNT, engine.HOLD_BUDGET_AMOUNT, engine.HOLD_KILL_SWITCH)


def _intent(verdict) -> tuple:
    """What the rules and limits decide, before the QA sample, the daily budget and the kill
    switch have their say: those would differ from the past with no edit at all."""
    if verdict.outcome in (engine.AUTO_APPROVED, engine.QA_SAMPLE) or verdict.held_by in _HOLDS:
        return ("auto",)
    return (verdict.outcome, verdict.held_by, _chain(verdict.steps), verdict.queue)


def change_cause(verdict, base_verdict, outcome: str | None, held_by: str | None) -> str:
    """Why an item's replay differs from what happened to it: the edits, where the version
    and the one it is based on, replayed alike, decide differently; else a QA sample (either
    side); else a hold of the budget or kill switch (either side); else the same rules read
    today's facts (a counterparty's rejections since, the risk they give)."""
    if base_verdict is None or _intent(verdict) != _intent(base_verdict):
        return EDITS
    if verdict.outcome == engine.QA_SAMPLE or outcome == engine.QA_SAMPLE:
        return SAMPLING
    if verdict.held_by in _HOLDS or held_by in _HOLDS:
        return HOLDS
    return SINCE


@dataclass
class Simulation:
    cause_labels = CAUSES
    days: int
    items: int = 0
    auto_count: int = 0
    auto_amount: Decimal = Decimal("0.00")
    actual_auto_count: int = 0
    actual_auto_amount: Decimal = Decimal("0.00")
    changed_count: int = 0
    changed_amount: Decimal = Decimal("0.00")
    # The changes split by why they differ (CAUSES): the edits are what the admin decides on;
    # a QA sample drawn afresh or a daily budget (or the kill switch) holding an item back
    # would differ from the past even with no edit at all.
    causes: dict = field(default_factory=lambda: {c: [0, Decimal("0.00")] for c in CAUSES})
    rejected_would_auto: list = field(default_factory=list)
    rejected_would_auto_count: int = 0
    changed_examples: list = field(default_factory=list)
    verdicts: dict = field(default_factory=dict)  # item id -> engine.Verdict
    truncated: bool = False
    kill_switch: bool = False
    # Auto-approvals the kill switch holds back (it is on now, so activation would hold them).
    killed_count: int = 0
    killed_amount: Decimal = Decimal("0.00")
    # Exceptions and disputes the version's rules for them would route: outcome -> count, and
    # named queue -> count (of every kind).
    cases: int = 0
    case_outcomes: dict = field(default_factory=dict)
    queues: dict = field(default_factory=dict)


def _chain(steps) -> list[tuple]:
    """Steps as comparable tuples: role, limit and how the step is routed (group, quorum,
    owner field), from a receipt's dicts or the engine's steps alike."""
    out = []
    for s in steps or []:
        routing = ({k: v for k, v in s.items() if k in engine.ROUTING_KEYS}
                   if isinstance(s, dict) else getattr(s, "routing", {}))
        role, limit = (s["role"], s["min_limit"]) if isinstance(s, dict) else (s[0], s[1])
        out.append((role, str(limit), *sorted(routing.items())))
    return out


def simulate(actor: Actor, tenant_id: int, policy_id: int, days: int) -> Simulation:
    """What `policy` would have done with the tenant's approvals of the last `days` days,
    against what happened to them: auto-approved (count and money), routed differently, and
    the items people rejected that it would have auto-approved; and the exceptions and
    disputes its rules for them would route. Each local day starts with a fresh budget. The
    kill switch is replayed as it stands now: while it is on, activation would auto-approve
    nothing, and neither does the simulation (it counts what the switch holds back)."""
    policy = get_version(actor, tenant_id, policy_id)
    if not 1 <= days <= MAX_DAYS:
        raise ValidationFailed(f"Simulate between 1 and {MAX_DAYS} days.",
                               {"days": f"1 to {MAX_DAYS}"})
    compiled = engine.compile_policy(policy)
    now = utcnow()
    rows = db.session.execute(
        select(WorkItem.id, WorkItem.title, WorkItem.state, WorkItem.amount, WorkItem.currency,
               WorkItem.subtype, WorkItem.region, WorkItem.product_line,
               WorkItem.partner_type, WorkItem.priority, WorkItem.source_system,
               WorkItem.counterparty, WorkItem.details, WorkItem.created_at,
               PolicyDecision.item_id.label("receipt_id"), PolicyDecision.outcome,
               PolicyDecision.steps, PolicyDecision.held_by)
        .outerjoin(PolicyDecision, PolicyDecision.item_id == WorkItem.id)
        .where(WorkItem.tenant_id == tenant_id, WorkItem.kind == Kind.APPROVAL.value,
               WorkItem.created_at >= now - timedelta(days=days))
        .order_by(WorkItem.id).limit(MAX_ITEMS + 1)).all()
    kill = kill_switch_engaged(tenant_id)
    result = Simulation(days=days, kill_switch=kill, truncated=len(rows) > MAX_ITEMS)
    rows = rows[:MAX_ITEMS]
    rejections = rejections_by_counterparty(tenant_id, [r.counterparty for r in rows], now)
    zone = ZoneInfo(policy.tenant.timezone)
    # The version the edits start from (else the one in force), replayed alike: where the two
    # decide differently, the edits made the difference.
    base = (db.session.get(PolicyVersion, policy.based_on_id) if policy.based_on_id
            else PolicyVersion.in_force(tenant_id))
    base_compiled = engine.compile_policy(base) if base is not None else None
    budgets: dict = {}
    base_budgets: dict = {}
    for row in rows:
        day = row.created_at.astimezone(zone).date()
        budget = budgets.setdefault(day, engine.Budget.of(compiled, 0, Decimal("0.00")))
        inputs = engine.item_inputs(row, rejections.get(row.counterparty, 0))
        verdict = engine.decide(compiled, row.id, inputs, kill_switch=kill, budget=budget)
        base_verdict = None
        if base_compiled is not None:
            base_verdict = engine.decide(
                base_compiled, row.id, inputs, kill_switch=kill,
                budget=base_budgets.setdefault(day, engine.Budget.of(base_compiled, 0,
                                                                     Decimal("0.00"))))
        result.verdicts[row.id] = verdict
        if verdict.held_by == engine.HOLD_KILL_SWITCH:
            result.killed_count += 1
            result.killed_amount += row.amount
        if verdict.queue:
            result.queues[verdict.queue] = result.queues.get(verdict.queue, 0) + 1
        result.items += 1
        would_auto = verdict.outcome == engine.AUTO_APPROVED
        was_auto = row.outcome == engine.AUTO_APPROVED
        if would_auto:
            result.auto_count += 1
            result.auto_amount += row.amount
        if was_auto:
            result.actual_auto_count += 1
            result.actual_auto_amount += row.amount
        changed = would_auto != was_auto or (
            not would_auto and row.outcome is not None
            and _chain(verdict.steps) != _chain(row.steps))
        if changed:
            result.changed_count += 1
            result.changed_amount += row.amount
            cause = change_cause(verdict, base_verdict, row.outcome, row.held_by)
            result.causes[cause][0] += 1
            result.causes[cause][1] += row.amount
            if result.causes[cause][0] <= SHOWN:
                result.changed_examples.append((row, verdict, cause))
        if would_auto and row.state == "rejected":
            result.rejected_would_auto_count += 1
            if len(result.rejected_would_auto) < SHOWN:
                result.rejected_would_auto.append((row, verdict))
    _simulate_cases(result, compiled, tenant_id, now - timedelta(days=days))
    order = list(CAUSES)
    result.changed_examples.sort(key=lambda example: order.index(example[2]))
    return result


def _simulate_cases(result: Simulation, compiled: engine.CompiledPolicy, tenant_id: int,
                    since) -> None:
    """Billing exceptions and settlement disputes of the period, under the version's rules for
    their kind (only the kinds it has rules for: without any, activation leaves them be)."""
    kinds = [k for k in (Kind.BILLING_EXCEPTION.value, Kind.SETTLEMENT_DISPUTE.value)
             if compiled.rules_for(k)]
    if not kinds:
        return
    rows = db.session.execute(
        select(WorkItem.id, WorkItem.kind, WorkItem.amount, WorkItem.currency,
               WorkItem.subtype, WorkItem.region, WorkItem.product_line, WorkItem.partner_type,
               WorkItem.priority, WorkItem.source_system, WorkItem.counterparty,
               WorkItem.amount_at_risk, WorkItem.claimed_amount, WorkItem.calculated_amount)
        .where(WorkItem.tenant_id == tenant_id, WorkItem.kind.in_(kinds),
               WorkItem.created_at >= since)
        .order_by(WorkItem.id).limit(MAX_ITEMS)).all()
    for row in rows:
        verdict = engine.decide_case(compiled, row.kind, engine.case_inputs(row))
        result.verdicts[row.id] = verdict
        result.cases += 1
        result.case_outcomes[verdict.outcome] = result.case_outcomes.get(verdict.outcome, 0) + 1
        if verdict.queue:
            result.queues[verdict.queue] = result.queues.get(verdict.queue, 0) + 1


def qa_queue(actor: Actor, tenant_id: int, limit: int = 50) -> list:
    """Open items of the QA sample's team queue, oldest first (the admin's glance at it; the
    QA role works it in the queue pages)."""
    require_policy_admin(actor, tenant_id)
    return db.session.execute(
        scoped_items(actor).with_only_columns(
            WorkItem.id, WorkItem.title, WorkItem.amount, WorkItem.currency,
            WorkItem.created_at, PolicyDecision.rule_name)
        .outerjoin(PolicyDecision, PolicyDecision.item_id == WorkItem.id)
        .where(WorkItem.tenant_id == tenant_id, WorkItem.team_queue == engine.QA_QUEUE,
               open_items())
        .order_by(WorkItem.created_at).limit(limit)).all()


def _steps_words(steps) -> str:
    return ", then ".join(step_line(s).replace(">=", "≥") for s in steps or [])


def routing_words(steps, currency: str | None = None) -> str:
    """A chain the engine chose, in the words the item page and the receipt use."""
    # Imported here: the approvals package imports the policy's (its mails' item summary).
    from app.approvals.wording import steps_words

    return steps_words([step_dict(s) for s in steps], currency)


def outcome_text(rule) -> str:
    priority = f", priority {rule.set_priority}" if getattr(rule, "set_priority", None) else ""
    if rule.outcome == "auto_approve":
        return "auto-approve"
    if rule.outcome == "queue":
        steps = f" with steps {_steps_words(rule.steps)}" if rule.steps else ""
        return f"queue “{rule.queue}”{steps}{priority}"
    if rule.outcome == "assign":
        return f"assign to the least-loaded {rule.assign_role}{priority}"
    if rule.outcome == "prioritize":
        return f"priority {rule.set_priority}"
    return "steps " + _steps_words(rule.steps)


def version_lines(policy: PolicyVersion | None) -> list[str]:
    """A version as lines of text, for the diff."""
    if policy is None:
        return []
    lines = [f"rule {r.position} “{r.name}”"
             + (f" ({KIND_WORDS[r.kind]})" if r.kind and r.kind != "approval" else "")
             + f": when {r.condition} → {outcome_text(r)}"
             for r in policy.rules]
    lines += [
        f"maximum auto-approved amount: {policy.max_auto_amount or 'none'}",
        f"daily budget: {policy.daily_auto_count if policy.daily_auto_count is not None else 'any'}"
        f" items, {policy.daily_auto_amount or 'any amount'}",
        f"QA sample: {policy.qa_sample_pct}% to the “{engine.QA_QUEUE}” queue "
        f"({policy.qa_role})",
        "expire undecided approvals after: "
        + (f"{policy.expire_after_days} days" if policy.expire_after_days else "never"),
        "fallback steps: " + ", then ".join(f"{s['role']} ≥ {s['min_limit']}"
                                            for s in policy.fallback_steps or []),
    ]
    risk = policy.risk or {}
    for key in sorted(risk):
        value = risk[key]
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in sorted(value.items())) or "none"
        lines.append(f"risk {key}: {value}")
    for kind in sorted(policy.sla_targets or {}):
        for priority, hours in sorted((policy.sla_targets[kind] or {}).items()):
            lines.append(f"SLA {kind} {priority}: {hours} business hours")
    return lines


def version_diff(base: PolicyVersion | None, draft: PolicyVersion) -> list[tuple[str, str]]:
    """(sign, line) pairs: '-' only in the base, '+' only in the draft, ' ' in both."""
    out = []
    for line in difflib.ndiff(version_lines(base), version_lines(draft)):
        sign, text = line[:1], line[2:]
        if sign in "-+ ":
            out.append((sign, text))
    return out
