"""Evidence files on work items: what a file is (decided from its bytes, never from the name or
content type the client claims), where it is kept (the database, content-addressed by SHA-256,
so every web process and worker reads the same store), and how one is added: by the write path,
in the transaction of the change that adds it (a new request, an answer, or the file alone),
with an `attachment.added` audit event recording its name, size, type and SHA-256, so the audit
chain proves the evidence was not swapped afterwards. Never commits."""
from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import filetype
from flask import current_app
from sqlalchemy import ForeignKey, Index, LargeBinary, String, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.actors import Actor
from app.audit.services import dialect_insert
from app.errors import DomainError, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import User, WorkItem
from app.types import UTCDateTime, utcnow
from app.work import ledger
from app.work.ledger import conflict_for
from app.work.queries import get_item
from app.work.states import COMMENT_ROLES, FINAL_STATES

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_PER_CHANGE = 5

# What may be attached, by the type its bytes show: (label, extensions the download may carry).
ALLOWED = {
    "application/pdf": ("PDF", (".pdf",)),
    "image/png": ("PNG image", (".png",)),
    "image/jpeg": ("JPEG image", (".jpg", ".jpeg")),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ("Excel workbook",
                                                                          (".xlsx",)),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("Word document",
                                                                                (".docx",)),
    "text/csv": ("CSV", (".csv",)),
    "text/plain": ("Text", (".txt", ".text", ".log", ".md")),
}
ACCEPT = ",".join(sorted({ext for _label, exts in ALLOWED.values() for ext in exts}))


class FileTooLarge(ValidationFailed):
    status = 413


class FileTypeRefused(ValidationFailed):
    status = 415


class AttachmentBlob(db.Model):
    """A file's bytes, once per content: rows of `attachments` name it by its SHA-256."""

    __tablename__ = "attachment_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Attachment(db.Model):
    """One evidence file on one item, as it was added: its name, type, size and hash, who added
    it and when."""

    __tablename__ = "attachments"
    __table_args__ = (Index("ix_attachments_item", "item_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id"))
    file_name: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(ForeignKey("attachment_blobs.sha256"))
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    added_by_label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    added_by: Mapped[User | None] = relationship(foreign_keys=[added_by_id])

    @property
    def type_label(self) -> str:
        return ALLOWED.get(self.content_type, (self.content_type, ()))[0]

    @property
    def short_sha(self) -> str:
        return self.sha256[:12]

    @property
    def size_text(self) -> str:
        return size_text(self.size)

    @property
    def added_by_name(self) -> str:
        return self.added_by.name if self.added_by is not None else self.added_by_label


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


@dataclass(frozen=True)
class Upload:
    """A file as the client sent it: the name it gave and its bytes (read up to the limit)."""

    name: str
    data: bytes


def max_bytes(app=None) -> int:
    return int((app or current_app).config.get("ATTACHMENT_MAX_BYTES", DEFAULT_MAX_BYTES))


def per_change(app=None) -> int:
    return int((app or current_app).config.get("ATTACHMENTS_PER_CHANGE", DEFAULT_PER_CHANGE))


def uploads_body_limit(app) -> int:
    """How large a body carrying the most files of one change may be (the form around them
    included): a larger one is refused (413) before it is read."""
    return max_bytes(app) * per_change(app) + 1024 * 1024


def read_uploads(storages) -> list[Upload]:
    """The files of a form (werkzeug FileStorage), each read to one byte past the limit (so a
    larger one is refused without reading it all); an empty file input is no file."""
    out = []
    limit = max_bytes()
    for storage in storages:
        if storage is None or not (storage.filename or "").strip():
            continue
        out.append(Upload(storage.filename, storage.stream.read(limit + 1)))
    return out


# ---------------------------------------------------------------------------------------------
# What a file is.


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


def clean_name(raw: str, content_type: str) -> str:
    """A name safe to show and to offer as a download: its last path part, no control or
    path characters, at most 200 characters, ending in an extension of the type its bytes
    show (an `invoice.pdf` that is a PNG downloads as `invoice.pdf.png`)."""
    name = unicodedata.normalize("NFC", str(raw or "")).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .") or "file"
    extensions = ALLOWED[content_type][1]
    if not name.lower().endswith(extensions):
        name += extensions[0]
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = stem[:200 - len(ext) - 1] + dot + ext
    return name


