"""Background work of the audit trail: writing an export file, and anchoring every chain."""
from __future__ import annotations

import csv
import hashlib
import os
from datetime import timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select

from app.actors import Actor
from app.audit import formats
from app.audit.models import AuditEvent, AuditExport, ExportFormat, ExportStatus
from app.audit.services import anchor_all, latest_anchor, record_event
from app.extensions import db
from app.jobs import DEFAULT_RETRY, enqueue, queue_name as deployment_queue, redis_connection
from app.outbox.services import register_handler
from app.replica import replica_engine
from app.types import utcnow
from app.unit_of_work import as_unit_of_work, commit

EXPORT_BATCH = 5000
EXPORT_TIMEOUT = 3600  # seconds; a year of a busy tenant is a few million events
EXPORT_GRACE = timedelta(minutes=10)


def export_directory() -> Path:
    """Where export files are kept: AUDIT_EXPORT_DIR, else `exports` in the instance folder.
    The web servers and the workers must see the same folder."""
    path = Path(current_app.config.get("AUDIT_EXPORT_DIR")
                or Path(current_app.instance_path) / "exports")
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_export(message) -> None:
    """Outbox handler: the request that asked for the export has committed; queue its job,
    once (a fixed job id)."""
    _enqueue_export(message.payload["export_id"])


def export_job_id(queue_name: str, export_id: int) -> str:
    # Job ids are global in Redis: the queue's name keeps two deployments (or two test runs)
    # that share a Redis from taking each other's export jobs.
    return f"audit-export-{queue_name}-{export_id}"


def _enqueue_export(export_id: int) -> None:
    enqueue("app.audit.jobs.run_export", export_id,
            job_id=export_job_id(deployment_queue(), export_id), retry=DEFAULT_RETRY,
            job_timeout=EXPORT_TIMEOUT)


# RQ states in which a job will never run again by itself.
_JOB_GONE = {"failed", "stopped", "canceled", "finished"}


