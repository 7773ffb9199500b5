"""Simulation replays a version with the worker's own deciding code: what it predicts for the
waiting items is exactly what activating it then does to them."""
from sqlalchemy import select

from app.extensions import db
from app.policy import services
from app.policy.jobs import sweep_undecided
from app.policy.models import PolicyDecision
from app.policy.simulation import simulate, version_diff
from app.unit_of_work import commit
from tests.conftest import actor

HOLD_ALL = ("Nothing yet", "amount < 0", "auto_approve", "")


def test_simulation_predicts_exactly_what_activation_does(admins, make_policy, make_item,
                                                          make_user):
    tenant, author, checker = admins
    make_user("a@example.com", [tenant], roles=("approver",), limit="100000")
    make_user("m@example.com", [tenant], roles=("manager",), limit="1000000")
    make_policy(tenant, author, checker, [HOLD_ALL])
    items = [make_item(tenant, amount=str(100 + n * 97), details={"discount_pct": str(n % 20)},
                       region=["NA", "EMEA", "LATAM"][n % 3]) for n in range(60)]

    draft = services.create_draft(actor(author), tenant.id)
    for name, condition, outcome, steps in [
            ("LATAM goes to managers", 'region == "LATAM"', "steps", "manager >= amount"),
            ("Small ones", "amount <= 3000 and discount_pct <= 12", "auto_approve", ""),
            ("Review queue", "amount > 5000", "queue", "")]:
        services.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name=name,
                           condition=condition, outcome=outcome, steps_text=steps,
                           queue="review" if outcome == "queue" else None)
    services.save_settings(actor(author), tenant.id, draft.id, max_auto_amount="2500",
                           daily_auto_count="", daily_auto_amount="", qa_sample_pct="25",
                           qa_role="manager", fallback_steps_text="approver >= amount",
                           risk={"base": "5", "per_discount_pct": "4", "max_auto_risk": "50"})
    services.submit_version(actor(author), tenant.id, draft.id)
    commit()
    predicted = simulate(actor(checker), tenant.id, draft.id, days=30)
    assert predicted.items == 60 and predicted.auto_count > 0
    outcomes = {v.outcome for v in predicted.verdicts.values()}
    assert {"auto_approved", "routed", "queued", "qa_sample", "held"} <= outcomes

    services.activate_version(actor(checker), tenant.id, draft.id)
    commit()
    assert sweep_undecided(batch=25) == 60
    for receipt in db.session.scalars(select(PolicyDecision)):
        verdict = predicted.verdicts[receipt.item_id]
        assert (receipt.outcome, receipt.rule_position, receipt.held_by, receipt.risk_score,
                receipt.steps) == (
            verdict.outcome, verdict.rule.position if verdict.rule else None, verdict.held_by,
            verdict.risk_score, [{"role": r, "min_limit": str(m)} for r, m in verdict.steps])
        assert receipt.policy_version == draft.version
    assert len(items) == 60


def test_the_diff_names_added_and_removed_lines(admins, make_policy):
    tenant, author, checker = admins
    active = make_policy(tenant, author, checker, [HOLD_ALL])
    draft = services.create_draft(actor(author), tenant.id)
    services.delete_rule(actor(author), tenant.id, draft.id, draft.rules[0].id)
    services.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="New",
                       condition="amount <= 10", outcome="auto_approve", steps_text="")
    changes = [(sign, line) for sign, line in version_diff(active, draft) if sign != " "]
    assert ("-", "rule 1 “Nothing yet”: when amount < 0 → auto-approve") in changes
    assert ("+", "rule 1 “New”: when amount <= 10 → auto-approve") in changes
