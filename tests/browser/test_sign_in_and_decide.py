"""In a real Chromium: an approver signs in, takes an item from the Unassigned queue and
approves it, with htmx swapping only the item panel; a signed-out htmx request lands on the
full login page."""
import re

import pytest
from playwright.sync_api import expect

from app.actors import Actor
from app.auth.models import SessionEndReason
from app.auth.services import end_sessions
from app.extensions import db
from app.models import User, WorkItem
from app.unit_of_work import commit
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

SCREENSHOT = "/tmp/browser-item.png"


@pytest.fixture
def approval(make_tenant, make_user, make_item):
    tenant = make_tenant("northwind")
    requester = make_user("requester@example.com", tenants=[tenant], roles=("requester",),
                          name="Riley Requester")
    make_user("approver@example.com", tenants=[tenant], roles=("approver",),
              limit="50000", name="Avery Approver")
    return make_item(tenant, amount="4200.00", requester=requester,
                     details={"discount_pct": "15", "reason": "Renewal at risk"})


def sign_in(page, email="approver@example.com"):
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queues/mine$"))


def open_item_page(page, item):
    """The item's own page (the queue pages open items in a pane instead)."""
    page.locator(".queue-nav").get_by_role("link", name="Unassigned").click()
    expect(page.get_by_role("heading", name="Unassigned")).to_be_visible()
    page.goto(f"/items/{item.id}")
    expect(page.locator("#item-panel")).to_contain_text(item.external_ref)


def test_approver_signs_in_claims_and_approves_without_a_page_reload(page, approval):
    sign_in(page)
    expect(page.get_by_role("heading", name="My work")).to_be_visible()
    open_item_page(page, approval)
    panel = page.locator("#item-panel")
    expect(panel.locator(".badge").first).to_have_text("pending")

    # Markers that a full page load (or a boosted navigation, which replaces the body) wipes.
    page.evaluate("window.__marker = 1")
    page.evaluate("document.querySelector('header.topbar').dataset.marker = 'kept'")

    with page.expect_response(lambda r: r.url.endswith(f"/items/{approval.id}/act")) as claim:
        panel.get_by_role("button", name="Claim").click()
    assert claim.value.status == 200
    assert claim.value.request.headers.get("hx-request") == "true"
    expect(panel.get_by_role("button", name="Release")).to_be_visible()
    expect(panel).to_contain_text("Avery Approver")

    with page.expect_response(lambda r: r.url.endswith(f"/items/{approval.id}/act")) as approve:
        panel.get_by_role("button", name="Approve").click()
    assert approve.value.status == 200
    assert approve.value.request.headers.get("hx-request") == "true"

    expect(panel.locator("header .badge").first).to_have_text("approved")
    assert page.evaluate("window.__marker") == 1
    assert page.evaluate("document.querySelector('header.topbar').dataset.marker") == "kept"
    assert page.url.endswith(f"/items/{approval.id}")
    timeline = panel.locator("ol.timeline > li")
    expect(timeline).to_have_count(3)  # created, claimed, approved
    expect(timeline.last).to_contain_text("Avery Approver")
    expect(timeline.last.locator(".action")).to_have_text("approved")
    expect(timeline.last).to_contain_text("pending → approved")
    expect(panel).to_contain_text("This item is closed.")
    page.screenshot(path=SCREENSHOT, full_page=True)

    db.session.rollback()
    item = db.session.get(WorkItem, approval.id)
    assert item.state == "approved"
    assert item.steps[0].decided_by.email == "approver@example.com"


def test_signed_out_htmx_action_lands_on_the_full_login_page(page, approval):
    sign_in(page)
    page.goto(f"/items/{approval.id}")
    panel = page.locator("#item-panel")
    expect(panel.get_by_role("button", name="Claim")).to_be_visible()

    # Signed out from elsewhere (a password change, an admin): the cookie stays, the session
    # does not.
    user = db.session.query(User).filter_by(email="approver@example.com").one()
    end_sessions(Actor.system("tests"), user, SessionEndReason.PASSWORD_CHANGED)
    commit()
    panel.get_by_role("button", name="Claim").click()

    page.wait_for_url(re.compile(r"/login(\?.*)?$"))
    expect(page.get_by_role("heading", name="Sign in to Cleardesk")).to_be_visible()
    # A whole page, not the login page swapped into the item panel.
    assert page.locator("#item-panel").count() == 0
    assert page.locator("html").count() == 1
    assert page.locator("header.topbar").count() == 1
    assert page.locator("input[name=password]").count() == 1
    db.session.rollback()
    assert db.session.get(WorkItem, approval.id).assignee_id is None


def test_signed_out_boosted_navigation_lands_on_the_full_login_page(page, approval):
    sign_in(page)
    page.goto(f"/items/{approval.id}")
    page.context.clear_cookies()

    page.get_by_role("link", name="← Queues").click()

    page.wait_for_url(re.compile(r"/login\?next="))
    expect(page.get_by_role("heading", name="Sign in to Cleardesk")).to_be_visible()
    assert page.locator("#item-panel").count() == 0
    assert page.locator("header.topbar").count() == 1
