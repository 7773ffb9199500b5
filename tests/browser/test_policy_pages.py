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
from app.policy.services import evaluate_items, policy_actor
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
    new_rule = page.locator(".new-rule")
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
    page.goto(f"/admin/policy/{tenant.id}/versions/{draft.id}")
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