def _text(data: bytes) -> str | None:
    """The file as text if it is UTF-8 (or plain ASCII) with no control characters but tabs,
    line and page breaks."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if any((c < " " and c not in "\t\r\n\f") or c == "\x7f" for c in text):
        return None
    return text


def _is_csv(text: str) -> bool:
    """Rows of one width, more than one column."""
    try:
        rows = [r for r in csv.reader(io.StringIO(text[:200_000])) if r]
    except csv.Error:
        return False
    return len(rows) >= 1 and len(rows[0]) > 1 and all(len(r) == len(rows[0]) for r in rows[:-1])


def sniff(upload: Upload) -> str:
    """The file's type from its bytes: one of ALLOWED, or FileTypeRefused. A text file is CSV
    when it reads as one and its name says so; the name never makes bytes of another type
    pass."""
    kind = filetype.guess(upload.data)
    if kind is not None:
        if kind.mime in ALLOWED:
            return kind.mime
        raise FileTypeRefused(
            f"{_shown(upload.name)} is a {kind.extension.upper()} file, which cannot be attached.",
            {"files": "attach PDF, PNG, JPEG, CSV, XLSX, DOCX or plain text"})
    text = _text(upload.data)
    if text is None:
        raise FileTypeRefused(
            f"{_shown(upload.name)} is not a kind of file that can be attached.",
            {"files": "attach PDF, PNG, JPEG, CSV, XLSX, DOCX or plain text"})
    if str(upload.name).lower().endswith(".csv") and _is_csv(text):
        return "text/csv"
    return "text/plain"


def _shown(name: str) -> str:
    name = _UNSAFE_NAME.sub("_", str(name or "")).strip()[:80]
    return f"“{name}”" if name else "The file"


@dataclass(frozen=True)
class Checked:
    name: str
    content_type: str
    data: bytes
    sha256: str


def check_uploads(uploads: list[Upload]) -> list[Checked]:
    """Every file checked before anything is written: count, size, type."""
    if len(uploads) > per_change():
        raise ValidationFailed(f"Attach at most {per_change()} files at a time.",
                               {"files": f"at most {per_change()} files"})
    out = []
    limit = max_bytes()
    for upload in uploads:
        if len(upload.data) > limit:
            raise FileTooLarge(f"{_shown(upload.name)} is larger than {size_text(limit)}.",
                               {"files": f"at most {size_text(limit)} a file"})
        if not upload.data:
            raise ValidationFailed(f"{_shown(upload.name)} is empty.", {"files": "is empty"})
        content_type = sniff(upload)
        out.append(Checked(clean_name(upload.name, content_type), content_type, upload.data,
                           hashlib.sha256(upload.data).hexdigest()))
    return out


# ---------------------------------------------------------------------------------------------
# Adding files to an item: the write path.


def may_attach(actor: Actor, item: WorkItem) -> bool:
    """Who may add evidence: the item's requester, a member who may comment on it, or a
    source system's token (the item is its own)."""
    if item.state in FINAL_STATES[item.kind]:
        return False
    if not actor.acts_as_person:
        return True
    return (actor.user_id == item.requester_id
            or bool(actor.roles_in(item.tenant_id) & COMMENT_ROLES))


