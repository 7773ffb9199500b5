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
    page.get_by_role("link", name="Admin", exact=True).click()
    page.get_by_role("link", name="API tokens").click()
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
    page.get_by_role("link", name="Admin", exact=True).click()
    page.locator(".cards").get_by_role("link", name="Webhooks").click()
    # This machine's own address is refused, with the reason at the field.
    page.get_by_label("Endpoint URL").fill("http://127.0.0.1:9/hooks/cleardesk")
    page.get_by_label("Description").fill("Release billing holds")
    page.get_by_label(re.compile("item.created")).check()
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("main")).to_contain_text("must be a public address")
    page.screenshot(path=str(ARTIFACTS / "03-webhook-private-refused.png"), full_page=True)
    page.get_by_label("Endpoint URL").fill("https://hooks.billing.example/cleardesk")
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#new-secret")).to_have_text(re.compile(r"^whsec_[0-9a-f]{64}$"))
    page.screenshot(path=str(ARTIFACTS / "03-webhook-added.png"), full_page=True)
    page.get_by_role("link", name="https://hooks.billing.example/cleardesk").click()
    expect(page.get_by_role("heading", name="Webhook deliveries")).to_be_visible()
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".notice-alert")).to_contain_text("Webhook paused")
    expect(page.get_by_role("link", name=re.compile(r"^Admin"))).to_contain_text("⚠ 1")
    page.screenshot(path=str(ARTIFACTS / "04-webhook-paused.png"), full_page=True)
    deliveries = page.url
    page.get_by_role("link", name=re.compile(r"^Admin")).click()
    expect(page.locator(".cards")).to_contain_text("⚠ 1 paused")
    page.screenshot(path=str(ARTIFACTS / "04-admin-webhook-paused.png"), full_page=True)
    page.goto(deliveries)
    page.get_by_role("button", name="Resume and send what waits").click()
    expect(page.locator(".notice-alert")).to_have_count(0)


def test_an_analyst_sees_row_errors_and_a_moving_progress_bar(page, admin, tmp_path):
    from app.extensions import db
    from app.imports.models import ImportJob
    from app.unit_of_work import commit

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    bad = tmp_path / "billing-export.csv"
    bad.write_text("exception_id,invoice_number,customer,exception_type,amount,currency\n"
                   "EX-1,INV-1,Acme,payment_failed,120.00,USD\n"
                   "EX-2,INV-2,Globex,card_melted,10.00,USD\n"
                   "EX-3,INV-3,Initech,payment_failed,,EUR\n")
    sign_in(page)
    page.get_by_role("link", name="Import").click()
    page.get_by_label("CSV file").set_input_files(str(bad))
    page.get_by_role("button", name="Check the file").click()
    expect(page.locator("#row-errors")).to_contain_text("unknown type")
    expect(page.get_by_text("Refused: nothing was imported.")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "05-import-refused.png"), full_page=True)

    good = tmp_path / "clean.csv"
    good.write_text("exception_id,invoice_number,customer,exception_type,amount\n" + "".join(
        f"EX-{n},INV-{n},Customer {n},payment_failed,{n}.00\n" for n in range(1, 41)))
    page.get_by_role("link", name="← Imports").click()
    page.get_by_label("CSV file").set_input_files(str(good))
    page.get_by_role("button", name="Check the file").click()
    expect(page.get_by_role("button", name="Import 40 rows")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "06-import-ready.png"), full_page=True)
    # A worker half-way through (set here by hand): the page polls and the bar follows.
    db.session.rollback()
    job = db.session.scalars(db.select(ImportJob).order_by(ImportJob.id.desc())).first()
    job.status, job.processed_rows = "running", 0
    commit()
    page.reload()
    job.processed_rows = 20
    commit()
    expect(page.locator("#import-bar")).to_have_attribute("value", "20")
    page.screenshot(path=str(ARTIFACTS / "07-import-progress.png"), full_page=True)
    job.status, job.processed_rows, job.created_count = "succeeded", 40, 40
    commit()
    expect(page.locator("#import-summary")).to_contain_text("40")


@pytest.fixture
def demo_admin(make_tenant, make_user, make_item):
    """As in the demo: one admin of three tenants, with a webhook in the second one that has
    received an item."""
    from sqlalchemy import select

    from app.extensions import db
    from app.outbox.models import OutboxMessage
    from app.unit_of_work import commit
    from app.webhooks.services import create_subscription, fan_out
    from tests.conftest import actor

    tenants = [make_tenant("northwind"), make_tenant("contoso", "EUR", "Europe/Berlin", "DE"),
               make_tenant("fabrikam", "GBP", "Europe/London", "GB")]
    admin = make_user("admin@example.com", tenants, roles=("admin",), name="Ada Admin")
    contoso = tenants[1]
    sub, _secret = create_subscription(actor(admin), contoso.id,
                                       url="https://hooks.contoso.example/cleardesk",
                                       events=["item.created"])
    commit()
    item = make_item(contoso, kind="billing_exception", amount="75.00")
    message = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "item.created",
        OutboxMessage.tenant_id == contoso.id)).one()
    fan_out(message)
    commit()
    return contoso, sub, item


def test_an_admin_of_several_tenants_pauses_resumes_and_redelivers_from_the_log(page,
                                                                                 demo_admin):
    contoso, sub, _item = demo_admin
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    sign_in(page)
    page.goto(f"/admin/integrations/webhooks/?tenant={contoso.id}")
    # The admin frame picks among the admin's three tenants; the log is one of Contoso's webhooks.
    expect(page.locator(".tenant-pick a")).to_have_count(3)
    page.get_by_role("link", name="https://hooks.contoso.example/cleardesk").click()
    expect(page.get_by_role("heading", name="Webhook deliveries")).to_be_visible()
    expect(page.locator("#deliveries")).to_contain_text("item.created")
    expect(page.locator(".tenant-pick a")).to_have_count(3)
    page.screenshot(path=str(ARTIFACTS / "08-log-several-tenants.png"), full_page=True)

    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".notice-alert")).to_contain_text("Webhook paused")
    expect(page.get_by_role("button", name="Redeliver")).to_have_count(0)
    page.get_by_role("button", name="Resume and send what waits").click()
    expect(page.locator(".flash-success")).to_contain_text("Webhook resumed")
    page.get_by_role("button", name="Redeliver").click()
    expect(page.locator(".flash-success")).to_contain_text("queued again (same id)")
    expect(page.get_by_role("heading", name="Webhook deliveries")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "09-log-redelivered.png"), full_page=True)

    # The tenant picker on the log leads to each tenant's webhooks.
    page.locator(".tenant-pick").get_by_role("link", name="Fabrikam").click()
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("hooks.contoso.example")
