"""Exports of the trail: requested (and audited) through the page, written by a real worker
with progress, handed only to the person who asked, and checkable by the standalone verifier
with nothing of Cleardesk around it."""
import csv
import json
import re
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from app.audit.jobs import export_path, run_export
from app.audit.models import AuditEvent, AuditExport
from app.audit.services import anchor_all, verify_chain
from app.extensions import db
from app.outbox.models import OutboxMessage
from app.unit_of_work import commit
from tests.approvals.conftest import inbox, run_worker  # noqa: F401  (fixture)
from tests.audit.conftest import run_verifier
from tests.conftest import empty_queues

FORMATS = ["jsonl", "csv"]


def _token(client, path="/audit/") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def _request_export(client, tenant, fmt="jsonl", **dates):
    return client.post("/audit/exports", data={"csrf_token": _token(client), "tenant": tenant.id,
                                               "format": fmt, **dates})


def _export() -> AuditExport:
    db.session.expire_all()
    return db.session.scalars(select(AuditExport).order_by(AuditExport.id.desc())).first()


@pytest.fixture
def auditor(world, sign_in):
    return sign_in(world.auditor)


@pytest.fixture
def exported(world, auditor, request):
    """A finished export of the whole northwind chain, in the format the test asks for."""
    fmt = getattr(request, "param", "jsonl")
    assert _request_export(auditor, world.northwind, fmt).status_code == 303
    assert run_export(_export().id).startswith("exported")
    return _export()


def test_asking_for_an_export_records_it_and_queues_its_job_through_the_outbox(world, auditor):
    response = _request_export(auditor, world.northwind, "csv", date_from="2026-01-01",
                               date_to="2026-12-31")

    export = _export()
    assert response.status_code == 303
    assert response.headers["Location"] == f"/audit/exports/{export.id}"
    assert (export.status, export.format, export.requested_by_id) == (
        "queued", "csv", world.auditor.id)
    assert str(export.date_from) == "2026-01-01" and str(export.date_to) == "2026-12-31"
    [event] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "audit.export_requested"))
    assert event.actor_id == world.auditor.id and event.data["export_id"] == export.id
    [message] = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "audit.export_requested"))
    assert message.payload == {"export_id": export.id}


def test_a_range_that_ends_before_it_starts_is_refused_with_a_message(world, auditor):
    response = _request_export(auditor, world.northwind, date_from="2026-05-02",
                               date_to="2026-05-01")
    assert response.status_code == 303
    assert "ends before it starts" in auditor.get(response.headers["Location"]).text
    assert _export() is None


def test_nobody_exports_a_tenant_they_do_not_audit(world, sign_in):
    approver = sign_in(world.approver)
    assert _request_export(approver, world.northwind).status_code == 403
    contoso_auditor = sign_in(world.contoso_auditor)
    assert _request_export(contoso_auditor, world.northwind).status_code == 404
    assert _export() is None


@pytest.mark.parametrize("exported", FORMATS, indirect=True)
def test_an_export_holds_every_event_with_its_hashes_and_is_audited(world, exported):
    events = db.session.scalars(select(AuditEvent).where(
        AuditEvent.chain_id == world.northwind.id, AuditEvent.action != "audit.export_completed")
        .order_by(AuditEvent.seq)).all()
    path = export_path(exported)
    text = path.read_text(encoding="utf-8")
    if exported.format == "csv":
        rows = list(csv.DictReader(text.splitlines()))
        hashes = [r["hash"] for r in rows]
        assert any(r["comment"] == "'=HYPERLINK(\"http://evil\")" for r in rows)
        assert all(not r["comment"].startswith("=") for r in rows)
    else:
        header, *lines = [json.loads(line) for line in text.splitlines()]
        assert header["cleardesk_audit_export"]["tenant"] == "northwind"
        hashes = [r["hash"] for r in lines]
        assert any(r["comment"] == "Ünïcode — ok" for r in lines)
    assert hashes == [e.hash for e in events]
    assert (exported.status, exported.total, exported.first_seq, exported.last_seq) == (
        "done", len(events), 1, events[-1].seq)
    [completed] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "audit.export_completed"))
    assert completed.data["sha256"] == exported.sha256
    assert completed.data["requested_by_id"] == world.auditor.id