def attach_files(actor: Actor, item: WorkItem, uploads: list[Upload]) -> list[Attachment]:
    """Add the files to the item in the caller's transaction: the bytes (once per content),
    a row each, and, through the ledger, a new version of the item (the facts an approver
    decides on changed: an email link sent before is superseded) with an `attachment.added`
    audit event each. The caller has found the item through the tenant scoping."""
    if not uploads:
        return []
    if item.state in FINAL_STATES[item.kind]:
        raise InvalidTransition(f"This item is {item.state.replace('_', ' ')}; its evidence "
                                "is closed.")
    if not may_attach(actor, item):
        raise PermissionDenied("Your roles do not let you add files to this item.")
    checked = check_uploads(uploads)
    rows = []
    for file in checked:
        db.session.execute(
            dialect_insert()(AttachmentBlob)
            .values(sha256=file.sha256, size=len(file.data), data=file.data)
            .on_conflict_do_nothing(index_elements=["sha256"]))
        row = Attachment(tenant_id=item.tenant_id, item_id=item.id, file_name=file.name,
                         content_type=file.content_type, size=len(file.data),
                         sha256=file.sha256, added_by_id=actor.user_id,
                         added_by_label=(actor.label or actor.type.value)[:200],
                         created_at=utcnow())
        db.session.add(row)
        db.session.flush()
        now = utcnow()
        ledger.change_item(
            actor, item, ledger.touched(actor, item, now), action="attachment.added",
            data={"attachment_id": row.id, "file_name": row.file_name, "size": row.size,
                  "content_type": row.content_type, "sha256": row.sha256}, now=now)
        rows.append(row)
    return rows


def add_attachments(actor: Actor, item_id: int, uploads: list[Upload],
                    expected_version: int | None = None) -> list[Attachment]:
    """Files alone, added to an item the actor may see (another tenant's, or one a
    requester-only member is not on, is NotFound)."""
    item = get_item(actor, item_id)
    if not uploads:
        raise ValidationFailed("Choose a file to attach.", {"files": "is required"})
    if expected_version is not None and item.version != expected_version:
        raise conflict_for(item)
    return attach_files(actor, item, uploads)


# ---------------------------------------------------------------------------------------------
# Reading.


def item_attachments(item_id: int) -> list[Attachment]:
    return list(db.session.scalars(
        select(Attachment).where(Attachment.item_id == item_id).order_by(Attachment.id)))


def attachments_of(item_ids: list[int]) -> dict[int, list[Attachment]]:
    """The files of many items in one query (a page of the API)."""
    out: dict[int, list[Attachment]] = {i: [] for i in item_ids}
    if item_ids:
        for row in db.session.scalars(select(Attachment).where(
                Attachment.item_id.in_(item_ids)).order_by(Attachment.id)):
            out[row.item_id].append(row)
    return out


def attachment_hashes(item_id: int | None) -> list[str]:
    """The SHA-256 of each file on the item, in the order added: part of the facts an approver
    decides on."""
    if item_id is None:
        return []
    return list(db.session.scalars(select(Attachment.sha256).where(
        Attachment.item_id == item_id).order_by(Attachment.id)))


def download_headers(row: Attachment) -> dict:
    """A file goes out as a download of the type its bytes were found to be, which the browser
    must not second-guess, and is not kept by shared caches."""
    from urllib.parse import quote

    ascii_name = row.file_name.encode("ascii", "replace").decode().replace("?", "_")
    ascii_name = ascii_name.replace('"', "_")
    return {
        "Content-Type": row.content_type + ("; charset=utf-8" if row.content_type.startswith(
            "text/") else ""),
        "Content-Disposition": f'attachment; filename="{ascii_name}"; '
                               f"filename*=UTF-8''{quote(row.file_name)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    }


class EvidenceAltered(DomainError):
    """The stored bytes no longer match the hash recorded when the file was added."""

    status = 500


def open_attachment(actor: Actor, item_id: int, attachment_id: int) -> tuple[Attachment, bytes]:
    """A file of an item the actor may see, with its bytes checked against the recorded
    SHA-256; NotFound for anything else."""
    item = get_item(actor, item_id)
    row = db.session.scalars(select(Attachment).where(
        Attachment.id == attachment_id, Attachment.item_id == item.id,
        Attachment.tenant_id == item.tenant_id)).one_or_none()
    if row is None:
        raise NotFound("No such file.")
    blob = db.session.get(AttachmentBlob, row.sha256)
    data = bytes(blob.data) if blob is not None else b""
    if hashlib.sha256(data).hexdigest() != row.sha256:
        current_app.logger.error("attachment %s of item %s fails its SHA-256 check",
                                 row.id, item.id)
        raise EvidenceAltered("This file does not match the fingerprint recorded when it was "
                              "added; it is withheld. Tell your administrator.")
    return row, data

