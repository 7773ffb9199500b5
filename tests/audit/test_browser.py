"""The auditor's page in a real Chromium: filters swap only the results, older events load
under the newer ones, and the page is screenshotted for a look (/tmp/browser-audit.png)."""
import re

import pytest
from playwright.sync_api import expect

from app.audit.services import anchor_all
from app.unit_of_work import commit
from app.work.services import add_comment
from tests.browser.conftest import CHROMIUM_ARGS, chromium, page  # noqa: F401
from tests.conftest import PASSWORD, actor

pytestmark = pytest.mark.browser

SCREENSHOT = "/tmp/browser-audit.png"


@pytest.fixture
def history(world):
    for i in range(56):
        add_comment(actor(world.approver), world.item.id,
                    f"Reviewed line {i + 1} of the renewal quote against the signed order form")
    commit()
    anchor_all()
    commit()
    for i in range(3):
        add_comment(actor(world.approver), world.item.id, f"Follow-up {i + 1}")
    commit()
    return world


def test_an_auditor_filters_the_trail_and_pages_back_without_a_reload(page, history):
    page.goto("/login")
    page.get_by_label("Email").fill("auditor@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queues/mine$"))

    page.get_by_role("link", name="Audit", exact=True).click()
    page.wait_for_url(re.compile(r"/audit/$"))
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    expect(page.locator(".chain-status")).to_contain_text("Verified up to #")
    expect(page.locator(".chain-status")).to_contain_text("3 newer events not yet anchored")
    rows = page.locator("#results tbody tr:not(.load-more)")
    expect(rows).to_have_count(50)
    page.screenshot(path=SCREENSHOT, full_page=False)

    page.evaluate("window.__marker = 1")
    page.get_by_role("link", name="Older events").click()
    expect(rows).to_have_count(68)  # every event of the chain, oldest last
    expect(rows.last.locator(".seq")).to_have_text("1")

    page.get_by_label("Action").fill("item.claimed")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Avery Approver")
    assert page.evaluate("window.__marker") == 1  # the results were swapped, not the page
    assert "action=item.claimed" in page.url  # and the URL says what is shown

    rows.first.locator(".seq a").click()
    expect(page.get_by_role("heading", name=re.compile(r"Event #\d+"))).to_be_visible()
    expect(page.locator("body")).to_contain_text("content matches its hash")
    page.screenshot(path="/tmp/browser-audit-event.png", full_page=True)
