"""The policy worker through a real Redis and real `rq worker` processes: arrivals decided
through the outbox, and a sweep killed half-way that a new worker finishes, deciding every
item exactly once with the audit chain intact."""
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.actors import Actor
from app.audit.models import AuditEvent
from app.audit.services import verify_all
from app.extensions import db
from app.jobs import enqueue
from app.models import WorkItem
from app.policy.models import PolicyDecision
from app.unit_of_work import commit
from app.work.services import create_item
from tests.conftest import empty_queues

ROOT = Path(__file__).resolve().parents[2]
AUTO = ("Small discounts", "amount <= 1000 and discount_pct <= 10", "auto_approve", "")
CHAIN = ("Large deals", "amount > 50000", "steps", "approver >= 10000\nmanager >= amount")


def _worker_env(app) -> dict:
    return dict(os.environ, DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
                REDIS_URL=app.config["REDIS_URL"], RQ_QUEUE=app.config["RQ_QUEUE"])


def _command(burst: bool) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--without-scheduler",
            *(["--burst"] if burst else [])]


def run_burst_worker(app) -> subprocess.CompletedProcess:
    return subprocess.run(_command(True), cwd=ROOT, env=_worker_env(app), capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def relaying(app):
    app.config["OUTBOX_RELAY_ON_COMMIT"] = True
    yield app
    empty_queues(app)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _decision_events_per_item() -> tuple[int, set[int]]:
    """How many items have a decision event (approved or routed by the policy), and the
    numbers of such events an item has: (n, {1}) when each was decided exactly once."""
    rows = db.session.execute(
        select(AuditEvent.item_id, func.count())
        .where(AuditEvent.action.in_(("item.approve", "policy.routed")))
        .group_by(AuditEvent.item_id)).all()
    return len(rows), {n for _i, n in rows}


def _decided() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(PolicyDecision)
                             .where(PolicyDecision.outcome.is_not(None)))


def test_arrivals_are_decided_by_a_real_worker_through_the_outbox(
        relaying, admins, make_policy, make_item, make_user):
    tenant, author, checker = admins
    make_user("a@example.com", [tenant], roles=("approver",), limit="20000")
    make_user("m@example.com", [tenant], roles=("manager",), limit="1000000")
    policy = make_policy(tenant, author, checker, [AUTO, CHAIN])
    small = make_item(tenant, amount="800.00", details={"discount_pct": "5"})
    large = make_item(tenant, amount="75000.00", details={"discount_pct": "5"})
    worker = run_burst_worker(relaying)
    assert worker.returncode == 0, worker.stderr
    db.session.expire_all()
    small, large = db.session.get(WorkItem, small.id), db.session.get(WorkItem, large.id)
    assert small.state == "approved" and small.policy_version == policy.version
    assert large.state == "pending" and [s.role for s in large.steps] == ["approver", "manager"]
    [approved] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == small.id, AuditEvent.action == "item.approve")).all()
    assert (approved.actor_type, approved.data["policy_version"], approved.data["rule"]) == (
        "policy", policy.version, 1)
    [routed] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == large.id, AuditEvent.action == "policy.routed")).all()
    assert routed.actor_type == "policy" and routed.data["rule_name"] == "Large deals"


