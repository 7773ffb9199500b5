"""A real Chromium for the browser tests, on the app served by `live_server` (tests/conftest.py).

Chromium is Debian's, driven through Playwright's sync API (Playwright's own browser download
cannot work offline)."""
import os
import re
import time

import pytest

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture(scope="module")
def chromium():
    """One Chromium per module; Playwright's event loop does not outlive the browser tests."""
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CLEARDESK_TEST_CHROMIUM")
    if not executable:
        pytest.exit("CLEARDESK_TEST_CHROMIUM is not set: run the suite with `make test`",
                    returncode=2)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium, live_server):
    """A fresh browser profile (no cookies) on the live server; fails the test on any
    JavaScript error in the page."""
    yield from fresh_page(chromium, live_server)


def fresh_page(chromium, base_url: str):
    """A page of a fresh browser profile at `base_url`, for a fixture to yield from; the test
    fails on any JavaScript error in the page."""
    context = chromium.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


def sign_in_as_demo(page, role: str) -> None:
    """Sign in through the login form as the demo user of `role` and wait for their home:
    My work, or My requests for the requester."""
    page.goto("/login")
    page.get_by_label("Email").fill(f"{role}@cleardesk.demo")
    page.get_by_label("Password").fill("demo-password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queues/mine$|/requests/$"))


def wait_for_htmx(page, selector: str, timeout: float = 15) -> None:
    """Wait until htmx has processed the element (a boosted navigation swaps the page in and
    processes its htmx attributes a moment later, in the settle step): an input typed into
    before that triggers nothing, and on a loaded machine the moment can be long. Polled from
    here: a wait_for_function that has to poll evaluates with eval in the page, which the
    page's CSP refuses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(
            "sel => { const e = document.querySelector(sel);"
            " return !!(e && e['htmx-internal-data'] && e['htmx-internal-data'].initHash); }",
            selector):
        assert time.monotonic() < deadline, f"htmx never processed {selector}"
        page.wait_for_timeout(50)
