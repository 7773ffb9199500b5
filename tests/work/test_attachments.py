"""Evidence files through the write path: the type is read from the bytes, size and type are
limited, the bytes are kept once per content, each file's SHA-256 is in its audit event (and the
chain verifies), a file goes with the change that adds it or not at all, and a link sent before
a file was added no longer decides."""
from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select, update

from app.approvals.links import LinkStatus, inspect_link, issue_link
from app.approvals.services import request_info, resubmit
from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from app.extensions import db
from app.models import WorkItem
from app.unit_of_work import commit
from app.work.attachments import (
    Attachment,
    AttachmentBlob,
    EvidenceAltered,
    FileTooLarge,
    FileTypeRefused,
    Upload,
    add_attachments,
    open_attachment,
)
from tests.conftest import actor

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
       b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
       b"\x00\x00\x00IEND\xaeB`\x82")
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200
CSV = b"invoice,amount\nINV-1,120.00\nINV-2,80.00\n"


@pytest.fixture
def people(make_tenant, make_user):
    tenant = make_tenant()
    return {"tenant": tenant,
            "rita": make_user("rita@x.test", [tenant], roles=("requester",)),
            "ann": make_user("ann@x.test", [tenant], roles=("approver",), limit="90000"),
            "audrey": make_user("audrey@x.test", [tenant], roles=("auditor",))}


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def test_the_type_comes_from_the_bytes_not_the_name(people, make_item):
    item = make_item(people["tenant"], requester=people["rita"])
    pdf, png, csv, text = add_attachments(actor(people["rita"]), item.id, [
        Upload("quote.pdf", PDF), Upload("invoice.pdf", PNG), Upload("lines.csv", CSV),
        Upload("notes.csv", b"just some words\n")])
    commit()
    assert (pdf.content_type, pdf.file_name) == ("application/pdf", "quote.pdf")
    # A PNG sent as .pdf is a PNG, and downloads with the extension of what it is.
    assert (png.content_type, png.file_name) == ("image/png", "invoice.pdf.png")
    assert csv.content_type == "text/csv"
    assert text.content_type == "text/plain" and text.file_name == "notes.csv.txt"


@pytest.mark.parametrize("name, data", [
    ("invoice.pdf", EXE),                        # a program under a harmless name
    ("archive.zip", b"PK\x03\x04" + b"\x00" * 100),  # a zip that is no Office document
    ("photo.png", b"GIF89a" + b"\x00" * 50),      # a type not on the list
    ("notes.txt", b"text with a NUL \x00 inside"),  # binary posing as text
])
def test_a_file_of_a_type_not_allowed_is_refused_and_nothing_is_written(people, make_item,
                                                                         name, data):
    item = make_item(people["tenant"], requester=people["rita"])
    version = item.version
    with pytest.raises(FileTypeRefused) as refused:
        add_attachments(actor(people["rita"]), item.id, [Upload("ok.pdf", PDF),
                                                         Upload(name, data)])
    assert refused.value.status == 415
    db.session.rollback()
    assert _count(Attachment) == 0 and _count(AttachmentBlob) == 0
    assert db.session.get(WorkItem, item.id).version == version


def test_a_file_over_the_limit_is_refused_with_413(app, people, make_item):
    app.config["ATTACHMENT_MAX_BYTES"] = 1000
    item = make_item(people["tenant"], requester=people["rita"])
    with pytest.raises(FileTooLarge) as refused:
        add_attachments(actor(people["rita"]), item.id, [Upload("big.csv", b"a,b\n" * 300)])
    assert refused.value.status == 413 and "1000 B" in refused.value.message
    with pytest.raises(ValidationFailed):
        add_attachments(actor(people["rita"]), item.id, [Upload("empty.txt", b"")])


def test_each_file_is_audited_with_its_sha256_and_the_chain_verifies(people, make_item):
    item = make_item(people["tenant"], requester=people["rita"])
    add_attachments(actor(people["rita"]), item.id, [Upload("quote.pdf", PDF)])
    commit()
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "attachment.added")).one()
    assert event.item_id == item.id and event.actor_id == people["rita"].id
    assert {k: event.data[k] for k in ("file_name", "size", "content_type", "sha256")} == {
        "file_name": "quote.pdf", "size": len(PDF), "content_type": "application/pdf",
        "sha256": hashlib.sha256(PDF).hexdigest()}
    assert verify_chain(people["tenant"].id).ok


