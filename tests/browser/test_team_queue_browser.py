"""In a real Chromium: the policy's named team queues in the queue pages. A manager (the QA
role) finds "QA sample" and "Deal desk" under Team queues with their counts, opens the QA
sample, opens an item in the pane (its team queue shown) and approves it there; the row
leaves and the count drops. Screenshots go to CLEARDESK_SCREENSHOTS if set."""
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.policy.evaluation import evaluate_items, policy_actor
from app.unit_of_work import commit
from tests.browser.test_sign_in_and_decide import sign_in
from tests.policy.conftest import admins, make_policy  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture
def shots(tmp_path):
    return Path(os.environ.get("CLEARDESK_SCREENSHOTS") or tmp_path)


def test_a_manager_works_the_qa_sample_and_sees_the_deal_desk_team_queue(
        page, admins, make_policy, make_item, make_user, shots):
    tenant, author, checker = admins
    requester = make_user("requester@example.com", [tenant], roles=("requester",))
    make_user("manager@example.com", [tenant], roles=("manager",), limit="1000000",
              name="Morgan Manager")
    make_user("approver@example.com", [tenant], roles=("approver",), limit="50000")
    make_policy(tenant, author, checker, [
        {"name": "Non-standard terms", "condition": 'subtype == "non_standard_terms"',
         "outcome": "queue", "queue": "Deal desk", "steps_text": "approver >= amount"},
        {"name": "Small discounts", "condition": "amount <= 1000", "outcome": "auto_approve"},
    ], qa_sample_pct="100", qa_role="manager")
    items = [make_item(tenant, amount=amount, requester=requester, subtype=subtype)
             for amount, subtype in (("450.00", "discount"), ("820.00", "refund"),
                                     ("7200.00", "non_standard_terms"),
                                     ("15800.00", "non_standard_terms"),
                                     ("2400.00", "discount"))]
    evaluate_items(policy_actor(tenant.id), [i.id for i in items])
    commit()

    sign_in(page, "manager@example.com")
    nav = page.locator(".queue-nav")
    expect(nav).to_contain_text("Team queues")
    expect(nav.locator('[data-queue="@QA sample"]')).to_have_text("2")
    expect(nav.locator('[data-queue="@Deal desk"]')).to_have_text("2")
    nav.get_by_role("link", name=re.compile("Deal desk")).click()
    expect(page.get_by_role("heading", name=re.compile("Deal desk"))).to_be_visible()
    expect(page.locator("#rows tr.queue-row")).to_have_count(2)
    nav.get_by_role("link", name=re.compile("QA sample")).click()
    expect(page.get_by_role("heading", name=re.compile("QA sample"))).to_be_visible()
    rows = page.locator("#rows tr.queue-row")
    expect(rows).to_have_count(2)
    page.screenshot(path=str(shots / "team-queue-qa-sample.png"), full_page=True)

    rows.first.locator("a.open-item").click()
    pane = page.locator("#pane")
    expect(pane).to_contain_text("Team queue")
    expect(pane).to_contain_text("qa sample")  # the decision receipt's outcome
    page.screenshot(path=str(shots / "team-queue-pane.png"), full_page=True)
    pane.locator('button[data-action="approve"]').click()
    expect(rows).to_have_count(1)
    expect(nav.locator('[data-queue="@QA sample"]')).to_have_text("1")

    # In the manager's Team view the rows name their team queue, and the filter narrows to
    # one. (Their Approvals queue lists only what a manager may decide: the deal desk's steps
    # need an approver.)
    nav.locator('a:has([data-queue="team"])').click()
    # The QA sample page has tags and a filter too: wait for the team page itself.
    expect(page.locator(".queue-header h1")).to_have_text("Team")
    page.wait_for_load_state("networkidle")  # and htmx has wired up its new filter form
    expect(page.locator("#rows .queue-tag").first).to_be_visible()
    page.get_by_label("Team queue").select_option("Deal desk")
    expect(page.locator("#rows tr.queue-row")).to_have_count(2)
    expect(page).to_have_url(re.compile(r"team_queue=Deal"))
    page.screenshot(path=str(shots / "team-queue-filter.png"), full_page=True)
