"""The email-link pages in a real Chromium: the decision, its confirmation, and each refusal
render with their own clear message; screenshots go to test-artifacts/email-links/."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.approvals.links import issue_link
from app.approvals.services import approve_step, withdraw
from app.extensions import db
from app.models import WorkItem
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import PASSWORD, actor, arrange

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "email-links"


@pytest.fixture
def team(make_tenant, make_user):
    tenant = make_tenant()
    tenant.brand_name, tenant.brand_color = "Northwind Finance", "#0f766e"
    commit()
    return {
        "tenant": tenant,
        "requester": make_user("req@x.test", [tenant], roles=("requester",),
                               name="Rita Requester"),
        "approver": make_user("ann@x.test", [tenant], roles=("approver",), limit="60000",
                              name="Ann Approver"),
        "manager": make_user("max@x.test", [tenant], roles=("manager",), limit="1000000",
                             name="Max Manager"),
    }


def _link(team, make_item, amount="1200.00", title=None) -> tuple[WorkItem, str]:
    item = make_item(team["tenant"], amount=amount, requester=team["requester"],
                     details={"reason": "Three-year renewal; competitor quoted 18% lower"})
    if title:
        arrange(item, title=title)
    step = item.current_step()
    token, _row = issue_link(item, step, team["approver"])
    commit()
    return item, f"/a/{token}"


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _status(page, status: str, heading: str) -> None:
    expect(page.locator("article.link-card")).to_have_attribute("data-link-status", status)
    expect(page.locator("h1")).to_contain_text(heading)


def test_the_decision_page_its_confirmation_and_a_reused_link(page, team, make_item):
    item, path = _link(team, make_item, title="Discount for Globex renewal")
    page.goto(path)
    _status(page, "ok", "Approve or reject")
    expect(page.locator(".amount")).to_have_text("USD 1,200.00")
    expect(page.get_by_text("competitor quoted 18% lower")).to_be_visible()
    _shot(page, "01-decision")
    page.get_by_role("button", name="Approve").click()
    _status(page, "done", "Approved")
    expect(page.get_by_text("You approved")).to_be_visible()
    _shot(page, "02-approved")
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "approved"
    page.goto(path)
    _status(page, "used", "This link has already been used")
    expect(page.locator("p.lead")).to_contain_text("Ann Approver approved this with the link")
    _shot(page, "03-used")


def test_rejecting_needs_a_reason_in_the_browser(page, team, make_item):
    item, path = _link(team, make_item)
    page.goto(path)
    page.get_by_role("button", name="Reject").click()  # the browser asks for the reason first
    _status(page, "ok", "Approve or reject")
    page.get_by_label("Reason for rejecting").fill("Competitor quote not attached")
    page.get_by_role("button", name="Reject").click()
    _status(page, "done", "Rejected")
    _shot(page, "04-rejected")
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "rejected"


def test_each_refusal_has_its_own_page(page, team, make_item):
    _item, path = _link(team, make_item)
    token = path.rsplit("/", 1)[1]
    page.goto(f"/a/{token[:-4]}AAAA")
    _status(page, "tampered", "This link is not valid")
    _shot(page, "05-tampered")

    from app.approvals.models import ApprovalLinkToken
    from sqlalchemy import select

    expired_item, expired = _link(team, make_item)
    row = db.session.scalars(select(ApprovalLinkToken).where(
        ApprovalLinkToken.item_id == expired_item.id)).one()
    row.expires_at = utcnow() - timedelta(hours=1)
    commit()
    page.goto(expired)
    _status(page, "expired", "This link has expired")
    _shot(page, "06-expired")

    changed, superseded = _link(team, make_item)
    arrange(changed, amount=Decimal("9800.00"))
    page.goto(superseded)
    _status(page, "superseded", "The item changed after this link was sent")
    expect(page.locator("p.lead")).to_contain_text("USD 9,800.00")
    _shot(page, "07-superseded")

    decided_item, decided = _link(team, make_item)
    approve_step(actor(team["approver"]), decided_item.id)
    commit()
    page.goto(decided)
    _status(page, "decided", "This step was already decided")
    expect(page.locator("p.lead")).to_contain_text("Ann Approver approved step 1")
    _shot(page, "08-decided")

    withdrawn_item, withdrawn = _link(team, make_item)
    withdraw(actor(team["requester"]), withdrawn_item.id, comment="Deal fell through")
    commit()
    page.goto(withdrawn)
    _status(page, "revoked", "This link no longer applies")
    expect(page.locator("p.lead")).to_contain_text("withdrawn")
    _shot(page, "09-revoked")

    _limited_item, limited = _link(team, make_item)
    team["approver"].membership_in(team["tenant"].id).approval_limit = Decimal("500.00")
    commit()
    page.goto(limited)
    _status(page, "not_permitted", "You can no longer decide this")
    expect(page.locator("p.lead")).to_contain_text("USD 500.00")
    _shot(page, "10-not-permitted")


def test_step_up_asks_for_sign_in_and_refuses_another_user(page, app, team, make_item):
    app.config["EMAIL_LINK_STEP_UP_ABOVE"] = "1000"
    item, path = _link(team, make_item, amount="45000.00")
    page.goto(path)
    _status(page, "ok", "Approve or reject")
    expect(page.get_by_text("need you to sign in")).to_be_visible()
    _shot(page, "11-step-up")

    page.get_by_role("button", name="Sign in to decide").click()
    page.get_by_label("Email").fill("max@x.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"**{path}")
    _status(page, "wrong_user", "This link is for someone else")
    _shot(page, "12-wrong-user")
    page.context.clear_cookies()

    page.goto(path)
    page.get_by_role("button", name="Sign in to decide").click()
    page.get_by_label("Email").fill("ann@x.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"**{path}")
    page.get_by_role("button", name="Approve").click()
    _status(page, "done", "Approved")
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "approved"
