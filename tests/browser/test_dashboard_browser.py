"""In a real Chromium, a manager opens the dashboard: the charts render as SVG with their
patterns and printed values, and a bar of a chart opens the items behind it in the queue."""
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.extensions import db
from app.models import Tenant
from app.unit_of_work import commit

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"


@pytest.fixture
def seeded(runner):
    result = runner.invoke(args=["seed-demo", "--items", "600"])
    assert result.exit_code == 0, result.output
    commit()


def sign_in_as_manager(page):
    page.goto("/login")
    page.get_by_label("Email").fill("manager@cleardesk.demo")
    page.get_by_label("Password").fill("demo-password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queues/mine$"))


def test_the_dashboard_renders_its_charts_and_a_bar_opens_the_items(page, seeded):
    northwind = db.session.scalars(select(Tenant).where(Tenant.slug == "northwind")).one()
    sign_in_as_manager(page)
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name=re.compile("^Dashboard"))).to_be_visible()
    scope = page.locator("form.dash-scope").first
    scope.get_by_label("Tenant").select_option(str(northwind.id))
    scope.get_by_label("Last").select_option("30")
    scope.get_by_role("button", name="Show", exact=True).click()
    page.wait_for_url(re.compile(rf"tenant={northwind.id}"))

    charts = page.locator("figure svg.pygal-chart")
    expect(charts).to_have_count(7)
    for index in range(7):
        box = charts.nth(index).bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100, index
    # Bars carry a fill pattern (not colour alone), and the values are printed on them.
    fills = page.eval_on_selector_all(
        "figure svg.pygal-chart .series rect.rect",
        "els => [...new Set(els.map(e => getComputedStyle(e).fill))]")
    assert any("cd-fill-1" in f for f in fills) and any("cd-fill-0" in f for f in fills)
    expect(page.locator("#attainment svg .text-overlay text.value").first).to_be_visible()
    # A closed table is fetched when opened.
    page.get_by_text("Turnaround by approver — table").click()
    expect(page.locator("#turnaround .lazy-table table").get_by_text("Avery Approver")).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Drill down: the "Breached" bar of billing exceptions opens those items in the queue.
    bar = page.locator("#attainment svg .series.serie-1 a").nth(1)
    href = bar.get_attribute("xlink:href") or bar.get_attribute("href")
    assert "sla=breached" in href and "kind=billing_exception" in href
    bar.locator("rect").click(force=True)
    page.wait_for_url(re.compile(r"/queues/team\?.*sla=breached"))
    expect(page.get_by_text("From the dashboard:")).to_be_visible()
    rows = page.locator("tr[id^=row-]")
    expect(rows.first).to_be_visible()
    assert rows.count() >= 1
    assert all("Billing exception" in t or "billing" in t.lower()
               for t in rows.all_inner_texts())
    page.screenshot(path=str(ARTIFACTS / "drill-down.png"), full_page=True)
