"""Deciding one item under one policy version: inputs, risk score, the first matching rule and
the guard rails. Pure (no database), so the worker and the simulation decide alike."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from app.policy.models import Outcome, PolicyVersion
from app.policy.rules import Compiled, check_condition
from app.work import kinds
from app.work.money import magnitude

HOLD_KILL_SWITCH = "kill_switch"
HOLD_MAX_AMOUNT = "max_auto_amount"
HOLD_RISK = "max_auto_risk"
HOLD_BUDGET_COUNT = "daily_auto_count"
HOLD_BUDGET_AMOUNT = "daily_auto_amount"

HOLD_LABELS = {
    HOLD_KILL_SWITCH: "the kill switch is on",
    HOLD_MAX_AMOUNT: "above the maximum auto-approved amount",
    HOLD_RISK: "risk score above the auto-approval maximum",
    HOLD_BUDGET_COUNT: "the daily auto-approval count is used up",
    HOLD_BUDGET_AMOUNT: "the daily auto-approval amount is used up",
}

# What a decision did to the item, as the receipt and the simulation name it.
AUTO_APPROVED, ROUTED, QUEUED, QA_SAMPLE, HELD, SKIPPED = (
    "auto_approved", "routed", "queued", "qa_sample", "held", "skipped")
# Exceptions and disputes: assigned to a role, only re-prioritised, or no rule matched.
ASSIGNED, PRIORITIZED, UNROUTED = "assigned", "prioritized", "unrouted"

# The team queue the QA sample lands in: a named queue of its own, worked by the QA role.
QA_QUEUE = "QA sample"


@dataclass(frozen=True)
class CompiledRule:
    position: int
    name: str
    condition: Compiled
    outcome: str
    steps: tuple
    queue: str | None
    kind: str = "approval"
    set_priority: str | None = None
    assign_role: str | None = None


@dataclass(frozen=True)
class CompiledPolicy:
    id: int | None
    version: int | None
    rules: tuple[CompiledRule, ...]
    risk: dict
    max_auto_amount: Decimal | None
    daily_auto_count: int | None
    daily_auto_amount: Decimal | None
    qa_sample_pct: int
    qa_role: str
    fallback_steps: tuple
    # The rules of exceptions and disputes, by kind, in priority order (`rules`: approvals).
    case_rules: dict = field(default_factory=dict)

    def rules_for(self, kind: str) -> tuple:
        return self.rules if kind == "approval" else self.case_rules.get(kind, ())


# Frozen versions never change; the key carries when it was frozen as well as the id, so a
# database that reuses ids (a restored backup, a test run) never meets a stale entry.
_CACHE: dict[tuple, CompiledPolicy] = {}


def compile_policy(policy: PolicyVersion) -> CompiledPolicy:
    """Compile a version's conditions; frozen versions are cached by id (they never change)."""
    key = (policy.id, policy.tenant_id, policy.version, policy.submitted_at)
    if policy.frozen and key in _CACHE:
        return _CACHE[key]
    rules = [CompiledRule(r.position, r.name, Compiled(check_condition(r.condition,
                                                                        r.kind or "approval")),
                          r.outcome, tuple(_freeze(s) for s in (r.steps or [])), r.queue,
                          r.kind or "approval", r.set_priority, r.assign_role)
             for r in policy.rules]
    case_rules: dict[str, tuple] = {}
    for rule in rules:
        if rule.kind != "approval":
            case_rules[rule.kind] = (*case_rules.get(rule.kind, ()), rule)
    compiled = CompiledPolicy(
        id=policy.id, version=policy.version,
        rules=tuple(r for r in rules if r.kind == "approval"),
        case_rules=case_rules,
        risk=dict(policy.risk or {}),
        max_auto_amount=policy.max_auto_amount,
        daily_auto_count=policy.daily_auto_count,
        daily_auto_amount=policy.daily_auto_amount,
        qa_sample_pct=policy.qa_sample_pct or 0,
        qa_role=policy.qa_role or "manager",
        fallback_steps=tuple(_freeze(s) for s in (policy.fallback_steps or [])),
    )
    if policy.frozen and policy.id is not None:
        _CACHE[key] = compiled
    return compiled


ROUTING_KEYS = ("group", "need", "field", "reject_when", "escalate_after", "escalate_to",
                "fallback")


class Step(tuple):
    """A step of a chain: (role, minimum limit), and how it is routed beyond its role in
    `routing` (a named group, how many must approve, the item field that names its approver,
    when a rejection rejects). Plain steps have none, and compare as the (role, limit) pairs
    they always were."""

    def __new__(cls, role: str, min_limit, routing: dict | None = None):
        step = super().__new__(cls, (role, min_limit))
        step.routing = {k: v for k, v in (routing or {}).items() if k in ROUTING_KEYS and v}
        return step

    @property
    def role(self) -> str:
        return self[0]

    @property
    def min_limit(self):
        return self[1]

    def as_dict(self) -> dict:
        return {"role": self[0], "min_limit": str(self[1]), **self.routing}


