"""axe-core, in a real Chromium, finds no WCAG 2 A/AA violation on the main pages each demo role
uses, at a desk (1440×900) and on a phone (390×844), with a queue item open in the pane.

axe-core is npm's package, pinned in tests/browser/axe/ and installed by `make test`
(scripts/bootstrap.sh, ensure_axe_core), which passes its path in CLEARDESK_TEST_AXE."""
import os

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.extensions import db
from app.models import Tenant, WorkItem
from app.unit_of_work import commit
from tests.browser.conftest import sign_in_as_demo

pytestmark = pytest.mark.browser

WCAG_A_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
VIEWPORTS = {"desk": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
def axe_path():
    path = os.environ.get("CLEARDESK_TEST_AXE")
    if not path or not os.path.exists(path):
        pytest.exit("CLEARDESK_TEST_AXE is not set: run the suite with `make test`, which "
                    "installs axe-core", returncode=2)
    return path


@pytest.fixture
def seeded(runner):
    # Enough that every queue has open work: the demo keeps about a day of arrivals open.
    result = runner.invoke(args=["seed-demo", "--items", "2000"])
    assert result.exit_code == 0, result.output
    commit()


def _pages(role: str) -> list[str]:
    """The main pages of a role ("path|selector" opens the first match after loading)."""
    contoso = db.session.scalars(select(Tenant).where(Tenant.slug == "contoso")).one()
    item = db.session.scalars(select(WorkItem).where(WorkItem.tenant_id == contoso.id)
                              .order_by(WorkItem.id)).first()
    open_first = "|#rows a.open-item"
    return {
        "requester": ["/requests/", "/requests/new", "/requests/|.needs-answer a",
                      "/account/out-of-office"],
        "approver": ["/queues/unassigned" + open_first, "/queues/approvals",
                     f"/items/{item.id}", "/account/out-of-office"],
        "analyst": ["/queues/exceptions" + open_first, "/queues/disputes" + open_first,
                    "/imports/"],
        "manager": ["/dashboard", "/queues/team" + open_first, "/queues/team?status=closed",
                    "/imports/"],
        "admin": ["/admin/", "/admin/t/contoso/", "/admin/t/contoso/people",
                  "/admin/t/contoso/closures", "/admin/t/contoso/branding",
                  "/admin/t/contoso/single-sign-on",
                  "/admin/t/contoso/policy/", "/admin/t/contoso/policy/|.versions a",
                  "/admin/integrations/tokens",
                  "/admin/integrations/webhooks/", "/admin/mail/", "/audit/"],
        "auditor": ["/audit/", "/audit/access-review", "/audit/|.audit-table .seq a"],
    }[role]


def violations(page, axe_path) -> list[str]:
    page.add_script_tag(path=axe_path)
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                           WCAG_A_AA)
    return [f"{v['id']} ({v['impact']}): {v['help']} — "
            + "; ".join(" ".join(n["target"]) for n in v["nodes"][:5])
            for v in result["violations"]]


@pytest.mark.parametrize("role", ["requester", "approver", "analyst", "manager", "admin",
                                  "auditor"])
def test_main_pages_have_no_wcag_a_or_aa_violation(chromium, live_server, seeded, axe_path, role):
    found = {}
    for name, viewport in VIEWPORTS.items():
        # The page's CSP refuses injected scripts; the test browser lets axe in.
        context = chromium.new_context(base_url=live_server, viewport=viewport, bypass_csp=True)
        context.set_default_timeout(15_000)
        page = context.new_page()
        try:
            if role == "requester" and name == "desk":
                page.goto("/login")
                found[f"{name} /login"] = violations(page, axe_path)
            sign_in_as_demo(page, role)
            for entry in _pages(role):
                path, _, click = entry.partition("|")
                page.goto(path)
                page.wait_for_load_state("networkidle")
                if click:
                    page.locator(click).first.click()
                    page.wait_for_load_state("networkidle")
                    if click.startswith("#rows"):
                        expect(page.locator("#pane #item-panel")).to_be_visible()
                found[f"{name} {entry}"] = violations(page, axe_path)
        finally:
            context.close()
    problems = [f"{where}: {v}" for where, found_there in found.items() for v in found_there]
    assert not problems, "axe-core found:\n" + "\n".join(problems)
    assert len(found) >= 2 * len(_pages(role))
