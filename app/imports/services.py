"""Imports through the write path: checking an upload (nothing is written for a file with
errors), confirming it (the job starts once that is committed), and running it in batches
through app.work.services.create_prepared_items (create_item's checks and rules, written a
batch at a time), which makes a second import of the same rows create nothing (items are
unique per tenant, source system and reference)."""
from __future__ import annotations

import hashlib

from flask import current_app
from sqlalchemy import select

from app.actors import Actor, ActorType
from app.audit.services import record_event
from app.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.imports.formats import FORMATS, FileRefused, read_csv
from app.imports.models import ImportJob, ImportStatus
from app.models import Role, Tenant, User
from app.outbox.services import add_message
from app.types import utcnow
from app.work.services import (
    RequesterDirectory,
    create_prepared_items,
    creation_tenant,
    prepare_items,
)

IMPORT_ROLES = {Role.ANALYST.value, Role.MANAGER.value}
MAX_BYTES = 50 * 1024 * 1024
BATCH = 2000


def _require_importer(actor: Actor, tenant_id: int) -> None:
    if tenant_id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    if not IMPORT_ROLES & actor.roles_in(tenant_id):
        raise PermissionDenied("Only analysts and managers import work.")


def get_import(actor: Actor, import_id: int) -> ImportJob:
    """An import, for those who may import in its tenant (its file name and rows are that
    tenant's data); NotFound in a tenant that is not theirs."""
    job = db.session.get(ImportJob, import_id)
    if job is None or (actor.type is not ActorType.SYSTEM
                       and job.tenant_id not in actor.tenant_ids()):
        raise NotFound("No such import.")
    if actor.type is not ActorType.SYSTEM:
        _require_importer(actor, job.tenant_id)
    return job


def recent_imports(actor: Actor, tenant_id: int, limit: int = 20) -> list[ImportJob]:
    _require_importer(actor, tenant_id)
    return list(db.session.scalars(select(ImportJob).where(ImportJob.tenant_id == tenant_id)
                                   .order_by(ImportJob.id.desc()).limit(limit)))


def upload(actor: Actor, tenant_id: int, *, format_name: str, filename: str, raw: bytes,
           source_system: str | None = None) -> ImportJob:
    """Check every row of the file. A file with errors is kept as `refused` (to show its
    errors) and can never be imported; a clean one waits for confirmation as `ready`."""
    _require_importer(actor, tenant_id)
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise ValidationFailed("Choose what the file holds.", {"format": "unknown format"})
    if len(raw) > MAX_BYTES:
        raise ValidationFailed("The file is too large.",
                               {"file": f"at most {MAX_BYTES // (1024 * 1024)} MB"})
    source_system = (source_system or "").strip() or fmt.default_source
    if len(source_system) > 64:
        raise ValidationFailed("The source system is too long.",
                               {"source_system": "at most 64 characters"})
    tenant = db.session.get(Tenant, tenant_id)
    job = ImportJob(tenant_id=tenant_id, format=fmt.name, source_system=source_system,
                    filename=(filename or "upload.csv")[:255],
                    file_sha256=hashlib.sha256(raw).hexdigest(), content="",
                    created_by_id=actor.user_id, errors=[])
    try:
        parsed = read_csv(raw, fmt, source_system=source_system, currency=tenant.currency,
                          ceiling=tenant.max_item_amount, members=RequesterDirectory(tenant.id).emails())
    except FileRefused as refused:
        job.status = ImportStatus.REFUSED.value
        job.errors = [{"row": None, "field": "file", "message": str(refused)}]
        job.error_rows = 0
    else:
        job.total_rows = parsed.total_rows
        job.error_rows = parsed.error_rows
        job.errors = parsed.errors
        if parsed.error_rows:
            job.status = ImportStatus.REFUSED.value
        else:
            job.status = ImportStatus.READY.value
            job.content = raw.decode("utf-8-sig")
    db.session.add(job)
    db.session.flush()
    record_event(actor, "import.uploaded", tenant_id=tenant_id,
                 data={"import_id": job.id, "filename": job.filename, "format": job.format,
                       "rows": job.total_rows, "error_rows": job.error_rows,
                       "status": job.status, "sha256": job.file_sha256})
    return job


