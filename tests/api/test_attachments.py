"""Evidence files through the API: multipart upload to an item of the token's tenant, refused
as problem details when too large (413), of a type not allowed or not multipart (415), or
empty (422); another tenant's item is a 404; the item's JSON lists its files."""
from __future__ import annotations

import hashlib
import io

from sqlalchemy import func, select

from app.extensions import db
from app.work.attachments import Attachment
from tests.api.conftest import BearerClient, item_payload
from tests.work.test_attachments import EXE, PDF


def _item(api, ref="INV-1001") -> int:
    created = api.post("/api/v1/items", json=item_payload(external_ref=ref))
    assert created.status_code == 201, created.text
    return created.get_json()["id"]


def _upload(api, item_id, *files, **form):
    return api.client.post(
        f"/api/v1/items/{item_id}/attachments",
        data={"files": [(io.BytesIO(data), name) for name, data in files], **form},
        content_type="multipart/form-data", headers={"Authorization": f"Bearer {api.token}"})


def _attachments() -> int:
    return db.session.scalar(select(func.count()).select_from(Attachment))


def test_a_source_system_attaches_a_file_and_reads_it_back_in_the_item(api):
    item_id = _item(api)
    added = _upload(api, item_id, ("invoice.pdf", PDF))
    assert added.status_code == 201, added.text
    [file] = added.get_json()["attachments"]
    assert file["file_name"] == "invoice.pdf" and file["content_type"] == "application/pdf"
    assert file["sha256"] == hashlib.sha256(PDF).hexdigest() and file["size"] == len(PDF)
    assert file["added_by"].startswith("api:") or file["added_by"]
    read = api.get(f"/api/v1/items/{item_id}").get_json()
    assert read["attachments"] == [file]
    listed = api.get("/api/v1/items").get_json()["items"]
    assert listed[0]["attachments"] == [file]


def test_a_file_over_the_limit_is_a_413_problem(app, api):
    app.config["ATTACHMENT_MAX_BYTES"] = 100
    item_id = _item(api)
    refused = _upload(api, item_id, ("big.csv", b"a,b\n" * 100))
    assert refused.status_code == 413
    assert refused.mimetype == "application/problem+json"
    assert refused.get_json()["errors"] == [{"field": "files", "message": "at most 100 B a file"}]
    assert _attachments() == 0


def test_a_file_of_another_type_or_a_body_not_multipart_is_a_415_problem(api):
    item_id = _item(api)
    refused = _upload(api, item_id, ("invoice.pdf", EXE))
    assert refused.status_code == 415 and refused.mimetype == "application/problem+json"
    assert "cannot be attached" in refused.get_json()["detail"]
    as_json = api.post(f"/api/v1/items/{item_id}/attachments", json={"files": []})
    assert as_json.status_code == 415 and as_json.mimetype == "application/problem+json"
    assert _attachments() == 0


def test_no_file_or_a_bad_version_is_a_422_problem(api):
    item_id = _item(api)
    none = _upload(api, item_id)
    assert none.status_code == 422 and none.get_json()["errors"][0]["field"] == "files"
    bad = _upload(api, item_id, ("invoice.pdf", PDF), expected_version="soon")
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "expected_version"
    stale = _upload(api, item_id, ("invoice.pdf", PDF), expected_version="99")
    assert stale.status_code == 409
    assert _attachments() == 0


def test_another_tenants_item_is_a_404(api, client, make_tenant, make_token):
    item_id = _item(api)
    other = BearerClient(client, make_token(make_tenant("contoso")))
    refused = _upload(other, item_id, ("invoice.pdf", PDF))
    assert refused.status_code == 404 and refused.mimetype == "application/problem+json"
    assert _attachments() == 0


def test_a_token_without_write_scope_may_not_attach(api, client, make_token):
    item_id = _item(api)
    reader = BearerClient(client, make_token(api.tenant, scopes=("items:read",), name="ro"))
    assert _upload(reader, item_id, ("invoice.pdf", PDF)).status_code == 403
