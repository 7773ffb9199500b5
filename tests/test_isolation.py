"""Cross-tenant access: a member of one tenant can neither see nor change another tenant's
work, through the pages or the service layer; and an auditor reads but changes nothing."""
import re

import pytest
from sqlalchemy import func, select

from app.admin.people import grant_membership
from app.approvals.services import approve_step
from app.audit.models import AuditEvent
from app.errors import NotFound, PermissionDenied
from app.extensions import db
from app.models import WorkItem
from app.work.services import add_comment, claim_item, release_item
from app.work.queries import get_item
from app.unit_of_work import commit
from tests.conftest import SYSTEM, actor, csrf_from

HTMX = {"HX-Request": "true"}





@pytest.fixture
def tenant_a(make_tenant):
    return make_tenant("northwind")


@pytest.fixture
def tenant_b(make_tenant):
    return make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")


@pytest.fixture
def item_a(tenant_a, make_item):
    return make_item(tenant_a, amount="1200.00")


@pytest.fixture
def item_b(tenant_b, make_item):
    return make_item(tenant_b, amount="1300.00")


@pytest.fixture
def outsider(make_user, tenant_b):
    """Works in tenant B with every role that acts, including manager (team queue)."""
    return make_user("outsider@example.com", tenants=[tenant_b],
                     roles=("approver", "analyst", "manager"), limit="1000000")


@pytest.fixture
def auditor(make_user, tenant_a):
    return make_user("auditor@example.com", tenants=[tenant_a], roles=("auditor",))


def _snapshot(item_id: int) -> tuple:
    db.session.expire_all()
    item = db.session.get(WorkItem, item_id)
    events = db.session.scalar(select(func.count()).select_from(AuditEvent)
                               .where(AuditEvent.item_id == item_id))
    return item.state, item.version, item.assignee_id, [s.state for s in item.steps], events


def _all_events() -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEvent))


# ---------------------------------------------------------------------------------------------
# A member of tenant B against tenant A's work.


def _normalised(page: str, own_path: str) -> str:
    page = page.replace(own_path, "/items/ID")
    return re.sub(r'(name="csrf_token" value=|"X-CSRFToken": )"[^"]+"', r'\1"TOKEN"', page)


def test_item_of_another_tenant_is_404_and_indistinguishable_from_a_missing_one(
        client, auth, outsider, item_a):
    auth.login("outsider@example.com")

    foreign = client.get(f"/items/{item_a.id}")
    missing = client.get("/items/987654321")

    assert foreign.status_code == missing.status_code == 404
    # Identical but for the page's own address (the tenant switcher's `next`) and the CSRF
    # token, which carries the second it was signed in.
    assert (_normalised(foreign.text, f"/items/{item_a.id}")
            == _normalised(missing.text, "/items/987654321"))
    assert item_a.external_ref not in foreign.text


def test_htmx_request_for_an_item_of_another_tenant_is_404(client, auth, outsider, item_a):
    auth.login("outsider@example.com")
    response = client.get(f"/items/{item_a.id}", headers=HTMX)
    assert response.status_code == 404
    assert item_a.external_ref not in response.text


@pytest.mark.parametrize("action", ["claim", "approve", "reject", "request_info", "release"])
@pytest.mark.parametrize("headers", [{}, HTMX], ids=["page", "htmx"])
def test_acting_on_an_item_of_another_tenant_is_404_and_changes_nothing(
        client, auth, outsider, item_a, action, headers):
    auth.login("outsider@example.com")
    token = auth.csrf("/queues/mine")
    before = _snapshot(item_a.id)
    events_before = _all_events()

    response = client.post(f"/items/{item_a.id}/act", headers=headers, data={
        "csrf_token": token, "action": action, "version": item_a.version,
        "comment": "Looks fine to me"})

    assert response.status_code == 404
    assert _snapshot(item_a.id) == before
    assert _all_events() == events_before


def test_commenting_on_an_item_of_another_tenant_is_404_and_writes_nothing(
        client, auth, outsider, item_a):
    auth.login("outsider@example.com")
    events_before = _all_events()

    response = client.post(f"/items/{item_a.id}/comment", data={
        "csrf_token": auth.csrf("/queues/mine"), "comment": "Peeking in"})

    assert response.status_code == 404
    assert _all_events() == events_before


@pytest.mark.parametrize("queue", ["mine", "unassigned", "team"])
def test_queues_never_list_another_tenants_items(
        client, auth, outsider, tenant_a, tenant_b, item_a, item_b, make_item, queue):
    # Tenant A has work of every kind, assigned and unassigned, that B's roles could work.
    others = [item_a,
              make_item(tenant_a, kind="billing_exception"),
              make_item(tenant_a, kind="settlement_dispute")]
    mine_in_b = make_item(tenant_b, kind="billing_exception")
    claim_item(actor(outsider), mine_in_b.id)
    commit()
    auth.login("outsider@example.com")

    page = client.get(f"/queues/{queue}")
    more = client.get(f"/queues/{queue}", query_string={"before": 10**9}, headers=HTMX)

    assert page.status_code == more.status_code == 200
    expected_b = {"mine": mine_in_b, "unassigned": item_b, "team": item_b}[queue]
    assert expected_b.external_ref in page.text  # the page does list work
    for other in others:
        assert other.external_ref not in page.text
        assert other.external_ref not in more.text
    assert "Northwind" not in page.text