def test_the_qa_sample_lands_in_the_qa_queue_page_through_a_real_worker(
        relaying, admins, make_policy, make_item, make_user, client, auth):
    """A sampled would-be auto-approval is decided by the worker into the "QA sample" team
    queue: the QA role (here: managers) sees it listed and counted there and approves it; an
    approver, who is not the QA role, has no such queue."""
    import re
    from urllib.parse import quote

    from tests.conftest import csrf_from

    tenant, author, checker = admins
    make_user("qa@example.com", [tenant], roles=("manager",), limit="1000000")
    make_user("a@example.com", [tenant], roles=("approver",), limit="20000")
    make_policy(tenant, author, checker, [AUTO], qa_sample_pct="100", qa_role="manager")
    sampled = make_item(tenant, amount="800.00", details={"discount_pct": "5"})
    other = make_item(tenant, amount="5000.00", details={"discount_pct": "5"})  # fallback
    worker = run_burst_worker(relaying)
    assert worker.returncode == 0, worker.stderr
    db.session.expire_all()
    assert db.session.get(PolicyDecision, sampled.id).outcome == "qa_sample"
    auth.login("qa@example.com")
    page = client.get("/queues/" + quote("@QA sample"))
    assert page.status_code == 200
    assert [int(i) for i in re.findall(r'id="row-(\d+)"', page.text)] == [sampled.id]
    assert re.search(r'data-queue="@QA sample">1<', page.text)
    response = client.post(f"/items/{sampled.id}/act",
                           headers={"HX-Request": "true", "X-CSRFToken": csrf_from(page.text)},
                           data={"action": "approve", "comment": "checked",
                                 "queue": "@QA sample", "filters": ""})
    assert response.status_code == 200
    assert f'<template><tr id="row-{sampled.id}" hx-swap-oob="delete">' in response.text
    assert 'data-queue="@QA sample">0<' in response.text
    db.session.expire_all()
    assert db.session.get(WorkItem, sampled.id).state == "approved"
    auth.login("a@example.com")
    assert client.get("/queues/" + quote("@QA sample")).status_code == 404
    assert "QA sample" not in client.get("/queues/unassigned").text
    assert other.id


def test_exceptions_are_routed_by_a_real_worker_through_the_outbox(
        relaying, admins, make_policy, make_item, make_user):
    tenant, author, checker = admins
    analyst = make_user("ava@example.com", [tenant], roles=("analyst",))
    make_policy(tenant, author, checker, [
        {"name": "Tax failures to an analyst", "kind": "billing_exception",
         "condition": 'subtype == "tax_validation_failed"', "outcome": "assign",
         "assign_role": "analyst"},
        {"name": "Big deltas", "kind": "settlement_dispute", "condition": "delta_pct > 20",
         "outcome": "queue", "queue": "Partner disputes", "set_priority": "high"}])
    tax = make_item(tenant, kind="billing_exception", subtype="tax_validation_failed",
                    amount="1200.00")
    dispute = make_item(tenant, kind="settlement_dispute", amount="10000.00",
                        calculated_amount="7000.00")
    worker = run_burst_worker(relaying)
    assert worker.returncode == 0, worker.stderr
    db.session.expire_all()
    tax, dispute = db.session.get(WorkItem, tax.id), db.session.get(WorkItem, dispute.id)
    assert tax.assignee_id == analyst.id and tax.state == "open"
    assert (dispute.team_queue, dispute.priority) == ("Partner disputes", "high")
    [routed] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == dispute.id, AuditEvent.action == "policy.routed")).all()
    assert routed.actor_type == "policy" and routed.data["rule_name"] == "Big deltas"
    assert all(report.ok for report in verify_all())


