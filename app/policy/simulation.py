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
from app.policy.models import PolicyDecision, PolicyVersion
from app.policy.services import (
    _kill_switch_engaged,
    get_version,
    rejections_by_counterparty,
    require_policy_admin,
)
from app.types import utcnow

MAX_DAYS = 365
MAX_ITEMS = 50000
SHOWN = 50


@dataclass
class Simulation:
    days: int
    items: int = 0
    auto_count: int = 0
    auto_amount: Decimal = Decimal("0.00")
    actual_auto_count: int = 0
    actual_auto_amount: Decimal = Decimal("0.00")
    changed_count: int = 0
    changed_amount: Decimal = Decimal("0.00")
    rejected_would_auto: list = field(default_factory=list)
    rejected_would_auto_count: int = 0
    changed_examples: list = field(default_factory=list)
    verdicts: dict = field(default_factory=dict)  # item id -> engine.Verdict
    truncated: bool = False
    kill_switch: bool = False


def _chain(steps) -> list[tuple[str, str]]:
    return [(s["role"], str(s["min_limit"])) if isinstance(s, dict) else (s[0], str(s[1]))
            for s in steps or []]


def simulate(actor: Actor, tenant_id: int, policy_id: int, days: int) -> Simulation:
    """What `policy` would have done with the tenant's approvals of the last `days` days,
    against what happened to them: auto-approved (count and money), routed differently, and
    the items people rejected that it would have auto-approved. Each local day starts with a
    fresh budget; the kill switch is left out (it is an operational stop, not policy)."""
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
               PolicyDecision.steps)
        .outerjoin(PolicyDecision, PolicyDecision.item_id == WorkItem.id)
        .where(WorkItem.tenant_id == tenant_id, WorkItem.kind == Kind.APPROVAL.value,
               WorkItem.created_at >= now - timedelta(days=days))
        .order_by(WorkItem.id).limit(MAX_ITEMS + 1)).all()
    result = Simulation(days=days, kill_switch=_kill_switch_engaged(tenant_id),
                        truncated=len(rows) > MAX_ITEMS)
    rows = rows[:MAX_ITEMS]
    rejections = rejections_by_counterparty(tenant_id, [r.counterparty for r in rows], now)
    zone = ZoneInfo(policy.tenant.timezone)
    budgets: dict = {}
    for row in rows:
        day = row.created_at.astimezone(zone).date()
        budget = budgets.setdefault(day, engine.Budget.of(compiled, 0, Decimal("0.00")))
        inputs = engine.item_inputs(row, rejections.get(row.counterparty, 0))
        verdict = engine.decide(compiled, row.id, inputs, kill_switch=False, budget=budget)
        result.verdicts[row.id] = verdict
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
            if len(result.changed_examples) < SHOWN:
                result.changed_examples.append((row, verdict))
        if would_auto and row.state == "rejected":
            result.rejected_would_auto_count += 1
            if len(result.rejected_would_auto) < SHOWN:
                result.rejected_would_auto.append((row, verdict))
    return result


def qa_queue(actor: Actor, tenant_id: int, limit: int = 50) -> list:
    """Open items the QA sample sent to people, oldest first (the QA queue)."""
    from app.work.services import open_items, scoped_items

    require_policy_admin(actor, tenant_id)
    return db.session.execute(
        scoped_items(actor).with_only_columns(
            WorkItem.id, WorkItem.title, WorkItem.amount, WorkItem.currency,
            WorkItem.created_at, PolicyDecision.rule_name)
        .join(PolicyDecision, PolicyDecision.item_id == WorkItem.id)
        .where(WorkItem.tenant_id == tenant_id, PolicyDecision.outcome == engine.QA_SAMPLE,
               open_items())
        .order_by(WorkItem.created_at).limit(limit)).all()


def outcome_text(rule) -> str:
    if rule.outcome == "auto_approve":
        return "auto-approve"
    if rule.outcome == "queue":
        return f"queue {rule.queue}"
    return "steps " + ", then ".join(f"{s['role']} ≥ {s['min_limit']}" for s in rule.steps or [])


def version_lines(policy: PolicyVersion | None) -> list[str]:
    """A version as lines of text, for the diff."""
    if policy is None:
        return []
    lines = [f"rule {r.position} “{r.name}”: when {r.condition} → {outcome_text(r)}"
             for r in policy.rules]
    lines += [
        f"maximum auto-approved amount: {policy.max_auto_amount or 'none'}",
        f"daily budget: {policy.daily_auto_count if policy.daily_auto_count is not None else 'any'}"
        f" items, {policy.daily_auto_amount or 'any amount'}",
        f"QA sample: {policy.qa_sample_pct}% to {policy.qa_role}",
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
