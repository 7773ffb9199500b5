"""Evidence files in the browser's pages: sent with a new request or from the item's pane,
refused with a message beside the field (never a 500, never half a request), and downloaded
only by those who may see the item, as a download the browser may not sniff."""
from __future__ import annotations

import hashlib
import io
import re

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import WorkItem
from app.work.attachments import Attachment, Upload, add_attachments
from app.unit_of_work import commit
from tests.conftest import actor, csrf_from
from tests.work.test_attachments import EXE, PDF

SHA = hashlib.sha256(PDF).hexdigest()


@pytest.fixture
def people(make_tenant, make_user):
    tenant = make_tenant()
    other = make_tenant("contoso")
    return {
        "tenant": tenant,
        "rita": make_user("rita@x.test", [tenant], roles=("requester",), name="Rita Requester"),
        "rob": make_user("rob@x.test", [tenant], roles=("requester",), name="Rob Requester"),
        "ann": make_user("ann@x.test", [tenant], roles=("approver",), limit="90000",
                         name="Ann Approver"),
        "audrey": make_user("audrey@x.test", [tenant], roles=("auditor",)),
        "olga": make_user("olga@y.test", [other], roles=("approver", "manager"),
                          limit="90000"),
    }


def _request_form(client):
    page = client.get("/requests/new?subtype=discount")
    key = re.search(r'name="request_key" type="hidden" value="([0-9a-f]{32})"', page.text)
    return {"csrf_token": csrf_from(page.text), "request_key": key.group(1),
            "subtype": "discount", "counterparty": "Acme Labs", "amount": "1200.00",
            "reason": "Renewal at risk", "discount_pct": "12", "contract_term_months": "24"}


def _items() -> int:
    return db.session.scalar(select(func.count()).select_from(WorkItem))


def test_a_request_is_submitted_with_its_files(auth, client, people):
    auth.login("rita@x.test")
    form = _request_form(client)
    form["tenant_id"] = str(people["tenant"].id)
    form["files"] = [(io.BytesIO(PDF), "quote.pdf"), (io.BytesIO(b"a,b\n1,2\n"), "lines.csv")]
    sent = client.post("/requests/new", data=form, content_type="multipart/form-data")
    assert sent.status_code == 303, sent.text
    item = db.session.scalars(select(WorkItem)).one()
    names = [a.file_name for a in db.session.scalars(
        select(Attachment).where(Attachment.item_id == item.id).order_by(Attachment.id))]
    assert names == ["quote.pdf", "lines.csv"]
    page = client.get(sent.headers["Location"])
    assert "quote.pdf" in page.text and SHA[:12] in page.text and "Rita Requester" in page.text
    assert "2 files" in client.get("/requests/").text


def test_a_refused_file_comes_back_on_the_form_and_makes_no_request(auth, client, people):
    auth.login("rita@x.test")
    form = _request_form(client)
    form["tenant_id"] = str(people["tenant"].id)
    form["files"] = [(io.BytesIO(EXE), "invoice.pdf")]
    sent = client.post("/requests/new", data=form, content_type="multipart/form-data")
    assert sent.status_code == 422
    assert "cannot be attached" in sent.text and 'aria-invalid="true"' in sent.text
    assert 'value="Acme Labs"' in sent.text  # the rest of the form is kept
    assert _items() == 0 and db.session.scalar(select(func.count()).select_from(Attachment)) == 0


def test_a_body_over_the_files_limit_is_refused_before_it_is_read(app, auth, client, people):
    app.config.update(ATTACHMENT_MAX_BYTES=1000, ATTACHMENTS_PER_CHANGE=1)
    auth.login("rita@x.test")
    # 1 file of 1000 bytes and the form around it: 1 MB and a bit; this is 2 MB.
    sent = client.post("/requests/new", data=b"x" * (2 * 1024 * 1024),
                       content_type="multipart/form-data; boundary=frontier")
    assert sent.status_code == 413
    assert _items() == 0


def test_a_file_is_added_from_the_item_pane_and_shows_there(auth, client, people, make_item):
    item = make_item(people["tenant"], requester=people["rita"])
    auth.login("ann@x.test")
    page = client.get(f"/items/{item.id}")
    assert "Add files" in page.text
    added = client.post(f"/items/{item.id}/attachments", data={
        "csrf_token": csrf_from(page.text), "version": str(item.version),
        "files": [(io.BytesIO(PDF), "quote.pdf")]}, content_type="multipart/form-data",
        headers={"HX-Request": "true"})
    assert added.status_code == 200, added.text
    assert "quote.pdf" in added.text and SHA[:12] in added.text
    assert "Added quote.pdf" in added.headers["HX-Trigger"]
    refused = client.post(f"/items/{item.id}/attachments", data={
        "csrf_token": csrf_from(page.text), "files": [(io.BytesIO(EXE), "run.pdf")]},
        content_type="multipart/form-data")
    assert refused.status_code == 303  # a plain form: the message is flashed on the item
    assert "cannot be attached" in client.get(f"/items/{item.id}").text


def _file(people, make_item, requester="rita"):
    item = make_item(people["tenant"], requester=people[requester])
    [row] = add_attachments(actor(people[requester]), item.id, [Upload("quote.pdf", PDF)])
    ids = item.id, row.id
    commit()
    return ids


@pytest.mark.parametrize("who, status", [
    ("rita", 200),    # the requester
    ("ann", 200),     # an approver of the tenant
    ("audrey", 200),  # an auditor reads everything of the tenant
    ("rob", 404),     # a requester-only member, not this item's requester
    ("olga", 404),    # another tenant's member
])
def test_a_file_downloads_only_for_those_who_may_see_its_item(auth, client, people, make_item,
                                                               who, status):
    item_id, file_id = _file(people, make_item)
    auth.login(people[who].email)
    got = client.get(f"/items/{item_id}/attachments/{file_id}")
    assert got.status_code == status
    if status == 200:
        assert got.data == PDF
        assert got.headers["Content-Type"] == "application/pdf"
        assert got.headers["Content-Disposition"].startswith('attachment; filename="quote.pdf"')
        assert got.headers["X-Content-Type-Options"] == "nosniff"


def test_a_file_is_found_only_under_its_own_item(auth, client, people, make_item):
    _item_id, file_id = _file(people, make_item)
    other = make_item(people["tenant"], requester=people["rita"])
    auth.login("rita@x.test")
    assert client.get(f"/items/{other.id}/attachments/{file_id}").status_code == 404


def test_a_requester_mentioned_on_an_item_may_open_its_files(auth, client, people, make_item):
    from app.work.services import add_comment

    item_id, file_id = _file(people, make_item)
    add_comment(actor(people["ann"]), item_id, "@rob@x.test do you know this customer?")
    commit()
    auth.login("rob@x.test")
    assert client.get(f"/items/{item_id}/attachments/{file_id}").status_code == 200