def test_the_same_bytes_are_kept_once(people, make_item):
    first = make_item(people["tenant"], requester=people["rita"])
    second = make_item(people["tenant"], requester=people["rita"])
    add_attachments(actor(people["rita"]), first.id, [Upload("a.pdf", PDF)])
    add_attachments(actor(people["rita"]), second.id, [Upload("b.pdf", PDF)])
    commit()
    assert _count(Attachment) == 2 and _count(AttachmentBlob) == 1


def test_a_file_whose_bytes_changed_is_withheld(people, make_item):
    item = make_item(people["tenant"], requester=people["rita"])
    [row] = add_attachments(actor(people["rita"]), item.id, [Upload("quote.pdf", PDF)])
    commit()
    _row, data = open_attachment(actor(people["ann"]), item.id, row.id)
    assert data == PDF
    db.session.execute(update(AttachmentBlob).values(data=PDF.replace(b"Catalog", b"Katalog")))
    commit()
    with pytest.raises(EvidenceAltered):
        open_attachment(actor(people["ann"]), item.id, row.id)


def test_an_answer_that_is_refused_leaves_no_file(people, make_item):
    item = make_item(people["tenant"], amount="1200.00", requester=people["rita"])
    request_info(actor(people["ann"]), item.id, question="Which contract?")
    commit()
    with pytest.raises(ValidationFailed):  # a larger amount is a new request
        resubmit(actor(people["rita"]), item.id, answer="Contract C-88", amount="1500.00",
                 files=[Upload("contract.pdf", PDF)])
    db.session.rollback()
    assert _count(Attachment) == 0 and _count(AttachmentBlob) == 0
    resubmit(actor(people["rita"]), item.id, answer="Contract C-88", amount="1100.00",
             files=[Upload("contract.pdf", PDF)])
    commit()
    assert [a.file_name for a in db.session.scalars(select(Attachment))] == ["contract.pdf"]
    actions = list(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.item_id == item.id).order_by(AuditEvent.seq)))
    assert actions[-2:] == ["item.resubmit", "attachment.added"]


def test_a_file_on_a_stale_version_is_a_conflict_and_leaves_nothing(people, make_item):
    item = make_item(people["tenant"], requester=people["rita"])
    with pytest.raises(Conflict):
        add_attachments(actor(people["rita"]), item.id, [Upload("a.pdf", PDF)],
                        expected_version=item.version + 5)
    db.session.rollback()
    assert _count(Attachment) == 0


def test_who_may_add_files(people, make_item, make_tenant, make_user):
    item = make_item(people["tenant"])  # no requester
    with pytest.raises(NotFound):  # a requester-only member does not see others' items
        add_attachments(actor(people["rita"]), item.id, [Upload("a.pdf", PDF)])
    from app.errors import PermissionDenied

    with pytest.raises(PermissionDenied):  # an auditor changes nothing
        add_attachments(actor(people["audrey"]), item.id, [Upload("a.pdf", PDF)])
    outsider = make_user("out@y.test", [make_tenant("other")], roles=("approver",))
    with pytest.raises(NotFound):
        add_attachments(actor(outsider), item.id, [Upload("a.pdf", PDF)])
    from app.approvals.services import reject_approval

    reject_approval(actor(people["ann"]), item.id, reason="No")
    commit()
    with pytest.raises(InvalidTransition):  # a decided item's evidence is closed
        add_attachments(actor(people["ann"]), item.id, [Upload("a.pdf", PDF)])


def test_a_file_added_after_a_link_was_sent_supersedes_the_link(app, people, make_item):
    app.config["APP_BASE_URL"] = "http://cleardesk.test"
    item = make_item(people["tenant"], requester=people["rita"])
    step = item.current_step()
    token, _row = issue_link(item, step, people["ann"])
    commit()
    assert inspect_link(token).status == LinkStatus.OK
    add_attachments(actor(people["rita"]), item.id, [Upload("quote.pdf", PDF)])
    commit()
    assert inspect_link(token).status == LinkStatus.SUPERSEDED
    fresh, _row = issue_link(db.session.get(WorkItem, item.id), step, people["ann"])
    commit()
    assert inspect_link(fresh).status == LinkStatus.OK