@pytest.mark.parametrize("exported", FORMATS, indirect=True)
def test_the_standalone_verifier_agrees_with_audit_verify_on_an_intact_export(
        world, exported, runner):
    db_report = verify_chain(world.northwind.id)

    result = run_verifier(export_path(exported))

    assert db_report.ok and result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"OK: {exported.total} events of chain {world.northwind.id}")
    assert "from the start of the chain" in result.stdout
    # The chain went on (the export's own completion event): the file's last hash is where
    # the database chain stood when it was written.
    last = db.session.scalar(select(AuditEvent.hash).where(
        AuditEvent.chain_id == world.northwind.id, AuditEvent.seq == exported.last_seq))
    assert result.stdout.rstrip().endswith(f"last hash {last}")


@pytest.mark.parametrize("exported", FORMATS, indirect=True)
def test_the_standalone_verifier_rejects_an_edited_export_naming_the_event(world, exported):
    path = export_path(exported)
    text = path.read_text(encoding="utf-8")
    edited = text.replace("Checked the contract", "Never checked", 1)
    assert edited != text
    path.write_text(edited, encoding="utf-8")
    seq = db.session.scalar(select(AuditEvent.seq).where(
        AuditEvent.comment == "Checked the contract"))

    result = run_verifier(path)

    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"BROKEN: event #{seq} was edited: its content no longer matches its hash")


def test_the_standalone_verifier_names_a_line_removed_from_an_export(world, exported):
    path = export_path(exported)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    del lines[3]  # the header, then events #1, #2, #3: event #3 goes
    path.write_text("".join(lines), encoding="utf-8")

    result = run_verifier(path)

    assert result.returncode == 1 and "event #3 is missing: deleted" in result.stdout


def test_the_standalone_verifier_checks_a_hash_the_auditor_recorded_earlier(world, exported):
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.chain_id == world.northwind.id, AuditEvent.seq == 5)).one()
    path = export_path(exported)
    assert run_verifier(path, "--expect", f"5:{event.hash}").returncode == 0
    wrong = run_verifier(path, "--expect", f"5:{'ab' * 32}")
    assert wrong.returncode == 1 and "event #5 does not have the hash you expected" in wrong.stdout
    absent = run_verifier(path, "--expect", f"999:{event.hash}")
    assert absent.returncode == 1 and "event #999 is not in this file" in absent.stdout


def test_the_standalone_verifier_agrees_with_audit_verify_on_a_tampered_chain(
        world, auditor, runner, without_audit_triggers):
    seq = db.session.scalar(select(AuditEvent.seq).where(
        AuditEvent.comment == "Checked the contract"))
    db.session.execute(AuditEvent.__table__.update().where(
        AuditEvent.chain_id == world.northwind.id, AuditEvent.seq == seq
    ).values(comment="Nothing to see"))
    commit()
    cli = runner.invoke(args=["audit", "verify"])
    assert cli.exit_code == 1 and f"event #{seq} was edited" in cli.output

    for fmt in FORMATS:
        assert _request_export(auditor, world.northwind, fmt).status_code == 303
        run_export(_export().id)
        result = run_verifier(export_path(_export()))
        assert result.returncode == 1, fmt
        assert f"event #{seq} was edited: its content no longer matches its hash" in result.stdout


def test_the_export_header_carries_the_anchor_and_the_verifier_checks_it(world, auditor):
    anchor_all()
    commit()
    assert _request_export(auditor, world.northwind).status_code == 303
    run_export(_export().id)
    path = export_path(_export())
    result = run_verifier(path)
    assert result.returncode == 0 and "matches the anchor #" in result.stdout

    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    header = json.loads(lines[0])
    header["cleardesk_audit_export"]["anchor"]["hash"] = "cd" * 32
    lines[0] = json.dumps(header) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    forged = run_verifier(path)
    assert forged.returncode == 1 and "does not have the hash anchored at" in forged.stdout


def test_a_date_range_exports_only_the_events_of_those_local_days(world, auditor):
    assert _request_export(auditor, world.northwind, date_from="2020-01-01",
                           date_to="2020-01-31").status_code == 303
    run_export(_export().id)
    export = _export()
    assert export.total == 0 and export.status == "done"
    assert run_verifier(export_path(export)).returncode == 0


# ---------------------------------------------------------------------------------------------
# Progress and download.


def test_only_the_requester_sees_and_downloads_an_export(world, auditor, exported, sign_in):
    page = auditor.get(f"/audit/exports/{exported.id}")
    assert page.status_code == 200 and exported.sha256 in page.text

    with auditor.get(f"/audit/exports/{exported.id}/download") as download:
        assert download.status_code == 200
        assert download.data == export_path(exported).read_bytes()
        assert f"filename={exported.file_name}" in download.headers["Content-Disposition"]
    [event] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "audit.export_downloaded"))
    assert event.actor_id == world.auditor.id and event.data["sha256"] == exported.sha256
    # Another auditor or admin is told it does not exist; someone who audits nothing is refused
    # the audit pages whatever export they name.
    for other, status in ((world.admin, 404), (world.contoso_auditor, 404),
                          (world.approver, 403)):
        client = sign_in(other)
        assert client.get(f"/audit/exports/{exported.id}").status_code == status, other.email
        with client.get(f"/audit/exports/{exported.id}/download") as refused:
            assert refused.status_code == status