def _freeze(step: dict) -> Step:
    return Step(step["role"], str(step.get("min_limit", "0")), step)


def counterparty_risk(rejections: int) -> str:
    return "high" if rejections >= 3 else "medium" if rejections >= 1 else "low"


def item_inputs(row, rejections: int = 0) -> dict:
    """The typed fields a condition sees, from an item row (ORM object or Core row)."""
    details = row.details or {}

    def number(name):
        value = details.get(name)
        if value is None:
            return None
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None

    return {
        # An approval's amount is money going out, positive by the write path's rules; its
        # magnitude here too, so no condition can be passed by a sign.
        "amount": magnitude(Decimal(row.amount)), "currency": row.currency,
        "subtype": row.subtype, "region": row.region, "product_line": row.product_line,
        "partner_type": row.partner_type, "priority": row.priority,
        "source_system": row.source_system, "counterparty": row.counterparty,
        "counterparty_risk": counterparty_risk(rejections),
        "discount_pct": number("discount_pct"),
        "payment_terms_days": number("payment_terms_days"),
        "contract_term_months": number("contract_term_months"),
    }


def case_inputs(row) -> dict:
    """The typed fields a rule for a billing exception or a settlement dispute sees."""
    inputs = {
        "amount": magnitude(Decimal(row.amount)), "currency": row.currency,
        "subtype": row.subtype,
        "region": row.region, "product_line": row.product_line,
        "partner_type": row.partner_type, "priority": row.priority,
        "source_system": row.source_system, "counterparty": row.counterparty,
    }
    if row.kind == "billing_exception":
        inputs["amount_at_risk"] = (Decimal(row.amount_at_risk)
                                    if row.amount_at_risk is not None else None)
    else:
        claimed = Decimal(row.claimed_amount) if row.claimed_amount is not None else None
        calculated = (Decimal(row.calculated_amount) if row.calculated_amount is not None
                      else None)
        delta = claimed - calculated if claimed is not None and calculated is not None else None
        delta_pct = ((delta * 100 / calculated).quantize(Decimal("0.01"))
                     if delta is not None and calculated else None)
        inputs.update(claimed_amount=claimed, calculated_amount=calculated, delta=delta,
                      delta_pct=delta_pct,
                      delta_magnitude=None if delta is None else magnitude(delta),
                      delta_pct_magnitude=None if delta_pct is None else magnitude(delta_pct))
    return inputs


def _dec(value, default="0") -> Decimal:
    try:
        return Decimal(str(value if value is not None else default))
    except InvalidOperation:
        return Decimal(default)


def risk_score(risk: dict, inputs: dict) -> int:
    """0-100: a base, plus points per 10,000 of amount and per discount percent, plus points
    for the region, partner type and counterparty risk the policy names."""
    score = _dec(risk.get("base"))
    score += _dec(risk.get("per_10k")) * magnitude(inputs["amount"]) / Decimal(10000)
    if inputs.get("discount_pct") is not None:
        score += _dec(risk.get("per_discount_pct")) * inputs["discount_pct"]
    score += _dec((risk.get("regions") or {}).get(inputs.get("region") or ""))
    score += _dec((risk.get("partner_types") or {}).get(inputs.get("partner_type") or ""))
    score += _dec((risk.get("counterparty_risk") or {}).get(inputs.get("counterparty_risk") or ""))
    return int(max(Decimal(0), min(Decimal(100), score)).to_integral_value())


