from app.unit_of_work import commit
"""In a real Chromium on a phone (390×844) and at a desk (1440×900): every page each demo role
reaches reflows with no horizontal page scroll (WCAG 1.4.10), a queue item opens as a screen of
its own with a way back, and a desk shows at least twelve rows of a queue. Screenshots go to
test-artifacts/reflow/ for a person to look at."""
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from tests.browser.conftest import sign_in_as_demo

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reflow"
PHONE = {"width": 390, "height": 844}
DESK = {"width": 1440, "height": 900}
ROLES = ["requester", "approver", "analyst", "manager", "admin", "auditor"]
# Pages a role reaches besides the links it follows; those it may not open are skipped.
START = ["/", "/queues/mine", "/requests/", "/requests/new", "/dashboard", "/imports/", "/admin/",
         "/admin/t/northwind/policy/", "/admin/mail/", "/audit/", "/audit/access-review",
         "/account/out-of-office"]
# Not pages: downloads, exports, signing out, one-time links, JSON.
SKIP = re.compile(r"\.csv$|/download|/export|/logout|^/a/|^/api/|^/static/|/logo/|/healthz")
MAX_PAGES = 45


@pytest.fixture
def seeded(runner):
    from app.extensions import db

    # Enough that every queue has open work: the demo keeps about a day of arrivals open.
    result = runner.invoke(args=["seed-demo", "--items", "2000"])
    assert result.exit_code == 0, result.output
    commit()


def shape(path: str) -> str:
    """One page per kind of address: /items/12 and /items/34 are the same page, and so are
    one tenant's admin pages and another's."""
    return re.sub(r"\d+", "N", re.sub(r"^/admin/t/[^/]+", "/admin/t/T", path))


def page_links(page) -> list[str]:
    hrefs = page.eval_on_selector_all(
        "a[href]:not([download])", "els => els.map(e => e.getAttribute('href'))")
    out = []
    for href in hrefs:
        if not href or not href.startswith("/") or href.startswith("//"):
            continue
        path = href.split("#")[0]
        if not SKIP.search(urlsplit(path).path):
            out.append(path)
    return out


def horizontal_overflow(page) -> int:
    """How far the page is wider than the window (0 when it reflows)."""
    return page.evaluate(
        "document.documentElement.scrollWidth - window.innerWidth")


def artifact_name(role: str, path: str) -> str:
    return f"{role}-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")[:60] or "home") + ".png"


@pytest.mark.parametrize("role", ROLES)
def test_every_page_a_role_reaches_reflows_on_a_phone(chromium, live_server, seeded, role):
    context = chromium.new_context(base_url=live_server, viewport=PHONE, is_mobile=True,
                                   has_touch=True, device_scale_factor=1)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob(f"{role}-phone-*.png"):
        old.unlink()  # this run's screenshots only
    try:
        sign_in_as_demo(page, role)
        queue, seen, visited, overflowing = list(START), set(), [], []
        while queue and len(visited) < MAX_PAGES:
            path = queue.pop(0)
            if shape(path) in seen:
                continue
            seen.add(shape(path))
            response = page.goto(path)
            if response is None or response.status in (403, 404) or response.url.endswith("/login"):
                continue
            assert response.status == 200, f"{path} answered {response.status}"
            page.wait_for_load_state("networkidle")
            visited.append(path)
            if horizontal_overflow(page) > 0:
                overflowing.append((path, page.evaluate("document.documentElement.scrollWidth")))
            page.screenshot(path=str(ARTIFACTS / artifact_name(f"{role}-phone", path)))
            queue.extend(p for p in page_links(page) if shape(p) not in seen)
        assert overflowing == [], f"wider than the 390 px screen: {overflowing}"
        # The roles' own pages were reached, not just the sign-in page.
        assert any(p.startswith("/queues/") for p in visited)
        if role in ("manager",):
            assert "/dashboard" in visited
        if role in ("admin",):
            assert any(p.startswith("/admin/t/") for p in visited)
            assert any("/policy/versions/" in p for p in visited)
        if role in ("admin", "auditor"):
            assert "/audit/" in visited
        if role in ("approver", "analyst"):
            assert any(p.startswith("/items/") for p in visited)

        # The menu folds behind one button, and open it still fits the screen.
        page.goto("/queues/mine")
        menu = page.locator(".site-menu > summary")
        expect(menu).to_be_visible()
        expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
        menu.click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        assert horizontal_overflow(page) <= 0
        page.screenshot(path=str(ARTIFACTS / f"{role}-phone-menu-open.png"))
    finally:
        context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


