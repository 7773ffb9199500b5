"""Background work by urgency, through a real Redis and real `flask worker` processes started
as `make run` starts them: mail people wait for goes out within seconds while a 10,000-row
import and a backlog of webhook deliveries to two subscriptions wait on their own queues."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import func, select

from app.admin.people import invite_user
from app.extensions import db
from app.imports import services as imports
from app.imports.models import ImportJob
from app.jobs import queue_of_job, queue_of_topic, worker_queues
from app.outbox.jobs import deliver_message
from app.outbox.models import OutboxMessage
from app.unit_of_work import commit
from app.webhooks import services as webhooks
from app.webhooks.jobs import retry_due_deliveries
from app.webhooks.models import WebhookDelivery
from app.work.services import create_item, create_items
from tests.approvals.conftest import ROOT, free_port, inbox, relaying, team  # noqa: F401
from tests.conftest import SYSTEM, actor

BILLING_HEADER = "exception_id,invoice_number,customer,exception_type,amount,currency,region\n"
# The sets `make run` starts a worker for by default (WORKER_QUEUE_SETS).
MAKE_RUN_SETS = ("urgent,sweeps,default", "urgent,bulk,default")


def _workers(app) -> list[subprocess.Popen]:
    config = app.config
    env = dict(os.environ, DATABASE_URL=config["SQLALCHEMY_DATABASE_URI"],
               REDIS_URL=config["REDIS_URL"], RQ_QUEUE=config["RQ_QUEUE"],
               SECRET_KEY=config["SECRET_KEY"], SMTP_HOST=config["SMTP_HOST"],
               SMTP_PORT=str(config["SMTP_PORT"]), APP_BASE_URL=config["APP_BASE_URL"],
               WEBHOOK_ALLOW_PRIVATE_TARGETS="1", WEBHOOK_TIMEOUT_SECONDS="2")
    return [subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--without-scheduler",
         "--queues", queues], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True) for queues in MAKE_RUN_SETS]


def _stop(workers) -> None:
    for worker in workers:  # each with its work-horse: its own process group
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait(30)


def _backlog_of_webhooks(tenant) -> int:
    """Two subscriptions that want every new item, 1,000 items created as an import creates
    them, and their deliveries queued (a job per webhook, each sending its backlog in
    batches): the integration backlog, 2,000 deliveries to a receiver that is down."""
    closed = free_port()  # nobody listens: each attempt fails fast and is retried later
    for n in (1, 2):
        webhooks.create_subscription(SYSTEM, tenant.id, url=f"http://127.0.0.1:{closed}/h{n}",
                                     events=["item.created"])
    commit()
    rows = [dict(kind="billing_exception", subtype="payment_failed", title=f"Backlog {n}",
                 external_ref=f"B-{n}", source_system="billing", counterparty="Acme",
                 amount=f"{n + 1}.00") for n in range(1000)]
    create_items(SYSTEM, tenant.id, rows)
    commit()
    for message_id in db.session.scalars(select(OutboxMessage.id).where(
            OutboxMessage.topic == "items.created")).all():
        deliver_message(message_id)  # fans out: 2,000 deliveries
    return retry_due_deliveries()


def _undelivered() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(WebhookDelivery).where(
        WebhookDelivery.status == "pending"))


def test_mail_to_people_goes_within_seconds_behind_an_import_and_a_webhook_backlog(
        relaying, inbox, team, make_user):
    relaying.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
    tenant, analyst = team["tenant"], team["other"]
    assert _backlog_of_webhooks(tenant) == 2  # one job per webhook
    assert [job.func_name for job in queue_of_job("app.webhooks.jobs.deliver_webhook").jobs
            ].count("app.webhooks.jobs.deliver_webhook") == 2
    assert _undelivered() == 2000

    text = BILLING_HEADER + "".join(
        f"EX-{n},INV-{n},Customer {n % 97},payment_failed,{n % 5000 + 1}.25,USD,us\n"
        for n in range(10_000))
    job = imports.upload(actor(analyst), tenant.id, format_name="billing_export",
                         filename="big.csv", raw=text.encode())
    commit()
    imports.confirm_import(actor(analyst), job.id)
    commit()
    import_message = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "import.requested")).one()
    assert queue_of_topic("import.requested").fetch_job(
        f"outbox-{relaying.config['RQ_QUEUE']}-{import_message.id}") is not None

    # Now the people: an invitation, and an approval whose approver is mailed a link.
    admin = make_user("adam@x.test", [tenant], roles=("admin",))
    invite_user(actor(admin), tenant, email="newcomer@x.test", name="Nia Newcomer",
                roles=["approver"], approval_limit="1000")
    commit()
    create_item(SYSTEM, tenant_id=tenant.id, kind="approval", subtype="discount",
                title="Renewal discount", external_ref="R-1", source_system="crm",
                counterparty="Acme", amount="1200.00", requester_id=team["requester"].id)
    commit()

    workers = _workers(relaying)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 60:
            if inbox.to("newcomer@x.test") and inbox.to("ann@x.test"):
                break
            time.sleep(0.1)
        waited = time.monotonic() - started
        assert inbox.to("newcomer@x.test"), "no invitation within a minute"
        assert inbox.to("ann@x.test"), "no approval request within a minute"
        # Seconds, on a loaded machine: a worker's start and the two mails' own jobs.
        assert waited < 15, f"the mails took {waited:.1f}s"
        # The heavy work was there all along, and is still going on behind them.
        db.session.expire_all()
        assert db.session.get(ImportJob, job.id).status != "succeeded"
    finally:
        _stop(workers)
        for queue in worker_queues():
            queue.empty()