def test_switching_to_a_tenant_one_is_not_a_member_of_is_404(
        client, auth, outsider, tenant_a, item_a):
    auth.login("outsider@example.com")
    response = client.post("/tenant", data={"csrf_token": auth.csrf("/queues/mine"),
                                            "tenant_id": tenant_a.id, "next": "/queues/team"})
    assert response.status_code == 404
    assert item_a.external_ref not in client.get("/queues/team").text


@pytest.mark.parametrize("call", [
    lambda who, item: get_item(who, item.id),
    lambda who, item: claim_item(who, item.id),
    lambda who, item: release_item(who, item.id),
    lambda who, item: approve_step(who, item.id),
    lambda who, item: add_comment(who, item.id, "Peeking in"),
], ids=["get_item", "claim_item", "release_item", "approve_step", "add_comment"])
def test_service_layer_refuses_another_tenants_item_as_not_found(outsider, item_a, call):
    before = _snapshot(item_a.id)

    with pytest.raises(NotFound):
        call(actor(outsider), item_a)

    db.session.rollback()
    assert _snapshot(item_a.id) == before


# ---------------------------------------------------------------------------------------------
# An auditor reads everything in their tenant and changes nothing.


def test_auditor_can_view_an_item_but_is_offered_no_actions(client, auth, auditor, item_a):
    auth.login("auditor@example.com")

    response = client.get(f"/items/{item_a.id}")

    assert response.status_code == 200
    assert item_a.external_ref in response.text
    assert 'name="action"' not in response.text
    assert f'action="/items/{item_a.id}/comment"' not in response.text


@pytest.mark.parametrize("action", ["claim", "approve", "reject", "request_info"])
def test_auditor_action_by_htmx_is_refused_with_403_and_changes_nothing(
        client, auth, auditor, item_a, action):
    auth.login("auditor@example.com")
    before = _snapshot(item_a.id)

    response = client.post(f"/items/{item_a.id}/act", headers=HTMX, data={
        "csrf_token": auth.csrf(f"/items/{item_a.id}"), "action": action,
        "version": item_a.version, "comment": "Auditors should not decide"})

    assert response.status_code == 403
    assert "flash-error" in response.text
    assert response.headers["HX-Retarget"] == "#messages"
    assert _snapshot(item_a.id) == before


def test_auditor_action_from_a_plain_form_is_refused_with_a_clear_message(
        client, auth, auditor, item_a):
    # Auditing is all they do: the route's declared access refuses them, item unread.
    auth.login("auditor@example.com")
    before = _snapshot(item_a.id)

    response = client.post(f"/items/{item_a.id}/act", follow_redirects=True, data={
        "csrf_token": auth.csrf(f"/items/{item_a.id}"), "action": "approve",
        "version": item_a.version})

    assert response.status_code == 403
    assert "Only analysts, approvers, managers and requesters can use this." in response.text
    assert _snapshot(item_a.id) == before


def test_auditor_who_approves_in_another_tenant_is_told_why_on_the_item(
        client, auth, make_user, tenant_a, tenant_b, item_a):
    # They pass the route's access (they act somewhere); the item's own tenant refuses them.
    both = make_user("both@example.com", tenants=[tenant_a], roles=("auditor",))
    grant_membership(SYSTEM, user=both, tenant=tenant_b, roles=["approver"],
                     approval_limit="100000")
    commit()
    auth.login("both@example.com")
    before = _snapshot(item_a.id)

    response = client.post(f"/items/{item_a.id}/act", follow_redirects=True, data={
        "csrf_token": auth.csrf(f"/items/{item_a.id}"), "action": "approve",
        "version": item_a.version})

    assert "do not allow you to approve" in response.text
    assert "flash-error" in response.text
    assert _snapshot(item_a.id) == before


def test_auditor_comment_is_refused_with_403_and_writes_nothing(client, auth, auditor, item_a):
    auth.login("auditor@example.com")
    before = _snapshot(item_a.id)

    response = client.post(f"/items/{item_a.id}/comment", data={
        "csrf_token": auth.csrf(f"/items/{item_a.id}"), "comment": "An auditor's remark"})

    assert response.status_code == 403
    assert _snapshot(item_a.id) == before


@pytest.mark.parametrize("call", [
    lambda who, item: claim_item(who, item.id),
    lambda who, item: approve_step(who, item.id),
    lambda who, item: add_comment(who, item.id, "An auditor's remark"),
], ids=["claim_item", "approve_step", "add_comment"])
def test_service_layer_refuses_the_auditor_every_change(auditor, item_a, call):
    before = _snapshot(item_a.id)

    with pytest.raises(PermissionDenied):
        call(actor(auditor), item_a)

    db.session.rollback()
    assert _snapshot(item_a.id) == before


def test_auditor_is_refused_the_same_way_on_a_claimed_item(
        client, auth, auditor, make_user, tenant_a, item_a):
    approver = make_user("approver@example.com", tenants=[tenant_a])
    claim_item(actor(approver), item_a.id)
    commit()
    auth.login("auditor@example.com")
    page = client.get(f"/items/{item_a.id}")
    assert 'name="action"' not in page.text  # no Release either
    before = _snapshot(item_a.id)

    response = client.post(f"/items/{item_a.id}/act", headers=HTMX, data={
        "csrf_token": csrf_from(page.text), "action": "release", "version": item_a.version})

    assert response.status_code == 403
    assert _snapshot(item_a.id) == before
