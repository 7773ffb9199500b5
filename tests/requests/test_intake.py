"""Who asked: every intake names its requester (the app, the API's requester_email, the CSV
column), a member of the tenant, so segregation of duties holds whatever the channel; and a
requester-only member sees their own requests, nothing else of the tenant."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.errors import NotFound, SegregationOfDuties
from app.extensions import db
from app.models import WorkItem
from app.unit_of_work import commit
from app.approvals.services import approve_step
from app.work.queries import get_item
from tests.api.conftest import BearerClient, item_payload, make_token  # noqa: F401 (a fixture)
from tests.conftest import actor
from tests.imports.test_imports import BILLING_HEADER, _errors, _upload


@pytest.fixture
def team(make_tenant, make_user):
    tenant = make_tenant()
    other = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    return {
        "tenant": tenant,
        "rita": make_user("rita@x.test", [tenant], roles=("requester",), name="Rita"),
        "ann": make_user("ann@x.test", [tenant], roles=("approver", "requester"), limit="90000"),
        "stranger": make_user("stranger@x.test", [other], roles=("requester",)),
        "analyst": make_user("analyst@x.test", [tenant], roles=("analyst",)),
    }


def _approval(**extra):
    return item_payload(kind="approval", subtype="refund", title="Refund to Acme", details={},
                        amount="500.00", external_ref="CRM-1", source_system="crm", **extra)


def test_the_api_records_who_asked_and_they_may_not_approve_it(client, team, make_token):
    api = BearerClient(client, make_token(team["tenant"]))
    response = api.post("/api/v1/items", json=_approval(requester_email="ANN@x.test"))
    assert response.status_code == 201, response.text
    item = db.session.get(WorkItem, response.get_json()["id"])
    assert item.requester_id == team["ann"].id
    with pytest.raises(SegregationOfDuties, match="You requested this item"):
        approve_step(actor(team["ann"]), item.id)


@pytest.mark.parametrize("email", ["stranger@x.test", "nobody@x.test"])
def test_the_api_refuses_a_requester_who_is_not_a_member(client, team, make_token, email):
    api = BearerClient(client, make_token(team["tenant"]))
    response = api.post("/api/v1/items", json=_approval(requester_email=email))
    assert response.status_code == 422
    assert "requester_email" in response.text and "not an active member" in response.text
    assert db.session.scalars(select(WorkItem)).first() is None


def test_a_csv_row_names_its_requester_or_is_refused_naming_the_column(auth, client, team):
    auth.login("analyst@x.test")
    header = BILLING_HEADER.strip() + ",requester_email\n"
    text = header + ("EX-1,INV-1,Acme,payment_failed,120.00,USD,us,rita@x.test\n"
                     "EX-2,INV-2,Acme,payment_failed,120.00,USD,us,stranger@x.test\n")
    rows = _errors(client.get(_upload(client, text).headers["Location"]).text)
    assert rows == [("3", "requester_email", "is not an active member of this tenant")]


def test_a_requester_only_member_sees_their_own_requests_and_nothing_else(
        team, make_item):
    own = make_item(team["tenant"], requester=team["rita"])
    others = make_item(team["tenant"], requester=team["ann"])
    case = make_item(team["tenant"], kind="billing_exception")
    commit()
    rita = actor(team["rita"])
    assert get_item(rita, own.id).id == own.id
    for hidden in (others, case):
        with pytest.raises(NotFound):
            get_item(rita, hidden.id)
    # An approver who is also a requester still sees the tenant's work.
    assert get_item(actor(team["ann"]), case.id).id == case.id


def test_a_requester_only_member_gets_404_for_another_item_page(auth, client, team, make_item):
    others = make_item(team["tenant"], requester=team["ann"])
    case = make_item(team["tenant"], kind="billing_exception")
    commit()
    auth.login("rita@x.test")
    assert client.get(f"/items/{others.id}").status_code == 404
    assert client.get(f"/items/{case.id}").status_code == 404
