"""A requester's own pages: raise a request (the subtype's fields, the same write path as the
API, one request for a double submit, errors beside their fields) and see one's requests with
where each waits, the ones needing an answer on top."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.approvals.services import request_info
from app.extensions import db
from app.models import WorkItem
from app.unit_of_work import commit
from tests.conftest import actor, csrf_from


@pytest.fixture
def people(make_tenant, make_user):
    tenant = make_tenant()
    return {
        "tenant": tenant,
        "rita": make_user("rita@x.test", [tenant], roles=("requester",), name="Rita Requester"),
        "ann": make_user("ann@x.test", [tenant], roles=("approver",), limit="90000",
                         name="Ann Approver"),
    }


def _form(client, subtype="discount"):
    page = client.get(f"/requests/new?subtype={subtype}")
    assert page.status_code == 200
    key = re.search(r'name="request_key" type="hidden" value="([0-9a-f]{32})"', page.text)
    return {"csrf_token": csrf_from(page.text), "request_key": key.group(1), "subtype": subtype,
            "tenant_id": "", "counterparty": "Acme Labs", "amount": "1200.00",
            "reason": "Renewal at risk", "discount_pct": "12", "contract_term_months": "24"}


def _count():
    return db.session.scalar(select(func.count()).select_from(WorkItem))


def test_a_requester_signs_in_to_their_requests_not_an_empty_queue(auth, client, people):
    response = auth.login("rita@x.test")
    assert response.headers["Location"].endswith("/") or "requests" in response.headers["Location"]
    home = client.get("/")
    assert home.status_code == 302 and home.headers["Location"].endswith("/requests/")
    page = client.get("/requests/")
    assert "You have no requests yet" in page.text and "New request" in page.text


def test_a_discount_request_goes_through_the_write_path_once_for_a_double_submit(
        auth, client, people):
    auth.login("rita@x.test")
    form = _form(client)
    form["tenant_id"] = str(people["tenant"].id)
    first = client.post("/requests/new", data=form)
    assert first.status_code == 303, first.text
    again = client.post("/requests/new", data=form)  # the same key: a double click
    assert again.status_code == 303 and again.headers["Location"] == first.headers["Location"]
    assert _count() == 1
    item = db.session.scalars(select(WorkItem)).one()
    assert item.requester_id == people["rita"].id and item.source_system == "cleardesk"
    assert item.subtype == "discount" and item.title == "Discount for Acme Labs"
    assert item.details == {"discount_pct": "12", "contract_term_months": 24,
                            "reason": "Renewal at risk"}
    assert item.steps and item.steps[0].role == "approver"  # routed like any other item
    listed = client.get("/requests/").text
    assert "Discount for Acme Labs" in listed and "Step 1 of 1: waiting on Ann Approver" in listed


@pytest.mark.parametrize("change, field, words", [
    ({"discount_pct": ""}, "discount_pct", "is required"),
    ({"amount": "-1200"}, "amount", "must be more than zero"),
    ({"amount": "12.345"}, "amount", "at most two decimals"),
    ({"reason": " "}, "reason", "say why"),
    ({"discount_pct": "lots"}, "discount_pct", "must be a decimal"),
])
def test_a_bad_request_re_renders_with_the_message_beside_its_field(
        auth, client, people, change, field, words):
    auth.login("rita@x.test")
    form = dict(_form(client), tenant_id=str(people["tenant"].id), **change)
    response = client.post("/requests/new", data=form)
    assert response.status_code == 422
    label = response.text.split(f'for="f-{field}"' if field not in ("amount", "reason")
                                else f'for="{field}"')[1].split("</label>")[0]
    assert words in label
    assert _count() == 0


def test_a_purchase_request_asks_for_its_own_fields(auth, client, people):
    auth.login("rita@x.test")
    page = client.get("/requests/new?subtype=purchase_request").text
    assert 'name="cost_centre"' in page and 'name="gl_account"' in page
    assert 'name="discount_pct"' not in page


def test_a_question_from_the_approver_tops_the_requesters_list(auth, client, people, make_item):
    older = make_item(people["tenant"], requester=people["rita"])
    asked = make_item(people["tenant"], requester=people["rita"])
    newer = make_item(people["tenant"], requester=people["rita"])
    commit()
    request_info(actor(people["ann"]), asked.id, question="Which contract?")
    commit()
    auth.login("rita@x.test")
    page = client.get("/requests/").text
    assert "Needs your answer" in page
    rows = re.findall(r'id="request-(\d+)"', page)
    assert rows[0] == str(asked.id) and set(rows) == {str(older.id), str(asked.id), str(newer.id)}
    assert "Waiting on your answer" in page


def test_only_requesters_may_raise_requests(auth, client, people):
    auth.login("ann@x.test")
    assert client.get("/requests/new").status_code == 403


def test_choosing_another_subtype_redraws_the_form_with_its_fields(auth, client, people):
    auth.login("rita@x.test")
    form = dict(_form(client), subtype="purchase_request", refresh="1")
    response = client.post("/requests/new", data=form, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert 'name="cost_centre"' in response.text and 'name="discount_pct"' not in response.text
    assert "<html" not in response.text  # the form only, swapped in place
    assert _count() == 0
