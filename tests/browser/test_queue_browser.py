"""In a real Chromium, as an approver clears a queue: filter, open in the pane, approve with a
comment, bulk approve, a refused reject, and the keyboard path."""
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.models import WorkItem
from app.unit_of_work import commit
from tests.conftest import PASSWORD, arrange
from tests.browser.conftest import wait_for_htmx

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def queue_items(make_tenant, make_user, make_item):
    tenant = make_tenant("northwind")
    requester = make_user("requester@example.com", [tenant], roles=("requester",),
                          name="Riley Requester")
    make_user("approver@example.com", [tenant], roles=("approver",), limit="50000",
              name="Avery Approver")
    items = []
    for n, (title, amount) in enumerate([("Discount for Acme Labs", "1200.00"),
                                         ("Refund for Globex", "300.00"),
                                         ("Credit memo for Initech", "450.00"),
                                         ("Write-off for Hooli", "80.00"),
                                         ("Vendor bill for Umbrella", "2500.00")]):
        item = make_item(tenant, amount=amount, requester=requester)
        arrange(item, title=title, counterparty=title.split(" for ")[1])
        items.append(item)
    commit()
    return items


def sign_in_to_unassigned(page):
    page.goto("/login")
    page.get_by_label("Email").fill("approver@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queues/mine$"))
    page.locator(".queue-nav").get_by_role("link", name="Unassigned").click()
    expect(page.get_by_role("heading", name="Unassigned")).to_be_visible()
    wait_for_htmx(page, "#filters")  # the search box's trigger is the form's


def count_of(page, queue):
    return page.locator(f'.queue-nav .count[data-queue="{queue}"]')


def state_of(item_id):
    db.session.rollback()
    return db.session.get(WorkItem, item_id).state


def test_filter_open_and_approve_with_a_comment(page, queue_items):
    sign_in_to_unassigned(page)
    expect(count_of(page, "unassigned")).to_have_text("5")
    page.get_by_label("Search").fill("globex")
    expect(page.locator("#rows tr.queue-row")).to_have_count(1)
    assert "q=globex" in page.url  # the filter is in the address, for bookmarks and sharing
    target = queue_items[1]
    page.get_by_role("link", name="Refund for Globex").click()
    pane = page.locator("#pane #item-panel")
    expect(pane).to_contain_text(target.external_ref)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "queue-with-pane.png"), full_page=True)

    pane.get_by_label("Approve: Comment (optional)").fill("Within guidance")
    pane.get_by_role("button", name="Approve").click()

    expect(page.locator(f"#row-{target.id}")).to_have_count(0)  # the row left the queue
    expect(count_of(page, "unassigned")).to_have_text("4")
    expect(pane.locator("header .badge").first).to_have_text("approved")
    last = pane.locator("ol.timeline > li").last
    expect(last).to_contain_text("approved")
    expect(last).to_contain_text("Within guidance")
    page.screenshot(path=str(ARTIFACTS / "queue-after-approve.png"), full_page=True)
    assert state_of(target.id) == "approved"


def test_bulk_approve_three_items(page, queue_items):
    sign_in_to_unassigned(page)
    boxes = page.locator("#rows input[name=selected_ids]")
    boxes.nth(0).check()
    boxes.nth(2).click(modifiers=["Shift"])  # shift-click selects the range
    expect(page.locator(".selected-count")).to_have_text("3 selected")
    page.locator("#bulk-form").get_by_role("button", name="Approve").click()
    expect(page.locator("#messages")).to_contain_text("3 items were approved")
    expect(page.locator("#rows tr.queue-row")).to_have_count(2)
    expect(count_of(page, "unassigned")).to_have_text("2")
    approved = [i for i in queue_items if state_of(i.id) == "approved"]
    assert len(approved) == 3


def test_reject_without_a_reason_is_refused_with_a_message(page, queue_items):
    sign_in_to_unassigned(page)
    page.get_by_role("link", name="Discount for Acme Labs").click()
    pane = page.locator("#pane #item-panel")
    expect(pane).to_contain_text(queue_items[0].external_ref)
    # The browser would stop an empty reason; take that away to prove the server refuses too.
    pane.locator("textarea[name=comment]").first.evaluate("el => el.removeAttribute('required')")
    pane.get_by_role("button", name="Reject").click()
    expect(page.locator("#messages")).to_contain_text("Give a reason for rejecting.")
    assert state_of(queue_items[0].id) == "pending"


