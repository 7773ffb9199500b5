"""In a real Chromium: an admin drafts a policy version, sees a bad condition refused live as
it is typed, adds the rule, simulates the draft, and a second admin activates it; the item
page shows the policy's decision receipt. Screenshots go to CLEARDESK_SCREENSHOTS if set."""
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.policy.models import PolicyVersion
from app.policy.evaluation import evaluate_items, policy_actor
from app.unit_of_work import commit
from tests.browser.test_sign_in_and_decide import sign_in
from tests.policy.conftest import admins, make_policy  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture
def shots(tmp_path):
    return Path(os.environ.get("CLEARDESK_SCREENSHOTS") or tmp_path)


def test_an_admin_drafts_validates_simulates_and_a_second_admin_activates(
        page, admins, make_policy, make_item, shots):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [("Small deals", "amount <= 1000", "auto_approve", "")],
                max_auto_amount="5000", daily_auto_count="50", qa_sample_pct="5",
                sla_targets={"approval": {"normal": "6", "urgent": "1"}},
                risk={"base": "10", "per_10k": "20", "max_auto_risk": "60",
                      "regions": {"LATAM": "15"}})
    for amount in ("300.00", "900.00", "4000.00", "70000.00"):
        make_item(tenant, amount=amount, details={"discount_pct": "5"})
    sign_in(page, author.email)
    page.goto("/admin/policy/")
    expect(page.get_by_role("heading", name=re.compile("In force"))).to_be_visible()
    page.screenshot(path=str(shots / "policy-overview.png"), full_page=True)

    page.get_by_role("button", name="New draft").click()
    expect(page.get_by_role("heading", name=re.compile("Version 2"))).to_be_visible()
    # A draft reads first: its rules are shown, each form opens on Edit, and so does Add.
    expect(page.locator(".rule-edit form").first).to_be_hidden()
    new_rule = page.locator(".new-rule")
    new_rule.get_by_text("Add a rule").click()
    new_rule.get_by_label("Name").fill("Mid-size deals")
    condition = new_rule.locator("textarea[name=condition]")
    condition.press_sequentially("amont <= 5000", delay=5)
    expect(new_rule.locator(".condition-check")).to_contain_text(
        "Unknown field “amont”. Did you mean “amount”?")
    condition.fill("")
    condition.press_sequentially('amount <= 5000 and region != "LATAM"', delay=5)
    expect(new_rule.locator(".condition-check")).to_contain_text("✓ Valid")
    new_rule.get_by_role("button", name="Add rule").click()
    expect(page.locator("#rules")).to_contain_text("2. Mid-size deals")
    expect(page.locator(".diff")).to_contain_text("Mid-size deals")

    page.get_by_role("button", name="Simulate").click()
    expect(page.locator(".sim-figures")).to_contain_text("Would auto-approve")
    page.screenshot(path=str(shots / "policy-draft.png"), full_page=True)
    page.get_by_role("button", name="Submit for approval").click()
    expect(page.locator(".activate")).to_contain_text("another admin must activate it")

    page.context.clear_cookies()
    sign_in(page, checker.email)
    draft = db.session.scalars(db.select(PolicyVersion).where(PolicyVersion.version == 2)).one()
    page.goto(f"/admin/t/{tenant.slug}/policy/versions/{draft.id}")
    page.get_by_role("button", name="Activate version 2").click()
    expect(page.get_by_role("heading", name=re.compile("Version 2"))).to_contain_text("active")
    db.session.rollback()

    item = make_item(tenant, amount="2500.00", details={"discount_pct": "5"})
    evaluate_items(policy_actor(tenant.id), [item.id])
    commit()
    page.goto(f"/items/{item.id}")
    receipt = page.locator(".decision-receipt")
    expect(receipt).to_contain_text("auto approved")
    expect(receipt).to_contain_text("#2 Mid-size deals")
    expect(receipt).to_contain_text("2500.00")
    page.screenshot(path=str(shots / "policy-receipt.png"), full_page=True)