@pytest.mark.parametrize("role", ["approver", "analyst"])
def test_on_a_phone_an_item_opens_as_its_own_screen_and_back_returns_to_the_list(
        chromium, live_server, seeded, role):
    context = chromium.new_context(base_url=live_server, viewport=PHONE, is_mobile=True,
                                   has_touch=True)
    page = context.new_page()
    try:
        sign_in_as_demo(page, role)
        page.goto("/queues/unassigned")
        rows = page.locator("#rows tr.queue-row")
        expect(rows.first).to_be_visible()
        third = rows.nth(2)
        title = third.locator("a.open-item").inner_text()
        third.locator("a.open-item").click()
        pane = page.locator("#pane #item-panel")
        expect(pane.get_by_role("heading", level=1)).to_have_text(title)
        expect(page.locator("#queue-table")).to_be_hidden()  # the pane is the screen now
        back = page.get_by_role("button", name="Back to the list")
        expect(back).to_be_visible()
        assert horizontal_overflow(page) <= 0
        page.screenshot(path=str(ARTIFACTS / f"{role}-phone-item-open.png"))
        back.click()
        expect(page.locator("#queue-table")).to_be_visible()
        expect(back).to_be_hidden()
        expect(third.locator("a.open-item")).to_be_focused()

        # The phone's own back button closes the pane too, and stays on the queue.
        third.locator("a.open-item").click()
        expect(back).to_be_visible()
        page.go_back()
        expect(page.locator("#queue-table")).to_be_visible()
        expect(back).to_be_hidden()
        assert page.url.endswith("/queues/unassigned")
    finally:
        context.close()


def test_at_a_desk_a_queue_shows_twelve_rows_with_one_line_titles(chromium, live_server, seeded):
    context = chromium.new_context(base_url=live_server, viewport=DESK)
    page = context.new_page()
    try:
        sign_in_as_demo(page, "manager")
        page.goto("/queues/team")
        rows = page.locator("#rows tr.queue-row")
        expect(rows.nth(12)).to_be_attached()
        rows.first.locator("a.open-item").click()
        expect(page.locator("#pane #item-panel")).to_be_visible()
        page.mouse.move(0, 0)
        page.locator("main").focus()  # a focused row shows its full title; measure the rest
        visible = page.evaluate("""() => Array.from(document.querySelectorAll('#rows tr.queue-row'))
            .filter(r => r.getBoundingClientRect().bottom <= window.innerHeight).length""")
        assert visible >= 12, f"only {visible} rows fit at 1440x900"
        # One line per title, the full text in its title attribute.
        link = rows.nth(1).locator("a.open-item")
        line = page.evaluate("el => parseFloat(getComputedStyle(el).lineHeight)", link.element_handle())
        assert link.bounding_box()["height"] <= line * 1.5
        assert link.get_attribute("title") == link.inner_text()
        # Filter labels are whole: every select has room for its chosen label.
        cut = page.evaluate("""() => {
            const ctx = document.createElement('canvas').getContext('2d');
            return Array.from(document.querySelectorAll('#filters select')).filter(s => {
                if (!s.checkVisibility()) return false;
                const style = getComputedStyle(s);
                ctx.font = style.font;
                const room = s.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
                return ctx.measureText(s.selectedOptions[0].text).width > room + 1;
            }).map(s => s.name);
        }""")
        assert cut == []
        assert horizontal_overflow(page) <= 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "manager-desk-team-queue.png"))

        # The pane is resizable from the keyboard (and by dragging) and keeps its width.
        splitter = page.get_by_role("separator", name="Width of the item pane")
        before = page.locator("#pane-screen").bounding_box()["width"]
        splitter.focus()
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        after = page.locator("#pane-screen").bounding_box()["width"]
        assert after > before
        page.reload()
        expect(page.locator("#pane-screen")).to_be_visible()
        assert abs(page.locator("#pane-screen").bounding_box()["width"] - after) < 2
    finally:
        context.close()