def test_keyboard_j_j_a_approves_the_second_item(page, queue_items):
    sign_in_to_unassigned(page)
    rows = page.locator("#rows tr.queue-row")
    second_id = int(rows.nth(1).get_attribute("data-item-id"))
    first_id = int(rows.nth(0).get_attribute("data-item-id"))
    page.locator("h1").click()  # focus the page, not a field
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(page.locator("#rows tr.queue-row.current")).to_have_attribute(
        "data-item-id", str(second_id))
    # Highlighted, never opened: `a` asks once before it decides.
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.keyboard.press("a")
    expect(page.locator(f"#row-{second_id}")).to_have_count(0)
    assert asked and "without opening it" in asked[0]
    expect(page.locator("#pane #item-panel header .badge").first).to_have_text("approved")
    assert state_of(second_id) == "approved"
    assert state_of(first_id) == "pending"
    # The focus moved on to the next row; ? lists the keys.
    expect(page.locator("#rows tr.queue-row.current")).to_have_count(1)
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()


def test_a_newer_search_replaces_a_slow_older_one_at_once(page, queue_items):
    """Typing on while an earlier search is still on its way: the newer search is sent at once
    (htmx would otherwise queue it behind the slow one) and its results stay when the older
    answer finally comes."""
    sign_in_to_unassigned(page)
    held = []

    def hold_the_first(route):
        if held:
            route.continue_()
        else:
            held.append(route)  # answered only after the newer search has been shown

    page.route(lambda url: "q=hooli" in url, hold_the_first)
    page.get_by_label("Search").fill("hooli")
    for _ in range(200):  # the route handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    page.get_by_label("Search").fill("globex")
    expect(page.locator("#rows tr.queue-row")).to_have_count(1)
    expect(page.locator("#rows")).to_contain_text("Refund for Globex")
    try:
        held[0].continue_()
    except Exception:  # the browser already dropped the superseded request: the fix at work
        pass
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)
    expect(page.locator("#rows tr.queue-row")).to_have_count(1)
    expect(page.locator("#rows")).to_contain_text("Refund for Globex")
    assert "q=globex" in page.url


def test_a_on_a_row_never_opened_asks_and_a_no_changes_nothing(page, queue_items):
    sign_in_to_unassigned(page)
    first_id = int(page.locator("#rows tr.queue-row").nth(0).get_attribute("data-item-id"))
    page.locator("h1").click()
    page.keyboard.press("j")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.keyboard.press("a")
    page.wait_for_timeout(300)
    expect(page.locator(f"#row-{first_id}")).to_have_count(1)
    assert state_of(first_id) == "pending"


def test_keyboard_only_reject_with_a_typed_reason_by_tab_and_enter(page, queue_items):
    sign_in_to_unassigned(page)
    first = page.locator("#rows tr.queue-row").nth(0)
    first_id = int(first.get_attribute("data-item-id"))
    ref = db.session.get(WorkItem, first_id).external_ref
    page.locator("h1").click()
    page.keyboard.press("j")
    page.keyboard.press("Enter")  # opens the highlighted row in the pane
    expect(page.locator("#pane #item-panel")).to_have_attribute("data-item-id", str(first_id))
    page.wait_for_load_state("networkidle")  # htmx has wired up the pane's forms
    page.keyboard.press("r")  # the cursor goes to the reason box
    page.keyboard.type("Outside the discount guidance")
    page.keyboard.press("Tab")  # to the Reject button
    expect(page.locator("#item-panel button[data-action=reject]")).to_be_focused()
    page.keyboard.press("Enter")  # the button's own Enter: reject, not re-open the row
    expect(page.locator("#toast")).to_have_text(f"Rejected {ref}")
    expect(page.locator("#pane #item-panel header .badge").first).to_have_text("rejected")
    assert state_of(first_id) == "rejected"
    db.session.rollback()
    from app.audit.models import AuditEvent
    from sqlalchemy import select
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == first_id, AuditEvent.action == "item.reject")).one()
    assert event.comment == "Outside the discount guidance"


def test_enter_on_a_focused_link_follows_the_link_not_the_highlighted_row(page, queue_items):
    sign_in_to_unassigned(page)
    page.locator("h1").click()
    page.keyboard.press("j")
    link = page.locator(".queue-nav").get_by_role("link", name="My work")
    link.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/queues/mine$"))
    expect(page.locator("#pane #item-panel")).to_have_count(0)


def test_a_stale_error_clears_on_the_next_action_and_the_result_is_confirmed(page, queue_items):
    sign_in_to_unassigned(page)
    page.get_by_role("link", name="Discount for Acme Labs").click()
    pane = page.locator("#pane #item-panel")
    pane.locator("textarea[name=comment]").first.evaluate("el => el.removeAttribute('required')")
    pane.get_by_role("button", name="Reject").click()
    expect(page.locator("#messages")).to_contain_text("Give a reason for rejecting.")
    pane.get_by_role("button", name="Approve").click()
    expect(page.locator("#toast")).to_have_text(f"Approved {queue_items[0].external_ref}")
    expect(page.locator("#messages")).to_be_empty()
