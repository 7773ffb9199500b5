"""A real server and a real Chromium for the browser tests.

The app is served by werkzeug's threaded server from a background thread; each request there
gets its own app context, as under gunicorn. Chromium is Debian's, driven through Playwright's
sync API (Playwright's own browser download cannot work offline)."""
import os
import threading

import pytest
from werkzeug.serving import make_server

from app.extensions import db

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture
def live_server(app):
    """The base URL of the app served on a free port; stopped before the tables are emptied."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        # The test's own session may still hold a snapshot from before the browser acted.
        db.session.rollback()


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
    context = chromium.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"
