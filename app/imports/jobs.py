"""The import job: every row checked by the write path first (a file that fails is refused
whole, nothing written), then written in batches, one commit per batch, progress in the
import's row (which the page polls). A crash or a retry starts over from the first row; rows
already made are found by their reference and not made again."""
from __future__ import annotations

from app.errors import DomainError
from app.extensions import db
from app.imports import services
from app.imports.models import ImportJob, ImportStatus
from app.jobs import enqueue
from app.outbox.services import register_handler
from app.types import utcnow
from app.unit_of_work import commit


def start_import(message) -> None:
    """Outbox handler of import.requested: queue the job (fixed id: queued once)."""
    from flask import current_app

    import_id = (message.payload or {})["import_id"]
    enqueue("app.imports.jobs.run_import", import_id,
            job_id=f"import-{current_app.config['RQ_QUEUE']}-{import_id}")


def run_import(import_id: int) -> str:
    job = db.session.get(ImportJob, import_id)
    if job is None:
        return "missing"
    if job.status not in (ImportStatus.QUEUED.value, ImportStatus.RUNNING.value,
                          ImportStatus.FAILED.value):
        return job.status
    actor = services.importer_actor(job)
    try:
        rows = services.prepare_import(job, actor)
    except DomainError as error:  # the file no longer passes: refused whole, nothing written
        db.session.rollback()
        services.refuse(db.session.get(ImportJob, import_id), actor, error.message)
        commit()
        return ImportStatus.REFUSED.value
    job.status = ImportStatus.RUNNING.value
    job.started_at = job.started_at or utcnow()
    job.processed_rows = job.created_count = job.existing_count = 0
    commit()
    size = services.batch_size()
    try:
        for start in range(0, len(rows), size):
            job = db.session.get(ImportJob, import_id)
            created, existing = services.import_batch(job, rows[start:start + size], actor)
            job.created_count += created
            job.existing_count += existing
            job.processed_rows = min(len(rows), start + size)
            commit()  # also expires the batch's objects: the session stays small
        job = db.session.get(ImportJob, import_id)
        services.finish(job, actor)
        commit()
    except Exception as exc:
        db.session.rollback()
        job = db.session.get(ImportJob, import_id)
        job.status = ImportStatus.FAILED.value
        job.last_error = f"{exc.__class__.__name__}: {exc}"[:500]
        commit()
        raise  # RQ retries it (the rows made so far are found again, not made twice)
    return "succeeded"


# A CSV import was confirmed: run it once that is committed.
register_handler(start_import, "import.requested")
