"""Simulation replays a version with the worker's own deciding code: what it predicts for the
waiting items is exactly what activating it then does to them."""
from sqlalchemy import func, select

from app.extensions import db
from app.models import WorkItem
from app.policy import evaluation, versions
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
    # Rules for every kind that match nothing: items of every kind arrive waiting for the
    # policy (no worker runs here), so the next version decides them all.
    make_policy(tenant, author, checker, [HOLD_ALL, *CASE_HOLDS])
    items = [make_item(tenant, amount=str(100 + n * 97), details={"discount_pct": str(n % 20)},
                       region=["NA", "EMEA", "LATAM"][n % 3]) for n in range(60)]
    items += _cases(make_item, tenant)

    draft = versions.create_draft(actor(author), tenant.id)
    for name, condition, outcome, steps in [
            ("LATAM goes to managers", 'region == "LATAM"', "steps", "manager >= amount"),
            ("Small ones", "amount <= 3000 and discount_pct <= 12", "auto_approve", ""),
            ("Review queue", "amount > 5000", "queue", "")]:
        versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name=name,
                           condition=condition, outcome=outcome, steps_text=steps,
                           queue="review" if outcome == "queue" else None)
    for rule in CASE_RULES:
        versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, **rule)
    versions.save_settings(actor(author), tenant.id, draft.id, max_auto_amount="2500",
                           daily_auto_count="", daily_auto_amount="", qa_sample_pct="25",
                           qa_role="manager", fallback_steps_text="approver >= amount",
                           risk={"base": "5", "per_discount_pct": "4", "max_auto_risk": "50"})
    versions.submit_version(actor(author), tenant.id, draft.id)
    commit()
    predicted = simulate(actor(checker), tenant.id, draft.id, days=30)
    assert predicted.items == 60 and predicted.auto_count > 0 and predicted.cases == 12
    outcomes = {v.outcome for v in predicted.verdicts.values()}
    assert {"auto_approved", "routed", "queued", "qa_sample", "held", "assigned",
            "prioritized", "unrouted"} <= outcomes
    assert predicted.queues["review"] > 0 and predicted.queues["QA sample"] > 0

    versions.activate_version(actor(checker), tenant.id, draft.id)
    commit()
    assert sweep_undecided(batch=25) == 72
    _assert_as_predicted(predicted, draft)
    assert len(items) == 72


CASE_HOLDS = [
    {"name": f"Nothing yet ({kind})", "kind": kind, "condition": "amount < 0",
     "outcome": "prioritize", "set_priority": "low"}
    for kind in ("billing_exception", "settlement_dispute")]
CASE_RULES = [
    {"name": "Leakage", "kind": "billing_exception", "condition": "amount_at_risk > 2000",
     "outcome": "queue", "queue": "Revenue assurance", "set_priority": "urgent"},
    {"name": "Failed payments", "kind": "billing_exception",
     "condition": 'subtype == "payment_failed"', "outcome": "prioritize", "set_priority": "high"},
    {"name": "Deltas", "kind": "settlement_dispute", "condition": "delta > 1000",
     "outcome": "assign", "assign_role": "analyst"},
]


def _cases(make_item, tenant):
    return [make_item(tenant, kind="billing_exception", amount=str(500 + n * 700),
                      subtype=["payment_failed", "price_mismatch"][n % 2]) for n in range(6)] + [
        make_item(tenant, kind="settlement_dispute", amount=str(1000 + n * 900),
                  calculated_amount="900.00") for n in range(6)]


def _assert_as_predicted(predicted, draft):
    receipts = db.session.scalars(select(PolicyDecision)).all()
    assert len(receipts) == len(predicted.verdicts)
    for receipt in receipts:
        verdict = predicted.verdicts[receipt.item_id]
        assert (receipt.outcome, receipt.rule_position, receipt.held_by, receipt.risk_score,
                receipt.steps, receipt.queue, receipt.priority) == (
            verdict.outcome, verdict.rule.position if verdict.rule else None, verdict.held_by,
            verdict.risk_score, [{"role": r, "min_limit": str(m)} for r, m in verdict.steps],
            verdict.queue, verdict.priority)
        assert receipt.policy_version == draft.version
        item = db.session.get(WorkItem, receipt.item_id)
        assert item.team_queue == verdict.queue


