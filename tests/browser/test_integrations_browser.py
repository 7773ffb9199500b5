"""In a real Chromium, as an admin wires up a source system: create an API token (shown once)
and revoke it."""
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "integrations"


@pytest.fixture
def admin(make_tenant, make_user):
    tenant = make_tenant("northwind")
    make_tenant("contoso", "EUR", "Europe/Berlin", "DE")
    make_user("admin@example.com", [tenant], roles=("admin", "analyst"), name="Ada Admin")
    return tenant


def sign_in(page, email="admin@example.com"):
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queues/"))


def test_an_admin_creates_a_token_sees_it_once_and_revokes_it(page, admin):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    sign_in(page)
    page.get_by_role("link", name="Integrations").click()
    expect(page.get_by_role("heading", name="API tokens")).to_be_visible()
    page.get_by_label("Name").fill("Billing export")
    page.get_by_label(re.compile("decisions:write")).check()
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token")
    expect(secret).to_have_text(re.compile(r"^cd_[0-9a-f]{8}_"))
    expect(page.locator("#tokens")).to_contain_text("Billing export")
    page.screenshot(path=str(ARTIFACTS / "01-token-created.png"), full_page=True)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("#tokens")).to_contain_text("revoked")
    expect(page.locator("#new-token")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "02-token-revoked.png"), full_page=True)


def test_an_admin_adds_a_webhook_and_reads_its_delivery_log(page, admin, make_item):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    sign_in(page)
    page.get_by_role("link", name="Integrations").click()
    page.locator(".integrations-subnav").get_by_role("link", name="Webhooks").click()
    page.get_by_label("Endpoint URL").fill("http://127.0.0.1:9/hooks/cleardesk")
    page.get_by_label("Description").fill("Release billing holds")
    page.get_by_label(re.compile("item.created")).check()
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#new-secret")).to_have_text(re.compile(r"^whsec_[0-9a-f]{64}$"))
    page.screenshot(path=str(ARTIFACTS / "03-webhook-added.png"), full_page=True)
    page.get_by_role("link", name="http://127.0.0.1:9/hooks/cleardesk").click()
    expect(page.get_by_role("heading", name="Webhook deliveries")).to_be_visible()
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".notice-alert")).to_contain_text("Webhook paused")
    expect(page.get_by_role("link", name=re.compile("Integrations"))).to_contain_text("⚠ 1")
    page.screenshot(path=str(ARTIFACTS / "04-webhook-paused.png"), full_page=True)
    page.get_by_role("button", name="Resume and send what waits").click()
    expect(page.locator(".notice-alert")).to_have_count(0)
