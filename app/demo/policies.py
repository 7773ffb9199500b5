"""The demo tenants' policies (different thresholds per tenant, region and partner type), and
deciding the seeded approvals under them as the worker would, so the history shows the
policy at work from the first page."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from app.types import jsonable
from app.extensions import db
from app.policy import engine
from app.policy.evaluation import step_dict
from app.models import ApproverGroup, ApproverGroupMember
from app.policy.models import PolicyBudgetDay, PolicyDecision, PolicyRule, PolicyState, PolicyVersion

TWO_STEPS = [{"role": "approver", "min_limit": "10000.00"}, {"role": "manager", "min_limit": "amount"}]

# Approver groups of every demo tenant, by name: their members' emails (contoso adds its own
# approver to its regional controllers).
DEMO_GROUPS = {
    "Treasury": ["approver@cleardesk.demo", "manager@cleardesk.demo"],
    "Regional controllers EMEA": ["approver@cleardesk.demo", "manager@cleardesk.demo"],
    "Deal desk": ["approver@cleardesk.demo", "manager@cleardesk.demo"],
}
# Requests raised in Cleardesk itself (the demo requester's journeys) show each kind of
# routing: all of a group, any one of a group, two of a group (a rejection waiting while two
# can still approve), and the approver named by the request (the cost centre's owner), who
# has two working days before it escalates to their manager, then to Treasury.
CLEARDESK_RULES = [
    ("Discounts raised here: all of the deal desk",
     'source_system == "cleardesk" and subtype == "discount" and amount > 5000', "steps",
     [{"role": "approver", "min_limit": "0", "group": "Deal desk", "need": "all"}]),
    ("Purchases raised here: the cost centre's owner",
     'source_system == "cleardesk" and subtype == "purchase_request" and amount > 1500', "steps",
     [{"role": "manager", "min_limit": "1000.00", "field": "cost_centre_owner_email",
       "escalate_after": "2 business days",
       "escalate_to": [{"to": "manager"}, {"to": "group", "group": "Treasury"}]}]),
    ("Large credits raised here: Treasury, then a manager",
     'source_system == "cleardesk" and subtype == "credit_memo" and amount > 50000', "steps",
     [{"role": "approver", "min_limit": "0", "group": "Treasury", "need": "any"},
      {"role": "manager", "min_limit": "amount"}]),
    ("Refunds and write-offs raised here: two regional controllers",
     'source_system == "cleardesk" and subtype in ["refund", "write_off"] and amount > 3000',
     "steps", [{"role": "approver", "min_limit": "0", "group": "Regional controllers EMEA",
                "need": "2", "reject_when": "quorum"}]),
]

# slug -> (settings, rules as (name, condition, outcome, steps, or a dict of the rule's other
# fields: kind, queue, steps, set_priority, assign_role))
DEMO_POLICIES = {
    "northwind": (
        dict(max_auto_amount=Decimal("2500.00"), daily_auto_count=120,
             daily_auto_amount=Decimal("120000.00"), qa_sample_pct=5,
             risk={"base": "10", "per_10k": "8", "per_discount_pct": "1",
                   "regions": {"LATAM": "15", "APAC": "5"},
                   "counterparty_risk": {"medium": "15", "high": "40"}, "max_auto_risk": "60"},
             sla_targets={"approval": {"urgent": "2", "high": "4", "normal": "8", "low": "16"}},
             expire_after_days=120),
        [*CLEARDESK_RULES,
         ("Large deals need a manager", "amount > 20000", "steps", TWO_STEPS),
         ("Small deals outside LATAM", 'region != "LATAM" and amount <= 2500 '
                                       "and (discount_pct == null or discount_pct <= 30)",
          "auto_approve", []),
         ("Small refunds and credits", 'subtype in ["refund", "credit_memo"] and amount <= 1000 '
                                       'and region != "LATAM"', "auto_approve", []),
         ("Routine purchases", 'subtype in ["purchase_request", "vendor_bill"] and amount <= 1500',
          "auto_approve", []),
         ("Non-standard terms to the deal desk", 'subtype == "non_standard_terms"', "queue",
          {"queue": "Deal desk", "steps": [{"role": "approver", "min_limit": "amount"}]}),
         ("Large leakage to revenue assurance", "amount_at_risk > 15000", "queue",
          {"kind": "billing_exception", "queue": "Revenue assurance", "set_priority": "high"}),
         ("Tax failures are urgent", 'subtype == "tax_validation_failed"', "prioritize",
          {"kind": "billing_exception", "set_priority": "urgent"})]),
    "contoso": (
        dict(max_auto_amount=Decimal("1500.00"), daily_auto_count=80,
             daily_auto_amount=Decimal("60000.00"), qa_sample_pct=10,
             risk={"base": "15", "per_10k": "10", "per_discount_pct": "1.5",
                   "regions": {"APAC": "10", "LATAM": "20"},
                   "partner_types": {"marketplace": "10"},
                   "counterparty_risk": {"medium": "20", "high": "50"}, "max_auto_risk": "55"},
             sla_targets={"approval": {"urgent": "2", "high": "6", "normal": "12", "low": "24"},
                          "billing_exception": {"normal": "20"}}),
        [*CLEARDESK_RULES,
         ("Large deals need a manager", "amount > 15000", "steps", TWO_STEPS),
         ("Small EMEA deals", 'region == "EMEA" and amount <= 1500 '
                              "and (discount_pct == null or discount_pct <= 25)", "auto_approve", []),
         ("Small deals elsewhere", "amount <= 800 and (discount_pct == null or discount_pct <= 15)",
          "auto_approve", []),
         ("Reseller credits", 'partner_type == "reseller" and subtype == "credit_memo" '
                              "and amount <= 1000", "auto_approve", []),
         ("Vendor bills", 'subtype == "vendor_bill" and amount <= 1000', "auto_approve", []),
         ("Duplicate invoices to an analyst", 'subtype == "duplicate_invoice"', "assign",
          {"kind": "billing_exception", "assign_role": "analyst"}),
         ("Large partner deltas", "delta_magnitude > 5000 or delta_pct_magnitude > 30", "queue",
          {"kind": "settlement_dispute", "queue": "Partner disputes", "set_priority": "high"})]),
    "fabrikam": (
        dict(max_auto_amount=Decimal("3000.00"), daily_auto_count=150,
             daily_auto_amount=Decimal("150000.00"), qa_sample_pct=5,
             risk={"base": "5", "per_10k": "6", "per_discount_pct": "1",
                   "partner_types": {"referral": "10", "marketplace": "15"},
                   "counterparty_risk": {"medium": "10", "high": "35"}, "max_auto_risk": "65"},
             sla_targets={"approval": {"urgent": "1", "high": "4", "normal": "8", "low": "16"},
                          "settlement_dispute": {"normal": "16"}}),
        [*CLEARDESK_RULES,
         ("Large deals need a manager", "amount > 25000", "steps", TWO_STEPS),
         ("Resellers, small", 'partner_type == "reseller" and amount <= 3000 '
                              "and (discount_pct == null or discount_pct <= 20)",
          "auto_approve", []),
         ("Referral partners, smaller", 'partner_type == "referral" and amount <= 1500',
          "auto_approve", []),
         ("Marketplace deals go to review", 'partner_type == "marketplace"', "steps",
          [{"role": "approver", "min_limit": "amount"}]),
         ("Reseller margin disputes", 'subtype == "partner_margin" and delta_magnitude > 2000', "queue",
          {"kind": "settlement_dispute", "queue": "Partner disputes", "set_priority": "high"}),
         ("Payment failures at risk", 'subtype == "payment_failed" and amount_at_risk > 5000',
          "queue", {"kind": "billing_exception", "queue": "Collections"})]),
}
FALLBACK = [{"role": "approver", "min_limit": "amount"}]


def seed_groups(tenants: dict, users: dict) -> dict[str, list[ApproverGroup]]:
    """Each demo tenant's approver groups (DEMO_GROUPS), by tenant slug."""
    out: dict[str, list[ApproverGroup]] = {}
    for slug, tenant in tenants.items():
        for name, emails in DEMO_GROUPS.items():
            if slug == "contoso" and name == "Regional controllers EMEA":
                emails = [*emails, "approver.contoso@cleardesk.demo"]
            group = ApproverGroup(tenant_id=tenant.id, name=name, members=[
                ApproverGroupMember(user_id=users[e].id) for e in emails])
            db.session.add(group)
            out.setdefault(slug, []).append(group)
    db.session.flush()
    return out


