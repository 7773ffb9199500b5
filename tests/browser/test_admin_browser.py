"""The admin area in a real Chromium: an admin invites an approver with a limit in one tenant,
who sets a password from the mailed link and sees only that tenant's work; a deactivated
person's open session stops at once; signing out everywhere else from the account page stops
another browser; out of office routes work to the delegate within its scope; another tenant's
admin pages do not exist for a contoso admin; bad input shows messages next to its fields."""
from __future__ import annotations

import re
import struct
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.models import User, WorkItem
from tests.admin.conftest import org  # noqa: F401  (fixture)
from tests.approvals.conftest import inbox, relaying, run_worker  # noqa: F401  (fixtures)
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "admin"
LINK_RE = re.compile(r"https?://[^\s\"<>]+/account/set-password/[A-Za-z0-9_\-]+")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, email: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queues/mine$"))


def new_page(chromium, live_server):
    context = chromium.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    return context.new_page()


@pytest.fixture
def work(org, make_item, make_user):
    """Ada administers both tenants; each tenant has one approval waiting."""
    from app.admin.people import grant_membership
    from app.unit_of_work import commit
    from tests.conftest import SYSTEM

    grant_membership(SYSTEM, user=org.admin, tenant=org.contoso, roles=["admin"])
    commit()
    nw = make_item(org.northwind, amount="4200.00", requester=org.requester)
    co = make_item(org.contoso, amount="3100.00", requester=org.requester, subtype="refund")
    return {"northwind_item": nw, "contoso_item": co}


def test_an_admin_invites_an_approver_who_then_sees_only_that_tenants_work(
        app, page, chromium, live_server, org, work, relaying, inbox):
    sign_in(page, "ada@example.com")
    page.get_by_role("link", name="Admin", exact=True).click()
    expect(page.get_by_role("heading", name="Admin")).to_be_visible()
    shot(page, "admin-index")
    page.locator(".card").filter(has_text="Northwind").get_by_role("link", name="People").click()
    page.get_by_role("button", name="Add or invite someone").click()
    page.get_by_label("Email").fill("nina@example.com")
    page.get_by_label("Name").fill("Nina New")
    page.get_by_label("Requester").uncheck()
    page.get_by_label("Approver").check()
    page.get_by_label("Approval limit").fill("5000")
    shot(page, "invite-form")
    page.get_by_role("button", name="Add to Northwind").click()
    expect(page.locator("#messages")).to_contain_text("Nina New is invited")
    expect(page.get_by_role("heading", name="Nina New")).to_be_visible()
    shot(page, "person")
    page.locator(".admin-subnav").get_by_role("link", name="People").click()
    expect(page.locator(".admin-table")).to_contain_text("Nina New")
    shot(page, "people")

    run_worker(app)
    [mail] = inbox.to("nina@example.com")
    link = LINK_RE.search(inbox.text(mail)).group(0)
    nina = new_page(chromium, live_server)
    nina.goto(urlsplit(link).path)
    expect(nina.get_by_role("heading", name="Welcome to Cleardesk")).to_be_visible()
    shot(nina, "set-password")
    nina.get_by_label("New password").fill("nina's own long password")
    nina.get_by_label("The same again").fill("nina's own long password")
    nina.get_by_role("button", name="Set password").click()
    expect(nina.locator("#messages")).to_contain_text("Your password is set")
    sign_in(nina, "nina@example.com", "nina's own long password")
    # Only northwind: its brand in the header, only its item in her queues.
    expect(nina.locator(".topbar .brand")).to_have_text("Northwind")
    nina.locator(".queue-nav").get_by_role("link", name="Unassigned").click()
    expect(nina.get_by_role("heading", name="Unassigned")).to_be_visible()
    expect(nina.locator(f"#row-{work['northwind_item'].id}")).to_have_count(1)
    expect(nina.locator(f"#row-{work['contoso_item'].id}")).to_have_count(0)
    expect(nina.locator("#rows tr.queue-row")).to_have_count(1)
    expect(nina.locator("select[name=tenant_id] option")).to_have_count(2)  # all + northwind
    shot(nina, "invited-approver-queue")
    assert nina.goto(f"/items/{work['contoso_item'].id}").status == 404
    nina.context.close()


