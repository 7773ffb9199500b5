"""The comment box offers the tenant's members after an @, from the keyboard: typing filters
them, the arrow keys choose, Enter inserts the address, and the comment then mentions them."""
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.extensions import db
from app.work.mentions import ItemMention
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "mentions"


def test_a_colleague_is_mentioned_from_the_keyboard(page, make_tenant, make_user, make_item):
    tenant = make_tenant("northwind")
    make_user("ann@example.com", [tenant], roles=("approver",), limit="50000",
              name="Ann Approver")
    cora = make_user("cora@example.com", [tenant], roles=("requester",), name="Cora Controller")
    make_user("carl@example.com", [tenant], roles=("analyst",), name="Carl Clerk")
    make_user("cordelia@elsewhere.test", [make_tenant("contoso")], roles=("approver",),
              name="Cordelia Elsewhere")
    item = make_item(tenant, amount="900.00")

    page.goto("/login")
    page.get_by_label("Email").fill("ann@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/queues/mine$"))
    page.goto(f"/items/{item.id}")
    box = page.get_by_label("Comment", exact=True)
    box.click()
    box.press_sequentially("Can you confirm this @c")
    options = page.locator(f"#mentions-{item.id} [role=option]")
    expect(options).to_have_count(2)  # Carl and Cora, not another tenant's Cordelia
    expect(options.nth(0)).to_have_attribute("aria-selected", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "mention-list.png"), full_page=True)
    box.press_sequentially("o")
    expect(options).to_have_count(1)
    expect(options.first).to_contain_text("Cora Controller")
    box.press("ArrowDown")
    box.press("Enter")
    expect(page.locator(f"#mentions-{item.id}")).to_be_hidden()
    expect(box).to_have_value("Can you confirm this @cora@example.com ")
    box.press_sequentially("before Friday?")
    page.get_by_role("button", name="Comment").click()
    expect(page.locator(".timeline")).to_contain_text("@cora@example.com before Friday?")
    db.session.rollback()
    assert db.session.scalars(select(ItemMention.user_id)).all() == [cora.id]

    box = page.get_by_label("Comment", exact=True)
    box.press_sequentially("@zz")
    expect(page.locator(f"#mentions-{item.id}")).to_contain_text("No member of this team matches")
    box.press("Escape")
    expect(page.locator(f"#mentions-{item.id}")).to_be_hidden()