def seed_policies(tenants: dict, author, effective_from: datetime) -> dict:
    """Version 1 of each demo tenant's policy, in force since `effective_from`."""
    out = {}
    for slug, tenant in tenants.items():
        settings, rules = DEMO_POLICIES[slug]
        policy = PolicyVersion(
            tenant_id=tenant.id, version=1, state=PolicyState.ACTIVE.value,
            note="Seeded with the demo data.", author_id=author.id, created_at=effective_from,
            submitted_at=effective_from, activated_at=effective_from,
            effective_from=effective_from, qa_role="manager", fallback_steps=FALLBACK,
            rules=[PolicyRule(position=n, name=name, condition=condition, outcome=outcome,
                              **(extra if isinstance(extra, dict) else {"steps": extra}))
                   for n, (name, condition, outcome, extra) in enumerate(rules, start=1)],
            **settings)
        db.session.add(policy)
        out[slug] = policy
    db.session.flush()
    return out


class DemoDecider:
    """Decides seeded approvals per tenant, spending each local day's budget as the worker
    would."""

    def __init__(self, policies: dict, tenants: dict):
        self.compiled = {tenants[s].id: engine.compile_policy(p) for s, p in policies.items()}
        self.policies = {tenants[s].id: p for s, p in policies.items()}
        self.zones = {t.id: ZoneInfo(t.timezone) for t in tenants.values()}
        self.budgets: dict[tuple, engine.Budget] = {}
        self.rejections: dict[tuple, int] = defaultdict(int)

    def decide(self, tenant_id: int, item_id: int, row: dict, at: datetime):
        compiled = self.compiled[tenant_id]
        day = at.astimezone(self.zones[tenant_id]).date()
        budget = self.budgets.setdefault((tenant_id, day), engine.Budget.of(
            compiled, 0, Decimal("0.00")))
        inputs = engine.item_inputs(_Row(row), self.rejections[(tenant_id, row["counterparty"])])
        return engine.decide(compiled, item_id, inputs, kill_switch=False, budget=budget)

    def decide_case(self, tenant_id: int, row: dict):
        """A seeded exception or dispute under its tenant's rules for its kind, or None when
        the policy has none (the worker would not evaluate it either)."""
        compiled = self.compiled[tenant_id]
        if not compiled.rules_for(row["kind"]):
            return None
        return engine.decide_case(compiled, row["kind"], engine.case_inputs(_Row(row)))

    def rejected(self, tenant_id: int, counterparty: str) -> None:
        self.rejections[(tenant_id, counterparty)] += 1

    def receipt(self, tenant_id: int, item_id: int, verdict, arrived: datetime,
                decided: datetime, assignee_id: int | None = None) -> dict:
        policy = self.policies[tenant_id]
        rule = verdict.rule
        return dict(item_id=item_id, tenant_id=tenant_id, arrived_at=arrived, decided_at=decided,
                    policy_id=policy.id, policy_version=policy.version,
                    rule_position=rule.position if rule else None,
                    rule_name=rule.name if rule else None, outcome=verdict.outcome,
                    held_by=verdict.held_by, risk_score=verdict.risk_score,
                    inputs=jsonable(verdict.inputs), queue=verdict.queue,
                    steps=[step_dict(s) for s in verdict.steps],
                    priority=verdict.priority, assign_role=verdict.assign_role,
                    assignee_id=assignee_id)

    def event_data(self, tenant_id: int, verdict, amount=None) -> dict:
        rule = verdict.rule
        data = {"policy_version": self.policies[tenant_id].version,
                "rule": rule.position if rule else None, "rule_name": rule.name if rule else None,
                "outcome": verdict.outcome, "risk_score": verdict.risk_score,
                "inputs": verdict.inputs}
        if amount is not None:
            data["amount"] = amount
        else:
            data.update(held_by=verdict.held_by, queue=verdict.queue,
                        steps=[step_dict(s) for s in verdict.steps],
                        approver_id=None)
        return data

    def budget_rows(self) -> list[dict]:
        return [dict(tenant_id=t, day=d, count=b.used_count, amount=b.used_amount)
                for (t, d), b in self.budgets.items() if b.used_count]


class _Row:
    """A seed row dict read like an item row."""

    def __init__(self, row: dict):
        self.__dict__.update(row)


RECEIPTS = PolicyDecision.__table__
BUDGETS = PolicyBudgetDay.__table__
DECISION_DELAY = timedelta(seconds=3)