def test_a_deactivated_persons_open_session_stops_at_once(page, chromium, live_server, org):
    ann = new_page(chromium, live_server)
    sign_in(ann, "ann@example.com")
    sign_in(page, "ada@example.com")
    page.goto(f"/admin/t/northwind/people/{org.approver.id}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Deactivate Ann Approver").click()
    expect(page.locator("#messages")).to_contain_text("Ann Approver is deactivated")
    expect(page.locator(".badge.bad")).to_have_text("deactivated")
    shot(page, "person-deactivated")

    ann.locator(".queue-nav").get_by_role("link", name="Unassigned").click()
    ann.wait_for_url(re.compile(r"/login"))
    expect(ann.get_by_role("heading", name="Sign in to Cleardesk")).to_be_visible()
    ann.get_by_label("Email").fill("ann@example.com")
    ann.get_by_label("Password").fill(PASSWORD)
    ann.get_by_role("button", name="Sign in").click()
    expect(ann.locator(".flash-error")).to_contain_text("do not match an active account")
    ann.context.close()


def test_signing_out_everywhere_else_from_the_account_page_stops_the_other_browser(
        page, chromium, live_server, org):
    laptop = new_page(chromium, live_server)
    sign_in(laptop, "ann@example.com")
    sign_in(page, "ann@example.com")
    page.locator(".who a").click()
    expect(page.get_by_role("heading", name="Your sessions")).to_be_visible()
    rows = page.locator("#sessions tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="this browser")).to_have_count(1)
    expect(rows.filter(has_text="this browser").get_by_role("button", name="End")).to_have_count(0)
    shot(page, "account-sessions")

    page.get_by_role("button", name="Sign out everywhere else").click()
    expect(page.locator("#messages")).to_contain_text("1 other session ended")
    expect(rows).to_have_count(1)
    expect(page.get_by_text("You are signed in only here.")).to_be_visible()

    laptop.locator(".queue-nav").get_by_role("link", name="Unassigned").click()
    laptop.wait_for_url(re.compile(r"/login"))
    expect(laptop.get_by_role("heading", name="Sign in to Cleardesk")).to_be_visible()
    laptop.context.close()


def test_out_of_office_routes_work_to_the_delegate_within_its_scope(
        page, chromium, live_server, org, make_item):
    sign_in(page, "ann@example.com")
    page.locator(".who a").click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    page.get_by_role("link", name="Out of office").click()
    expect(page.get_by_role("heading", name="Out of office")).to_be_visible()
    from datetime import timedelta

    from app.types import utcnow

    today = utcnow().date()
    page.get_by_label("Who stands in").select_option(label="Dan Deputy")
    page.get_by_label("From").fill(today.isoformat())
    page.get_by_label("Until").fill((today + timedelta(days=5)).isoformat())
    page.get_by_label("Approval", exact=True).check()
    page.get_by_label("Only up to").fill("2000")
    page.get_by_role("button", name="Save out of office").click()
    expect(page.locator("#messages")).to_contain_text("Out of office saved")
    expect(page.locator(".card")).to_contain_text(
        "Dan Deputy stands in for approval up to USD 2,000.00")
    shot(page, "out-of-office")

    inside = make_item(org.northwind, amount="1500.00", requester=org.requester)
    outside = make_item(org.northwind, amount="3000.00", requester=org.requester)
    from app.approvals.services import step_recipient

    db.session.expire_all()
    inside_item, outside_item = (db.session.get(WorkItem, i.id) for i in (inside, outside))
    assert step_recipient(inside_item, inside_item.current_step()).email == "dan@example.com"
    dan = new_page(chromium, live_server)
    sign_in(dan, "dan@example.com")
    dan.goto(f"/items/{inside.id}")
    dan.locator("#item-panel").get_by_role("button", name="Approve").click()
    expect(dan.locator("#item-panel")).to_contain_text("on behalf of Ann Approver")
    shot(dan, "decided-on-behalf")
    # The large one is outside Dan's cover: it is not Ann's step mailed to Dan.
    routed = step_recipient(outside_item, outside_item.current_step())
    from app.approvals.services import named_approver_id

    assert named_approver_id(outside_item.current_step()) != org.approver.id
    assert routed.email != "ann@example.com"
    dan.context.close()


def test_a_contoso_admin_finds_no_northwind_admin_pages(page, org):
    sign_in(page, "carl@example.com")
    page.get_by_role("link", name="Admin", exact=True).click()
    expect(page.locator("main")).not_to_contain_text("Northwind")
    response = page.goto("/admin/t/northwind/people")
    assert response.status == 404
    expect(page.locator("main")).not_to_contain_text("Ann Approver")


def _png(padding: int = 0, width: int = 1, height: int = 1) -> bytes:
    """A real PNG: a teal bar with a lighter band, optionally padded with a large text chunk."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"".join(
        (b"\x5e\xea\xd4" if height // 3 <= y < 2 * height // 3 and x > width // 4
         else b"\x0f\x76\x6e") for x in range(width)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + (chunk(b"tEXt", b"c\x00" + b"x" * padding) if padding else b"")
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_bad_settings_and_branding_show_messages_next_to_their_fields(page, org, tmp_path):
    sign_in(page, "ada@example.com")
    page.goto("/admin/t/northwind/")
    page.get_by_label("Time zone").fill("Europe/Atlantis")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator(".field-error")).to_contain_text("not a known time zone name")
    expect(page.get_by_label("Time zone")).to_have_value("Europe/Atlantis")
    shot(page, "settings-bad-timezone")

    page.locator(".admin-subnav").get_by_role("link", name="Closures").click()
    page.get_by_label("First day").fill("2027-03-01")
    page.get_by_label("Last day").fill("2027-03-02")
    page.get_by_label("Reason").fill("Office move")
    page.get_by_role("button", name="Add closure").click()
    expect(page.locator("#messages")).to_contain_text("Closure added")
    expect(page.locator(".admin-table")).to_contain_text("Office move")
    shot(page, "closures")

    page.goto("/admin/t/northwind/branding")
    page.get_by_label("Accent colour").fill("#ffee00")
    page.get_by_role("button", name="Save branding").click()
    expect(page.locator(".field-error")).to_contain_text("too light to read on white")

    fake = tmp_path / "logo.png"
    fake.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    page.get_by_label("Accent colour").fill("#0f766e")
    page.get_by_label("Logo").set_input_files(str(fake))
    page.get_by_role("button", name="Save branding").click()
    expect(page.locator(".field-error")).to_contain_text("SVG is not accepted")

    big = tmp_path / "big.png"
    big.write_bytes(_png(400 * 1024))
    page.get_by_label("Logo").set_input_files(str(big))
    page.get_by_role("button", name="Save branding").click()
    expect(page.locator(".field-error")).to_contain_text("larger than the 256 KB allowed")
    shot(page, "branding-bad-logo")

    good = tmp_path / "good.png"
    good.write_bytes(_png(width=96, height=30))
    page.get_by_label("Display name").fill("Northwind Finance")
    page.get_by_label("Accent colour").fill("#0f766e")
    page.get_by_label("Logo").set_input_files(str(good))
    page.get_by_role("button", name="Save branding").click()
    expect(page.locator("#messages")).to_contain_text("Branding saved")
    expect(page.locator(".topbar .brand")).to_contain_text("Northwind Finance")
    logo = page.locator(".topbar .brand img")
    expect(logo).to_have_count(1)
    # The image loads after the page: wait until it has, then read its size. (Polled from here:
    # a wait_for_function that has to poll evaluates its expression with eval in the page,
    # which the page's CSP refuses.)
    deadline = time.monotonic() + 15
    while not page.evaluate("document.querySelector('.topbar .brand img').complete"):
        assert time.monotonic() < deadline, "the logo never loaded"
        page.wait_for_timeout(50)
    assert page.evaluate("document.querySelector('.topbar .brand img').naturalWidth") == 96
    shot(page, "branding-saved")
    db.session.expire_all()
    assert db.session.get(User, org.admin.id).active


def test_a_change_to_ones_own_limit_waits_for_a_second_admin(page, chromium, live_server, org):
    sign_in(page, "ada@example.com")
    page.goto(f"/admin/t/northwind/people/{org.admin.id}")
    page.get_by_role("checkbox", name="Approver").check()
    page.get_by_label("Approval limit").fill("250000")
    page.get_by_role("button", name="Ask for this change").click()
    expect(page.locator("#messages")).to_contain_text("needs a second admin")
    expect(page.locator(".notice-wait")).to_contain_text("waits for a second admin")
    shot(page, "own-change-pending")

    sam = new_page(chromium, live_server)
    sign_in(sam, "sam@example.com")
    sam.goto("/admin/t/northwind/people")
    pending = sam.locator("#pending")
    expect(pending).to_contain_text("Ada Admin")
    shot(sam, "people-with-pending-change")
    pending.get_by_role("button", name="Approve").click()
    expect(sam.locator("#messages")).to_contain_text("Change approved")
    expect(sam.locator("#pending")).to_have_count(0)
    expect(sam.locator(".admin-table")).to_contain_text("USD 250,000.00")
    sam.context.close()