def qa_sampled(policy: CompiledPolicy, item_id: int) -> bool:
    """Deterministic per version and item, so a simulation samples what activation will."""
    if policy.qa_sample_pct <= 0:
        return False
    digest = hashlib.sha256(f"{policy.id}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10000 < policy.qa_sample_pct * 100


@dataclass
class Budget:
    """What is left of a day's auto-approval budget while a batch is decided."""

    count_left: int | None
    amount_left: Decimal | None
    used_count: int = 0
    used_amount: Decimal = Decimal("0.00")

    @classmethod
    def of(cls, policy: CompiledPolicy, count: int, amount: Decimal) -> Budget:
        return cls(None if policy.daily_auto_count is None else policy.daily_auto_count - count,
                   None if policy.daily_auto_amount is None
                   else policy.daily_auto_amount - amount)

    def hold(self, amount: Decimal) -> str | None:
        if self.count_left is not None and self.count_left < 1:
            return HOLD_BUDGET_COUNT
        if self.amount_left is not None and self.amount_left < amount:
            return HOLD_BUDGET_AMOUNT
        return None

    def spend(self, amount: Decimal) -> None:
        if self.count_left is not None:
            self.count_left -= 1
        if self.amount_left is not None:
            self.amount_left -= amount
        self.used_count += 1
        self.used_amount += amount


@dataclass
class Verdict:
    # Approvals: AUTO_APPROVED, ROUTED, QUEUED, QA_SAMPLE or HELD; exceptions and disputes:
    # QUEUED, ASSIGNED, PRIORITIZED or UNROUTED.
    outcome: str
    rule: CompiledRule | None
    risk_score: int
    inputs: dict
    steps: list[tuple[str, Decimal]] = field(default_factory=list)
    held_by: str | None = None
    queue: str | None = None
    priority: str | None = None  # the priority a rule sets (exceptions and disputes)
    assign_role: str | None = None


def concrete_steps(steps: tuple, amount: Decimal) -> list[tuple[str, Decimal]]:
    """A rule's steps for an item: "amount" is the item's magnitude (a limit is never below
    zero, whatever sign a careless source sent)."""
    return [Step(step[0], magnitude(amount) if step[1] == "amount" else _dec(step[1]),
                 getattr(step, "routing", None))
            for step in steps]


default_chain = kinds.default_chain


def decide(policy: CompiledPolicy, item_id: int, inputs: dict, *, kill_switch: bool,
           budget: Budget | None) -> Verdict:
    """The first matching rule decides; an auto-approval must also pass the guard rails
    (kill switch, maximum amount, maximum risk), escape the QA sample and fit the budget,
    or it goes to people through the fallback chain."""
    inputs = dict(inputs)
    risk = risk_score(policy.risk, inputs)
    inputs["risk_score"] = Decimal(risk)
    # Guard rails, budgets and limits weigh the magnitude: a sign never needs less approval.
    amount = magnitude(inputs["amount"])
    fallback = (concrete_steps(policy.fallback_steps, amount) if policy.fallback_steps
                else default_chain(amount))
    matched = next((r for r in policy.rules if r.condition.matches(inputs)), None)
    if matched is None:
        return Verdict(ROUTED, None, risk, inputs, fallback)
    if matched.outcome == Outcome.STEPS.value:
        return Verdict(ROUTED, matched, risk, inputs,
                       concrete_steps(matched.steps, amount) or fallback)
    if matched.outcome == Outcome.QUEUE.value:
        # In the named queue, with the rule's steps if it gives them.
        return Verdict(QUEUED, matched, risk, inputs,
                       concrete_steps(matched.steps, amount) or fallback, queue=matched.queue)
    held = None
    max_risk = policy.risk.get("max_auto_risk")
    if kill_switch:
        held = HOLD_KILL_SWITCH
    elif policy.max_auto_amount is not None and amount > policy.max_auto_amount:
        held = HOLD_MAX_AMOUNT
    elif max_risk not in (None, "") and risk > int(max_risk):
        held = HOLD_RISK
    if held:
        return Verdict(HELD, matched, risk, inputs, fallback, held_by=held)
    if qa_sampled(policy, item_id):
        return Verdict(QA_SAMPLE, matched, risk, inputs, [(policy.qa_role, amount)],
                       queue=QA_QUEUE)
    if budget is not None:
        held = budget.hold(amount)
        if held:
            return Verdict(HELD, matched, risk, inputs, fallback, held_by=held)
        budget.spend(amount)
    return Verdict(AUTO_APPROVED, matched, risk, inputs)


def decide_case(policy: CompiledPolicy, kind: str, inputs: dict) -> Verdict:
    """A billing exception or settlement dispute: the first matching rule of its kind sends it
    to a named queue, assigns it to a role, or only sets its priority (any of them may set the
    priority). Never approved or resolved by the policy: people resolve exceptions."""
    inputs = dict(inputs)
    risk = risk_score(policy.risk, inputs)
    inputs["risk_score"] = Decimal(risk)
    matched = next((r for r in policy.rules_for(kind) if r.condition.matches(inputs)), None)
    if matched is None:
        return Verdict(UNROUTED, None, risk, inputs)
    if matched.outcome == Outcome.QUEUE.value:
        return Verdict(QUEUED, matched, risk, inputs, queue=matched.queue,
                       priority=matched.set_priority)
    if matched.outcome == Outcome.ASSIGN.value:
        return Verdict(ASSIGNED, matched, risk, inputs, priority=matched.set_priority,
                       assign_role=matched.assign_role)
    return Verdict(PRIORITIZED, matched, risk, inputs, priority=matched.set_priority)