def test_an_unfinished_export_cannot_be_downloaded(world, auditor):
    _request_export(auditor, world.northwind)
    response = auditor.get(f"/audit/exports/{_export().id}/download")
    assert response.status_code == 409
    assert db.session.scalar(select(func.count()).where(
        AuditEvent.action == "audit.export_downloaded")) == 0


@pytest.fixture
def relaying(app):
    app.config["OUTBOX_RELAY_ON_COMMIT"] = True
    # The worker is another process with the default folder; so is this app for the test.
    app.config["AUDIT_EXPORT_DIR"] = None
    written = set(Path(app.instance_path, "exports").glob("*"))
    yield app
    empty_queues(app)
    for path in set(Path(app.instance_path, "exports").glob("*")) - written:
        path.unlink()


def test_a_real_worker_writes_the_export_and_the_progress_endpoint_follows_it(
        relaying, inbox, world, auditor):
    response = _request_export(auditor, world.northwind, "csv")
    export = _export()
    queued = auditor.get(f"/audit/exports/{export.id}", headers={"HX-Request": "true"})
    assert queued.text.lstrip().startswith('<section id="export-progress"')
    assert 'hx-trigger="every 1s"' in queued.text and ">queued<" in queued.text

    worker = run_worker(relaying)

    export = _export()
    assert export.status == "done", worker.stderr[-4000:]
    assert export.progress == export.total > 0
    assert Path(relaying.instance_path, "exports", export.file_name) == export_path(export)
    done = auditor.get(response.headers["Location"], headers={"HX-Request": "true"})
    assert ">done<" in done.text and 'value="100"' in done.text
    assert "hx-trigger" not in done.text  # it stops polling
    assert f"/audit/exports/{export.id}/download" in done.text
    assert run_verifier(export_path(export)).returncode == 0


def _age_exports() -> None:
    from datetime import timedelta

    for export in db.session.scalars(select(AuditExport)):
        export.requested_at -= timedelta(minutes=11)
    commit()


def _run_outbox_only() -> None:
    """Deliver the outbox message (which queues the export job) without running the export."""
    from app.outbox.jobs import deliver_message

    for message_id in db.session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.processed_at.is_(None),
                                           OutboxMessage.topic == "audit.export_requested")):
        deliver_message(message_id)


def test_an_export_whose_job_vanished_from_redis_is_queued_again_by_the_sweep(
        relaying, inbox, world, auditor):
    from app.audit.jobs import export_job_id, sweep_stale_exports

    _request_export(auditor, world.northwind, "csv")
    queue = Queue(relaying.config["RQ_QUEUE"], connection=Redis.from_url(relaying.config["REDIS_URL"]))
    job_id = export_job_id(queue.name, _export().id)
    # Just asked for: its job is still on its way through the outbox; the sweep waits.
    assert sweep_stale_exports() == "0 exports queued again, 0 marked failed"
    _age_exports()
    _run_outbox_only()
    assert queue.fetch_job(job_id) is not None
    assert sweep_stale_exports() == "0 exports queued again, 0 marked failed"  # job is there

    queue.fetch_job(job_id).delete()  # Redis lost it (flushed, restarted without its data)
    assert sweep_stale_exports() == "1 exports queued again, 0 marked failed"
    assert queue.fetch_job(job_id) is not None
    run_worker(relaying)
    assert _export().status == "done"
    assert sweep_stale_exports() == "0 exports queued again, 0 marked failed"


def test_an_export_whose_job_rq_gave_up_on_is_marked_failed_with_the_reason(
        relaying, world, auditor):
    from rq.job import JobStatus

    from app.audit.jobs import export_job_id, sweep_stale_exports

    _request_export(auditor, world.northwind, "csv")
    _age_exports()
    _run_outbox_only()
    queue = Queue(relaying.config["RQ_QUEUE"], connection=Redis.from_url(relaying.config["REDIS_URL"]))
    job = queue.fetch_job(export_job_id(queue.name, _export().id))
    job.set_status(JobStatus.FAILED)  # what RQ does when the worker died at every retry

    assert sweep_stale_exports() == "0 exports queued again, 1 marked failed"
    export = _export()
    assert export.status == "failed" and "ask for the export again" in export.error
    assert export.finished_at is not None