@as_unit_of_work
def sweep_stale_exports() -> str:
    """Periodic: the database, not Redis, says which exports are unfinished. An unfinished
    export whose job is gone from Redis (flushed, or lost with its server) is queued again; one
    whose job RQ gave up on (its worker killed at every retry) is marked failed with the reason,
    so the auditor sees it and can ask again. A job still queued or running is left alone."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    queue_name = deployment_queue()
    unfinished = db.session.scalars(
        select(AuditExport).where(
            AuditExport.status.in_((ExportStatus.QUEUED.value, ExportStatus.RUNNING.value)),
            # Younger ones may still be on their way through the outbox.
            AuditExport.requested_at < utcnow() - EXPORT_GRACE)
    ).all()
    requeued = failed = 0
    for export in unfinished:
        try:
            job = Job.fetch(export_job_id(queue_name, export.id), connection=redis_connection())
            status = job.get_status(refresh=True)
        except NoSuchJobError:
            job, status = None, None
        if job is None or status is None:
            _enqueue_export(export.id)
            requeued += 1
        elif str(getattr(status, "value", status)) in _JOB_GONE:
            export.status = ExportStatus.FAILED.value
            export.error = ((export.error or "") + " The export job stopped without finishing "
                            f"(RQ status {getattr(status, 'value', status)}); ask for the export "
                            "again.").strip()[:2000]
            export.finished_at = utcnow()
            failed += 1
    return f"{requeued} exports queued again, {failed} marked failed"


def run_export(export_id: int) -> str:
    """Write one export's file under the instance folder, committing progress as it goes.
    Running it again (a retry, a duplicate) writes the file afresh; a finished export is
    left alone."""
    export = db.session.get(AuditExport, export_id)
    if export is None:
        return "missing"
    if export.status == ExportStatus.DONE.value:
        return "already done"
    tenant = export.tenant
    dialect = db.session.get_bind().dialect.name
    in_range = [AuditEvent.chain_id == tenant.id]
    if export.starts_at is not None:
        in_range.append(AuditEvent.occurred_at >= export.starts_at)
    if export.ends_before is not None:
        in_range.append(AuditEvent.occurred_at < export.ends_before)
    export.total = db.session.scalar(select(func.count()).select_from(AuditEvent)
                                     .where(*in_range))
    export.status = ExportStatus.RUNNING.value
    export.started_at = utcnow()
    export.progress = 0
    export.error = None
    commit()
    try:
        return _write_export(export, tenant, dialect)
    except Exception as error:
        db.session.rollback()
        export = db.session.get(AuditExport, export_id)
        export.status = ExportStatus.FAILED.value
        export.error = f"{error.__class__.__name__}: {error}"[:2000]
        commit()
        raise  # into RQ's retry and failed registry


def _write_export(export: AuditExport, tenant, dialect: str) -> str:
    extension = "csv" if export.format == ExportFormat.CSV.value else "jsonl"
    final = export_directory() / f"audit-{tenant.slug}-{export.id}.{extension}"
    partial = final.with_name(final.name + ".part")
    anchor = latest_anchor(tenant.id)
    query = formats.events_query(dialect, tenant.id, export.starts_at, export.ends_before)
    seq_column = AuditEvent.__table__.c.seq
    written, first_seq, last_seq = 0, None, 0
    reader = replica_engine()  # the events are read where reports read (app.replica)
    with open(partial, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out) if extension == "csv" else None
        if writer:
            writer.writerow(formats.COLUMNS)
        else:
            out.write(formats.jsonl_header({
                "tenant": tenant.slug, "chain_id": tenant.id,
                "date_from": export.date_from.isoformat() if export.date_from else None,
                "date_to": export.date_to.isoformat() if export.date_to else None,
                "timezone": tenant.timezone, "exported_at": utcnow().isoformat(),
                "events": export.total,
                "anchor": ({"seq": anchor.seq, "hash": anchor.hash,
                            "anchored_at": anchor.anchored_at.isoformat()} if anchor else None),
            }))
        while True:
            # Keyset batches rather than one long cursor: progress is committed in between.
            if reader is db.engine:
                rows = db.session.connection().execute(
                    query.where(seq_column > last_seq).limit(EXPORT_BATCH)).all()
            else:
                with reader.connect() as replica:
                    rows = replica.execute(
                        query.where(seq_column > last_seq).limit(EXPORT_BATCH)).all()
            if not rows:
                break
            for row in rows:
                record = formats.record_of(row)
                if writer:
                    writer.writerow(formats.csv_row(record))
                else:
                    out.write(formats.jsonl_line(record))
            first_seq = first_seq if first_seq is not None else rows[0].seq
            last_seq = rows[-1].seq
            written += len(rows)
            export.progress = written
            commit()
    digest = hashlib.sha256()
    with open(partial, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    os.replace(partial, final)
    export.status = ExportStatus.DONE.value
    export.file_name = final.name
    export.size_bytes = final.stat().st_size
    export.sha256 = digest.hexdigest()
    export.first_seq, export.last_seq = first_seq, (last_seq or None)
    export.total = written
    export.progress = written
    export.finished_at = utcnow()
    record_event(Actor.system("audit-export"), "audit.export_completed", tenant_id=tenant.id,
                 data={"export_id": export.id, "requested_by_id": export.requested_by_id,
                       "format": export.format, "events": written, "first_seq": first_seq,
                       "last_seq": export.last_seq, "sha256": export.sha256})
    commit()
    return f"exported {written} events"


def export_path(export: AuditExport) -> Path:
    return export_directory() / export.file_name


@as_unit_of_work
def anchor_chains() -> str:
    """Periodic: verify every chain and anchor how far it verified, or alert the admins."""
    reports = anchor_all()
    broken = [r for r in reports if not r.ok]
    return f"anchored {len(reports) - len(broken)} chains, {len(broken)} broken"


# The export job starts once the request that asked for it has committed.
register_handler(start_export, "audit.export_requested")
