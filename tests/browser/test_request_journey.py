"""The whole loop of one request, in a real Chromium with a real worker and SMTP server:
a requester raises a discount with a file → the approver is mailed the facts and the file, and
sees and downloads it → asks for information →
the requester is mailed, answers with a corrected amount and resubmits → the first link is
refused, the fresh one approves → the requester is mailed the outcome."""
import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.models import WorkItem
from tests.approvals.conftest import inbox, relaying, run_worker  # noqa: F401 (fixtures)
from tests.browser.conftest import CHROMIUM_ARGS  # noqa: F401 (the same browser flags)
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser
QUOTE = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
QUOTE_SHA = hashlib.sha256(QUOTE).hexdigest()
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "journey"


@pytest.fixture
def people(make_tenant, make_user):
    tenant = make_tenant("northwind")
    make_user("rita@example.com", [tenant], roles=("requester",), name="Rita Requester")
    make_user("ann@example.com", [tenant], roles=("approver",), limit="50000",
              name="Ann Approver")
    return tenant


def sign_in(page, email):
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def link_path(inbox, message) -> str:
    return urlsplit(inbox.link(message)).path


def test_a_request_goes_round_the_loop_and_the_requester_is_told(
        app, page, chromium, live_server, people, relaying, inbox):
    SHOTS.mkdir(parents=True, exist_ok=True)
    sign_in(page, "rita@example.com")
    page.wait_for_url(re.compile(r"/requests/$"))
    page.get_by_role("button", name="New request").click()
    page.locator("[name=counterparty]").fill("Blue Yonder Labs")
    page.locator("[name=amount]").fill("3000.00")
    page.locator("[name=discount_pct]").fill("20")
    page.locator("[name=contract_term_months]").fill("36")
    page.locator("[name=reason]").fill("Three-year renewal; the competitor offers 20%.")
    page.get_by_label("Evidence files").set_input_files(files=[{
        "name": "competitor-quote.pdf", "mimeType": "application/pdf", "buffer": QUOTE}])
    page.screenshot(path=str(SHOTS / "1-new-request.png"), full_page=True)
    page.get_by_role("button", name="Submit request").click()
    page.wait_for_url(re.compile(r"/items/\d+$"))
    item_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#item-panel")).to_contain_text("routed to")

    run_worker(app)
    [first] = inbox.to("ann@example.com")
    text = inbox.text(first)
    assert "Discount:      20%" in text and "competitor offers 20%" in text
    assert "competitor-quote.pdf (PDF" in text and QUOTE_SHA[:12] in text
    first_link = link_path(inbox, first)

    approver = chromium.new_context(base_url=live_server)
    ann = approver.new_page()
    sign_in(ann, "ann@example.com")
    ann.wait_for_url(re.compile(r"/queues/mine$"))
    expect(ann.locator("#rows")).to_contain_text("Discount for Blue Yonder Labs")  # routed to her
    ann.goto(f"/items/{item_id}")
    evidence = ann.locator("#item-panel .attachments")
    expect(evidence).to_contain_text("competitor-quote.pdf")
    expect(evidence).to_contain_text("Rita Requester")
    expect(evidence).to_contain_text(QUOTE_SHA[:12])
    with ann.expect_download() as download:
        evidence.get_by_role("link", name="competitor-quote.pdf").click()
    assert Path(download.value.path()).read_bytes() == QUOTE
    ann.screenshot(path=str(SHOTS / "1b-approver-sees-the-file.png"), full_page=True)
    ann.get_by_label("What do you need?").fill("Can you bring it to 2,800?")
    ann.get_by_role("button", name="Request info").click()
    expect(ann.locator("#item-panel .badge").first).to_have_text("info requested")

    run_worker(app)
    [question] = [m for m in inbox.to("rita@example.com") if "Question" in m["Subject"]]
    assert "Can you bring it to 2,800?" in inbox.text(question)
    page.goto("/requests/")
    expect(page.locator(".needs-answer")).to_contain_text("Discount for Blue Yonder Labs")
    page.screenshot(path=str(SHOTS / "2-needs-your-answer.png"), full_page=True)
    page.locator(".needs-answer a").first.click()
    page.wait_for_url(re.compile(rf"/items/{item_id}$"))
    page.get_by_label("Your answer", exact=True).fill("Yes: 2,800 with a 36-month term.")
    page.get_by_label("Corrected amount").fill("2800.00")
    page.get_by_role("button", name="Resubmit").click()
    expect(page.locator("#item-panel .badge").first).to_have_text("pending")
    db.session.rollback()
    assert str(db.session.get(WorkItem, item_id).amount) == "2800.00"

    # The first link was sent for 3,000 and died with the question; the fresh one decides.
    outsider = chromium.new_context(base_url=live_server).new_page()
    refused = outsider.goto(first_link)
    assert refused.status >= 400
    run_worker(app)
    fresh = [m for m in inbox.to("ann@example.com")][-1]
    assert "USD 2,800.00" in inbox.text(fresh)
    outsider.goto(link_path(inbox, fresh))
    outsider.screenshot(path=str(SHOTS / "3-link-page.png"), full_page=True)
    outsider.get_by_role("button", name="Approve").click()
    expect(outsider.locator("body")).to_contain_text("You approved")

    run_worker(app)
    told = [m for m in inbox.to("rita@example.com") if "was approved" in m["Subject"]]
    assert len(told) == 1 and "Ann Approver" in inbox.text(told[0])
    page.goto("/requests/")
    expect(page.locator(f"#request-{item_id} .badge")).to_have_text("approved")
    page.screenshot(path=str(SHOTS / "4-my-requests.png"), full_page=True)
    approver.close()