def earlier_import_of_same_file(job: ImportJob) -> ImportJob | None:
    return db.session.scalars(select(ImportJob).where(
        ImportJob.tenant_id == job.tenant_id, ImportJob.file_sha256 == job.file_sha256,
        ImportJob.id != job.id, ImportJob.status == ImportStatus.SUCCEEDED.value)
        .order_by(ImportJob.id.desc()).limit(1)).one_or_none()


def preview_rows(job: ImportJob, limit: int = 10) -> list[dict]:
    if job.status == ImportStatus.REFUSED.value or not job.content:
        return []
    fmt = FORMATS[job.format]
    parsed = read_csv(job.content[:200_000].rsplit("\n", 1)[0].encode() if len(job.content)
                      > 200_000 else job.content.encode(), fmt,
                      source_system=job.source_system, currency=job.tenant.currency)
    return parsed.rows[:limit]


def confirm_import(actor: Actor, import_id: int) -> ImportJob:
    """Queue a ready import; its job starts once this is committed (through the outbox)."""
    job = get_import(actor, import_id)
    if job.status in (ImportStatus.QUEUED.value, ImportStatus.RUNNING.value,
                      ImportStatus.SUCCEEDED.value):
        return job  # a double click
    if job.status != ImportStatus.READY.value:
        raise InvalidTransition("This file has errors; nothing from it can be imported.")
    job.status = ImportStatus.QUEUED.value
    record_event(actor, "import.confirmed", tenant_id=job.tenant_id,
                 data={"import_id": job.id, "rows": job.total_rows})
    add_message("import.requested", {"import_id": job.id}, job.tenant_id)
    return job


def importer_actor(job: ImportJob) -> Actor:
    """The person who confirmed the import is the one who raises its items."""
    user = db.session.get(User, job.created_by_id)
    return Actor(ActorType.USER, user=user, label=user.email, extra={"import_id": job.id})


def prepare_import(job: ImportJob, actor: Actor) -> list[dict]:
    """Every row of the file, checked again (the tenant's currency, the importer's roles may
    have changed since the upload) by the write path's own checks, before anything is
    written: a file that no longer passes is refused whole."""
    fmt = FORMATS[job.format]
    parsed = read_csv(job.content.encode(), fmt, source_system=job.source_system,
                      currency=job.tenant.currency, schema_checked=True)
    if parsed.error_rows:
        raise ValidationFailed(f"The file no longer passes its checks: row "
                               f"{parsed.errors[0]['row']}, {parsed.errors[0]['field']}: "
                               f"{parsed.errors[0]['message']}.", {})
    return prepare_items(actor, creation_tenant(actor, job.tenant_id), parsed.rows)


def import_batch(job: ImportJob, prepared: list[dict], actor: Actor) -> tuple[int, int]:
    """Create one batch of prepared rows; returns (created, already there). Never commits."""
    created, existing = create_prepared_items(actor, job.tenant, prepared)
    return len(created), existing


def batch_size() -> int:
    return int(current_app.config.get("IMPORT_BATCH_ROWS", BATCH))


def finish(job: ImportJob, actor: Actor) -> None:
    job.status = ImportStatus.SUCCEEDED.value
    job.finished_at = utcnow()
    record_event(actor, "import.finished", tenant_id=job.tenant_id,
                 data={"import_id": job.id, "created": job.created_count,
                       "existing": job.existing_count})


def refuse(job: ImportJob, actor: Actor, reason: str) -> None:
    """A confirmed file that fails the write path's checks when its job runs (the importer's
    roles or the tenant's currency changed since): refused whole, before any write."""
    job.status = ImportStatus.REFUSED.value
    job.finished_at = utcnow()
    job.errors = [{"row": None, "field": "file", "message": reason[:500]}]
    record_event(actor, "import.refused", tenant_id=job.tenant_id,
                 data={"import_id": job.id, "reason": reason[:500]})
