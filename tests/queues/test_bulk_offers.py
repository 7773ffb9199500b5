"""The bulk bar offers only the actions that can apply to what the queue shows: no Approve
where no approval can be, and nothing at all on decided items."""
import re

import pytest

from app.unit_of_work import commit


@pytest.fixture
def manager(make_tenant, make_user, make_item):
    tenant = make_tenant("northwind")
    requester = make_user("req@x.test", [tenant], roles=("requester",))
    make_item(tenant, requester=requester)
    make_item(tenant, kind="billing_exception")
    make_item(tenant, kind="settlement_dispute")
    commit()
    return make_user("manager@x.test", [tenant], roles=("manager",), limit="1000000")


def bulk_actions(html: str) -> list[str]:
    form = re.search(r'<form id="bulk-form".*?</form>', html, re.S).group(0)
    return re.findall(r'name="action" value="([a-z]+)"', form)


@pytest.mark.parametrize("path, offered", [
    ("/queues/team", ["approve", "claim", "release", "reassign"]),
    ("/queues/approvals", ["approve", "claim", "release", "reassign"]),
    ("/queues/team?kind=approval", ["approve", "claim", "release", "reassign"]),
    ("/queues/exceptions", ["claim", "release", "reassign"]),
    ("/queues/disputes", ["claim", "release", "reassign"]),
    ("/queues/team?kind=billing_exception", ["claim", "release", "reassign"]),
    ("/queues/team?status=closed", []),
    ("/queues/approvals?status=closed", []),
])
def test_the_bulk_bar_offers_only_actions_that_can_apply(manager, client, auth, path, offered):
    auth.login("manager@x.test")
    page = client.get(path)
    assert page.status_code == 200
    assert bulk_actions(page.text) == offered
    if not offered:
        assert "These items are decided: nothing to act on." in page.text