def test_simulation_replays_the_kill_switch_and_activation_then_does_the_same(
        admins, make_policy, make_item, make_user):
    """With the kill switch on, the simulation auto-approves nothing (it holds back what the
    switch would), and activating the version then holds back exactly those items."""
    tenant, author, checker = admins
    make_user("a@example.com", [tenant], roles=("approver",), limit="100000")
    make_user("m@example.com", [tenant], roles=("manager",), limit="1000000")
    make_policy(tenant, author, checker, [HOLD_ALL])
    items = [make_item(tenant, amount=str(100 + n * 50), details={"discount_pct": "5"})
             for n in range(20)]
    draft = versions.create_draft(actor(author), tenant.id)
    versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="Small ones",
                       condition="amount <= 600", outcome="auto_approve")
    versions.submit_version(actor(author), tenant.id, draft.id)
    versions.set_kill_switch(actor(checker), tenant.id, True, "Audit in progress")
    commit()
    predicted = simulate(actor(checker), tenant.id, draft.id, days=30)
    assert predicted.kill_switch and predicted.auto_count == 0
    assert predicted.killed_count == 11  # 100..600 in steps of 50
    assert {v.held_by for v in predicted.verdicts.values() if v.rule} == {"kill_switch"}
    versions.activate_version(actor(checker), tenant.id, draft.id)
    commit()
    assert sweep_undecided(batch=7) == 20
    _assert_as_predicted(predicted, draft)
    assert db.session.scalar(select(func.count()).select_from(WorkItem)
                             .where(WorkItem.state == "approved")) == 0
    assert len(items) == 20


def test_the_simulation_page_says_the_kill_switch_is_part_of_the_replay(
        admins, make_policy, make_item, client, auth):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [HOLD_ALL])
    make_item(tenant, amount="300.00", details={"discount_pct": "5"})
    draft = versions.create_draft(actor(author), tenant.id)
    versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="Small ones",
                       condition="amount <= 600", outcome="auto_approve")
    versions.submit_version(actor(author), tenant.id, draft.id)
    commit()
    auth.login("checker@example.com")
    url = f"/admin/t/{tenant.slug}/policy/versions/{draft.id}/simulation?days=30"
    page = client.get(url).text
    assert "The kill switch is off" in page and "1</strong>" in page
    versions.set_kill_switch(actor(checker), tenant.id, True, "Audit in progress")
    commit()
    page = client.get(url, headers={"HX-Request": "true"}).text
    assert "The kill switch is on" in page and "this simulation replays it" in page
    assert "1 would-be auto-approvals" in page


def test_the_diff_names_added_and_removed_lines(admins, make_policy):
    tenant, author, checker = admins
    active = make_policy(tenant, author, checker, [HOLD_ALL])
    draft = versions.create_draft(actor(author), tenant.id)
    versions.delete_rule(actor(author), tenant.id, draft.id, draft.rules[0].id)
    versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="New",
                       condition="amount <= 10", outcome="auto_approve", steps_text="")
    changes = [(sign, line) for sign, line in version_diff(active, draft) if sign != " "]
    assert ("-", "rule 1 “Nothing yet”: when amount < 0 → auto-approve") in changes
    assert ("+", "rule 1 “New”: when amount <= 10 → auto-approve") in changes


def _decided_under_small_ones(admins, make_policy, make_item, make_user):
    """An active version auto-approving items up to 600, and 20 items it decided."""
    tenant, author, checker = admins
    make_user("a@example.com", [tenant], roles=("approver",), limit="100000")
    make_user("m@example.com", [tenant], roles=("manager",), limit="1000000")
    make_policy(tenant, author, checker, [("Small ones", "amount <= 600", "auto_approve", "")])
    for n in range(20):
        make_item(tenant, amount=str(100 + n * 50), details={"discount_pct": "5"})
    sweep_undecided(batch=50)
    commit()
    return tenant, author, checker