def test_an_admin_switches_a_draft_rule_kind_and_sees_only_its_outcomes_then_saves_it(
        page, admins, make_policy, shots):
    from app.policy.versions import create_draft
    from tests.conftest import actor

    tenant, author, checker = admins
    make_policy(tenant, author, checker, [("Small deals", "amount <= 1000", "auto_approve", "")])
    draft = create_draft(actor(author), tenant.id)
    commit()
    rule_id = draft.rules[0].id
    sign_in(page, author.email)
    page.goto(f"/admin/t/{tenant.slug}/policy/versions/{draft.id}")
    page.wait_for_load_state("networkidle")  # htmx wired up
    rule = page.locator(f"#rule-{rule_id}")
    rule.get_by_text("Edit rule 1").click()
    outcome = rule.locator(".rule-outcome")
    expect(outcome.locator("legend")).to_have_text("Outcome for approvals")
    # Inputs show with the outcomes that use them: nothing more to fill in to auto-approve.
    expect(outcome.locator("textarea[name=steps]")).to_be_hidden()
    expect(outcome.locator("input[name=queue]")).to_be_hidden()
    outcome.locator("[name=outcome]").select_option("steps")
    expect(outcome.locator("textarea[name=steps]")).to_be_visible()
    expect(outcome.locator("input[name=queue]")).to_be_hidden()
    outcome.locator("[name=outcome]").select_option("queue")
    expect(outcome.locator("textarea[name=steps]")).to_be_visible()  # a queued item keeps them
    expect(outcome.locator("input[name=queue]")).to_be_visible()
    expect(outcome.locator("[name=assign_role]")).to_have_count(0)
    expect(rule.locator(".field-chips")).to_contain_text("discount_pct")
    rule.scroll_into_view_if_needed()
    rule.screenshot(path=str(shots / "rule-editor-approval.png"))

    rule.get_by_label("For").select_option("settlement_dispute")
    expect(outcome.locator("legend")).to_have_text("Outcome for settlement disputes")
    expect(outcome.locator("[name=steps]")).to_have_count(0)
    expect(outcome.locator("[name=outcome]").locator("option")).to_have_text(
        ["Send to a team queue", "Assign to a person", "Only set the priority"])
    expect(rule.locator(".field-chips")).to_contain_text("delta_pct")
    expect(rule.locator(".field-chips")).not_to_contain_text("discount_pct")
    # The live check now knows only the dispute's fields.
    condition = rule.locator("textarea[name=condition]")
    condition.fill("")
    condition.press_sequentially("discount_pct > 5", delay=5)
    expect(rule.locator(".condition-check")).to_contain_text(
        "Unknown field “discount_pct” of settlement disputes.")
    condition.fill("")
    condition.press_sequentially("delta > 5000", delay=5)
    expect(rule.locator(".condition-check")).to_contain_text("✓ Valid — uses delta")
    rule.get_by_label("Name").fill("Big deltas")
    outcome.locator("[name=outcome]").select_option("assign")
    outcome.locator("[name=assign_role]").select_option("analyst")
    outcome.locator("[name=set_priority]").select_option("high")
    rule.screenshot(path=str(shots / "rule-editor-settlement_dispute.png"))

    # Exceptions have no "delta": switching re-checks the condition and says so; the chosen
    # outcome and its inputs carry over.
    rule.get_by_label("For").select_option("billing_exception")
    expect(outcome.locator("legend")).to_have_text("Outcome for billing exceptions")
    expect(rule.locator(".condition-check")).to_contain_text(
        "Unknown field “delta” of billing exceptions.")
    expect(outcome.locator("[name=assign_role]")).to_have_value("analyst")
    expect(rule.locator(".field-chips")).to_contain_text("amount_at_risk")
    rule.get_by_text("What they mean").click()
    expect(rule.locator(".field-meanings table")).to_contain_text("revenue at risk (leakage)")
    rule.screenshot(path=str(shots / "rule-editor-billing_exception.png"))

    rule.get_by_label("For").select_option("settlement_dispute")
    expect(rule.locator(".condition-check")).to_contain_text("✓ Valid")
    expect(outcome.locator("[name=set_priority]")).to_have_value("high")
    rule.get_by_role("button", name="Save rule").click()
    expect(page.locator(".flash")).to_contain_text("Rule saved.")
    saved = page.locator(f"#rule-{rule_id} header")
    expect(saved).to_contain_text("1. Big deltas")
    expect(saved).to_contain_text("settlement disputes")
    expect(saved).to_contain_text("assign to the least-loaded analyst, priority high")
    expect(page.locator(".diff")).to_contain_text("Big deltas")
    expect(page.locator(f"#rule-{rule_id} .rule-outcome legend")).to_have_text(
        "Outcome for settlement disputes")
    page.screenshot(path=str(shots / "rule-editor-saved.png"), full_page=True)