def test_a_sweep_killed_half_way_is_finished_by_a_new_worker_each_item_decided_once(
        app, admins, make_policy):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [AUTO, CHAIN])
    system = Actor.system("tests")
    for n in range(2000):
        create_item(system, tenant_id=tenant.id, kind="approval", subtype="discount",
                    title="Load", external_ref=f"K-{n}", source_system="tests",
                    counterparty=f"Customer {n % 40}", amount=str(200 + (n % 7) * 150),
                    details={"discount_pct": str(n % 15)})
    commit()
    enqueue("app.policy.jobs.sweep_undecided", 20, 600)
    first = subprocess.Popen(_command(False), cwd=ROOT, env=_worker_env(app),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _decided() < 200:
            assert time.monotonic() < deadline, "the sweep did not start"
            assert first.poll() is None, "the worker stopped"
            time.sleep(0.02)
    finally:
        # The work-horse runs the sweep in a session of its own: kill it and the worker.
        for pid in [*_children(first.pid), first.pid]:
            os.kill(pid, signal.SIGKILL)
        first.wait()
    part = _decided()
    assert 200 <= part < 2000, "the worker was not killed half-way"

    sweep = enqueue("app.policy.jobs.sweep_undecided", 500, 600)  # the next periodic sweep
    second = subprocess.Popen(_command(False), cwd=ROOT, env=_worker_env(app),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Only the sweep matters here, not the mail and state-change deliveries it queues.
        deadline = time.monotonic() + 240
        while sweep.get_status(refresh=True) not in ("finished", "failed"):
            assert time.monotonic() < deadline and second.poll() is None, "the sweep hung"
            time.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert sweep.get_status() == "finished"
    assert _decided() == 2000
    assert _decision_events_per_item() == (2000, {1})
    approved = db.session.scalar(select(func.count()).select_from(WorkItem)
                                 .where(WorkItem.state == "approved"))
    assert approved == db.session.scalar(select(func.count()).select_from(AuditEvent)
                                         .where(AuditEvent.action == "item.approve"))
    assert all(report.ok for report in verify_all())
    audit = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "audit", "verify"],
                           cwd=ROOT, env=_worker_env(app), capture_output=True, text=True,
                           timeout=120)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_batch_of_arrivals_is_decided_once_each_through_its_batch_messages(
        relaying, admins, make_policy, make_user):
    from app.outbox.models import OutboxMessage
    from app.work.services import create_items

    tenant, author, checker = admins
    make_user("a@example.com", [tenant], roles=("approver",), limit="20000")
    make_user("m@example.com", [tenant], roles=("manager",), limit="1000000")
    make_policy(tenant, author, checker, [AUTO, CHAIN])
    rows = [{"kind": "approval", "subtype": "discount", "title": f"Deal {n}",
             "external_ref": f"B-{n}", "source_system": "crm", "counterparty": f"C {n % 9}",
             "amount": "800.00" if n % 2 else "75000.00", "details": {"discount_pct": "5"}}
            for n in range(40)]
    relaying.config["OUTBOX_BATCH_ITEMS"] = 25
    ids, _existing = create_items(Actor.system("tests"), tenant.id, rows)
    commit()
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage).where(
        OutboxMessage.topic == "items.created")) == 2
    assert db.session.scalar(select(func.count()).select_from(PolicyDecision).where(
        PolicyDecision.decided_at.is_(None))) == 40
    worker = run_burst_worker(relaying)
    assert worker.returncode == 0, worker.stderr
    assert _decided() == 40
    states = dict(db.session.execute(select(WorkItem.state, func.count()).where(
        WorkItem.id.in_(ids)).group_by(WorkItem.state)).all())
    assert states == {"approved": 20, "pending": 20}
    assert _decision_events_per_item() == (40, {1})
    assert all(report.ok for report in verify_all())


def test_a_sweep_on_postgresql_decides_in_two_lanes_each_item_once_and_tallies_the_day(
        app, admins, make_policy, caplog, monkeypatch):
    """Two batches at once on connections of their own (one's Python while the other waits for
    the database): every item decided once, the audit chain whole, and the day's auto-approval
    tally (no cap to read first, so added to at the end of each batch) counting each one."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: one lane")
    from app.policy.jobs import sweep_undecided
    from app.policy.models import PolicyBudgetDay
    from app.work.services import create_items

    tenant, author, checker = admins
    make_policy(tenant, author, checker, [AUTO, CHAIN])
    rows = [{"kind": "approval", "subtype": "discount", "title": f"Deal {n}",
             "external_ref": f"L-{n}", "source_system": "crm", "counterparty": f"C {n % 30}",
             "amount": "800.00" if n % 3 else "75000.00", "details": {"discount_pct": "5"}}
            for n in range(1200)]
    create_items(Actor.system("tests"), tenant.id, rows)
    commit()
    app.config["POLICY_SWEEP_LANES"] = 2
    # Alembic's logging set-up (run by the suite's migrations) disables existing loggers.
    monkeypatch.setattr(app.logger, "disabled", False)
    with caplog.at_level("INFO", logger=app.logger.name):
        assert sweep_undecided(batch=50, max_seconds=300) == 1200
    lanes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("policy sweep")]
    assert len(lanes) == 1 and "in 2 lanes" in lanes[0]
    per_lane = [int(n) for n in lanes[0].split("(")[1].rstrip(")").split(", ")]
    assert len(per_lane) == 2 and all(n > 0 for n in per_lane), per_lane  # both lanes decided
    assert _decided() == 1200
    assert _decision_events_per_item() == (1200, {1})
    approved = db.session.scalar(select(func.count()).select_from(WorkItem)
                                 .where(WorkItem.state == "approved"))
    assert approved == 800
    tally = db.session.scalars(select(PolicyBudgetDay).where(
        PolicyBudgetDay.tenant_id == tenant.id)).one()
    assert (tally.count, tally.amount) == (800, Decimal("640000.00"))
    assert all(report.ok for report in verify_all())