def _draft(tenant, author, condition="amount <= 600", **settings):
    draft = versions.create_draft(actor(author), tenant.id)
    rule = draft.rules[0]
    versions.save_rule(actor(author), tenant.id, draft.id, rule_id=rule.id, name=rule.name,
                       condition=condition, outcome="auto_approve", steps_text="")
    values = {"max_auto_amount": "", "daily_auto_count": "", "daily_auto_amount": "",
              "qa_sample_pct": "0", "qa_role": "manager",
              "fallback_steps_text": "approver >= amount", "risk": {"base": 0}}
    values.update(settings)
    versions.save_settings(actor(author), tenant.id, draft.id, **values)
    commit()
    return draft


def test_a_draft_without_rule_edits_shows_no_change_by_edits_only_sampling_and_holds(
        admins, make_policy, make_item, make_user):
    tenant, author, checker = _decided_under_small_ones(admins, make_policy, make_item,
                                                        make_user)
    draft = _draft(tenant, author, qa_sample_pct="40", daily_auto_count="2")

    sim = simulate(actor(author), tenant.id, draft.id, days=30)

    edits, sampling, holds, since = (sim.causes[c][0]
                                     for c in ("edits", "sampling", "holds", "since"))
    assert edits == 0
    assert sampling > 0 and holds > 0
    assert edits + sampling + holds + since == sim.changed_count
    assert {cause for _row, _verdict, cause in sim.changed_examples} == {"sampling", "holds"}


def test_a_rule_edit_is_counted_apart_from_sampling_and_on_the_page_first(
        admins, make_policy, make_item, make_user, client, auth):
    tenant, author, checker = _decided_under_small_ones(admins, make_policy, make_item,
                                                        make_user)
    draft = _draft(tenant, author, condition="amount <= 300", qa_sample_pct="30")

    sim = simulate(actor(author), tenant.id, draft.id, days=30)

    # 350..600 auto-approved in fact; now routed to people, unless the sample drew them.
    assert 0 < sim.causes["edits"][0] <= 6
    assert sim.causes["sampling"][0] > 0
    auth.login("author@example.com")
    page = client.get(f"/admin/t/{tenant.slug}/policy/versions/{draft.id}/simulation?days=30").text
    assert page.index("Changed by your edits") < page.index(
        "QA sample drawn differently")
    assert "these would differ with no edit at all" in page


def test_the_simulation_and_the_receipt_describe_routing_in_the_item_pages_words(
        admins, make_policy, make_item, make_user, client, auth):
    from app.admin.groups import create_group
    from app.approvals.services import approve_step
    from app.models import WorkItem
    from tests.conftest import SYSTEM

    tenant, author, checker = admins
    anna = make_user("anna@example.com", [tenant], roles=("approver",), name="Anna")
    ben = make_user("ben@example.com", [tenant], roles=("approver",), name="Ben")
    make_user("cleo@example.com", [tenant], roles=("approver",), name="Cleo")
    make_user("max@example.com", [tenant], roles=("manager",), name="Max", limit="900000")
    create_group(SYSTEM, tenant, name="Treasury", member_ids=[anna.id, ben.id])
    commit()
    make_policy(tenant, author, checker, [("Two of treasury", "amount > 0", "steps",
                                           '2 of group "Treasury"\nmanager >= amount')])
    item = make_item(tenant, amount="700.00")
    evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [item.id])
    commit()
    for person in (anna, ben):
        approve_step(actor(person), item.id)
        commit()
    auth.login("max@example.com")
    page = client.get(f"/items/{item.id}").text
    assert ("Step 1: 2 of 2 members of Treasury (else a manager when too few may decide) — "
            "approved by Anna and Ben on ") in page
    assert "Step 2: a manager, with a limit of at least USD 700.00 — waiting on Max" in page
    # A draft that escalates: the simulation says where each changed item would go.
    draft = versions.create_draft(actor(author), tenant.id)
    versions.save_rule(actor(author), tenant.id, draft.id, rule_id=draft.rules[0].id,
                       name="One approver", condition="amount > 0", outcome="steps",
                       steps_text="approver >= 0, escalate after 2 days to manager")
    versions.submit_version(actor(author), tenant.id, draft.id)
    commit()
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "pending"
    auth.login("checker@example.com")
    sim = client.get(f"/admin/t/{tenant.slug}/policy/versions/{draft.id}/simulation?days=30",
                     headers={"HX-Request": "true"}).text
    assert ("an approver; escalates after 2 days to the approver&#39;s manager" in sim)
