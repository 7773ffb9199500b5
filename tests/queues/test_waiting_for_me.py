"""Waiting for me: My work lists the approval steps routed to me (and to someone I stand in
for), not only what I claimed; the approvals queues list what I may decide now (role, limit,
segregation of duties); and the item says who its open step is routed to."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest

from app.admin.delegation import set_delegation
from app.approvals.services import approve_step
from app.extensions import db
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import actor


@pytest.fixture
def desk(make_tenant, make_user):
    tenant = make_tenant()
    return {
        "tenant": tenant,
        "rita": make_user("rita@x.test", [tenant], roles=("requester",), name="Rita"),
        "ann": make_user("ann@x.test", [tenant], roles=("approver", "requester"),
                         limit="60000", name="Ann Approver"),
        "max": make_user("max@x.test", [tenant], roles=("manager",), limit="1000000",
                         name="Max Manager"),
        "admin": make_user("admin@x.test", [tenant], roles=("admin",), name="Ada Admin"),
    }


def _ids(html):
    return {int(i) for i in re.findall(r'id="row-(\d+)"', html)}


def test_my_work_lists_the_steps_routed_to_me(auth, client, desk, make_item):
    small = make_item(desk["tenant"], amount="500.00", requester=desk["rita"])
    commit()
    auth.login("ann@x.test")
    assert _ids(client.get("/queues/mine").text) == {small.id}
    page = client.get(f"/items/{small.id}").text
    assert 'routed to <strong class="routed-to">Ann Approver</strong>' in page


def test_a_two_step_approval_moves_from_the_approvers_work_to_the_managers(
        auth, client, desk, make_item):
    big = make_item(desk["tenant"], amount="55000.00", requester=desk["rita"])
    commit()
    auth.login("max@x.test")
    assert big.id not in _ids(client.get("/queues/mine").text)
    assert big.id not in _ids(client.get("/queues/approvals").text)  # step 1 needs an approver
    approve_step(actor(desk["ann"]), big.id)
    commit()
    assert big.id in _ids(client.get("/queues/mine").text)
    assert big.id in _ids(client.get("/queues/approvals").text)
    auth.login("ann@x.test")
    # Ann approved step 1: step 2 is neither hers to decide nor in her queues.
    assert big.id not in _ids(client.get("/queues/approvals").text)
    assert big.id not in _ids(client.get("/queues/unassigned").text)
    assert big.id not in _ids(client.get("/queues/mine").text)


def test_the_approvals_queue_hides_my_own_requests_and_steps_above_my_limit(
        auth, client, desk, make_item):
    own = make_item(desk["tenant"], amount="500.00", requester=desk["ann"])
    too_big = make_item(desk["tenant"], amount="45000.00", requester=desk["rita"])
    db.session.get(type(too_big), too_big.id).steps[0].min_limit = 70000
    fine = make_item(desk["tenant"], amount="400.00", requester=desk["rita"])
    commit()
    auth.login("ann@x.test")
    listed = _ids(client.get("/queues/approvals").text)
    assert fine.id in listed and own.id not in listed and too_big.id not in listed
    counts = client.get("/queues/counts").text
    assert re.search(r'data-queue="approvals">1<', counts)
    # The manager's Team view keeps everything.
    auth.login("max@x.test")
    team = _ids(client.get("/queues/team").text)
    assert {own.id, too_big.id, fine.id} <= team


def test_my_work_lists_what_is_routed_to_someone_i_stand_in_for(auth, client, desk, make_user,
                                                                make_item):
    bea = make_user("bea@x.test", [desk["tenant"]], roles=("approver",), limit="60000",
                    name="Bea Backup")
    item = make_item(desk["tenant"], amount="500.00", requester=desk["rita"])
    commit()
    today = utcnow().date()
    set_delegation(actor(desk["admin"]), desk["tenant"].id, desk["ann"].id,
                   delegate_id=bea.id, first_day=today, last_day=today + timedelta(days=2),
                   kinds=["approval"], max_amount="")
    commit()
    auth.login("bea@x.test")
    assert item.id in _ids(client.get("/queues/mine").text)
    page = client.get(f"/items/{item.id}").text
    assert "their delegate Bea Backup decides" in page
