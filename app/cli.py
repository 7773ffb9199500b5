"""Command-line entry points: seeding, users, tokens, audit verification, and the RQ processes."""
from __future__ import annotations

import sys
import time

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select, text

from app.access import access_of
from app.actors import Actor
from app.admin.people import grant_membership
from app.api.tokens import issue_token
from app.audit.services import verify_all
from app.auth.services import create_user
from app.demo.journeys import seed_journeys
from app.demo.seed import DEMO_PASSWORD, USERS, SeedFailed, SeedRefused, seed_demo
from app.errors import DomainError
from app.extensions import db
from app.jobs import (
    JOB_TIMEOUTS,
    keep_running,
    PERIODIC_JOBS,
    queue_name,
    redis_connection,
    SWEEPS,
    URGENCIES,
    worker_queues,
)
from app.mail.sink import last_approval_link, sink_log_path
from app.models import Tenant
from app.outbox.services import pending_message_ids, relay
from app.unit_of_work import as_unit_of_work, commit


def register_cli(app: Flask) -> None:
    app.cli.add_command(seed_demo_command)
    app.cli.add_command(create_user_command)
    app.cli.add_command(create_token_command)
    app.cli.add_command(audit_cli)
    app.cli.add_command(worker_command)
    app.cli.add_command(cron_command)
    app.cli.add_command(relay_outbox_command)
    app.cli.add_command(access_command)
    app.cli.add_command(mail_cli)


@click.command("access")
def access_command() -> None:
    """Print who may use each route: the access table the app enforces."""
    rules = sorted(current_app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint))
    width = max(len(r.rule) for r in rules)
    for rule in rules:
        by_access: dict[str, list[str]] = {}
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            by_access.setdefault(str(access_of(current_app, rule.endpoint, method)),
                                 []).append(method)
        for access, methods in by_access.items():
            click.echo(f"{rule.rule:{width}}  {','.join(methods):8}  {access}")


@click.command("seed-demo")
@click.option("--items", default=3000, show_default=True, help="How many work items to create.")
@click.option("--if-empty", is_flag=True, help="Do nothing (and succeed) if there is data.")
def seed_demo_command(items: int, if_empty: bool) -> None:
    """Create the demo tenants, users and work items (refused when APP_ENV=production)."""
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        click.echo(f"  {done:,} / {total:,} items ({time.monotonic() - started:.0f}s)", err=True)

    try:
        result = seed_demo(items=items, progress=progress)
    except SeedRefused as refused:
        db.session.rollback()
        if if_empty and current_app.config["APP_ENV"] != "production":
            click.echo(f"Demo data not seeded: {refused}")
            return
        raise click.ClickException(str(refused)) from None
    except SeedFailed as failed:
        raise click.ClickException(str(failed)) from None
    commit()

    journeys = seed_journeys()  # the demo requester's requests in every state, by the write path
    if db.engine.dialect.name == "postgresql":
        # VACUUM (outside any transaction) fills the visibility map, so counts over the open
        # items are index-only scans from the start, not after autovacuum gets round to it.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE work_items"))
    click.echo(f"Seeded {result['tenants']} tenants, {result['users']} users and "
               f"{result['items'] + journeys:,} items in {time.monotonic() - started:.1f}s.")
    click.echo(f"Demo users (password '{DEMO_PASSWORD}'): " + ", ".join(u[0] for u in USERS))


@click.command("create-user")
@click.option("--email", required=True)
@click.option("--name", default=None)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--tenant", "tenant_slugs", multiple=True, help="Tenant slug (repeatable).")
@click.option("--role", "roles", multiple=True, help="Role in those tenants (repeatable).")
@click.option("--limit", "approval_limit", default="0", show_default=True)
@as_unit_of_work
def create_user_command(email, name, password, tenant_slugs, roles, approval_limit) -> None:
    """Create a user, optionally with roles and an approval limit in some tenants."""
    actor = Actor.system("cli")
    try:
        user = create_user(actor, email=email, name=name or email, password=password)
        for slug in tenant_slugs:
            tenant = db.session.scalars(select(Tenant).where(Tenant.slug == slug)).one_or_none()
            if tenant is None:
                raise click.ClickException(f"No tenant '{slug}'.")
            grant_membership(actor, user=user, tenant=tenant, roles=list(roles),
                             approval_limit=approval_limit)
    except DomainError as error:
        detail = "; ".join(f"{k} {v}" for k, v in getattr(error, "fields", {}).items())
        raise click.ClickException(f"{error.message} {detail}".strip()) from None
    click.echo(f"Created {user.email}.")


@click.command("create-token")
@click.option("--tenant", "slug", required=True, help="Tenant slug.")
@click.option("--name", default="cli", show_default=True)
@click.option("--scope", "scopes", multiple=True,
              default=("items:read", "items:write", "decisions:write"), show_default=True)
@as_unit_of_work
def create_token_command(slug: str, name: str, scopes: tuple[str, ...]) -> None:
    """Print a new API token for a tenant. Only its hash is stored; it cannot be shown again."""
    tenant = db.session.scalars(select(Tenant).where(Tenant.slug == slug)).one_or_none()
    if tenant is None:
        raise click.ClickException(f"No tenant '{slug}'.")
    try:
        _row, token = issue_token(Actor.system("cli"), tenant.id, name, scopes)
    except DomainError as error:
        detail = "; ".join(f"{k} {v}" for k, v in getattr(error, "fields", {}).items())
        raise click.ClickException(f"{error.message} {detail}".strip()) from None
    click.echo(token)


mail_cli = AppGroup("mail", help="Mail caught by the local sink (development).")


@mail_cli.command("last-link")
@click.option("--to", "to", default=None, help="Only mail to this address (or part of it).")
@click.option("--log", "log", default=None, type=click.Path(dir_okay=False),
              help="The sink's log (default: MAIL_SINK_LOG, which `make run` sets to "
                   ".run/mail.log).")
def mail_last_link_command(to: str | None, log: str | None) -> None:
    """Print the newest approval link (/a/...) the local sink caught, decoded and usable."""
    from pathlib import Path

    path = Path(log) if log else (sink_log_path() or Path(".run/mail.log"))
    if not path.is_file():
        raise click.ClickException(f"No mail log at {path}: `make run` writes one (or pass "
                                   "--log).")
    link = last_approval_link(path, to)
    if link is None:
        raise click.ClickException(
            "No approval link in the mail log yet" + (f" for {to}" if to else "") + ". "
            "Submit a request (as requester@cleardesk.demo, New request) and let the worker "
            "route it; its approver is mailed a link.")
    click.echo(link)


audit_cli = AppGroup("audit", help="The audit trail.")


@audit_cli.command("verify")
def audit_verify_command() -> None:
    """Verify every chain; exit 1 naming the first bad event of each broken chain."""
    names = {t.id: t.slug for t in db.session.scalars(select(Tenant))}
    started = time.monotonic()
    reports = verify_all()
    total = sum(r.events for r in reports)
    bad = [r for r in reports if not r.ok]
    for r in reports:
        name = names.get(r.chain_id, "global" if r.chain_id == 0 else f"chain {r.chain_id}")
        status = "ok" if r.ok else f"BROKEN: {r.problem}"
        click.echo(f"{name:>12}: {r.events:>9,} events {status}")
    elapsed = time.monotonic() - started
    click.echo(f"Verified {total:,} events in {elapsed:.2f}s.")
    if bad:
        sys.exit(1)


# How a dead worker's job is found and taken over. A worker beats every JOB_HEARTBEAT_SECONDS
# while it runs a job (a forking worker from its loop that waits for the work-horse, a simple
# worker from a thread beside the job), and each beat keeps the job's entry in RQ's started
# registry alive for JOB_HEARTBEAT_TTL seconds. Killed outright, it stops beating; the first
# worker whose maintenance (every WORKER_MAINTENANCE_SECONDS, also while idle: an idle worker
# wakes every WORKER_TTL_SECONDS - 15) finds the entry expired queues the job again at once (one
# of its retries spent) or, with none left, fails it (the sweeps catch that up). So a killed
# worker's job runs again within about JOB_HEARTBEAT_TTL + WORKER_MAINTENANCE_SECONDS, well
# under a minute, whatever the job's timeout. RQ's own defaults (the job's timeout plus 60 s for a simple worker,
# 90 s for a forking one, maintenance every ten minutes) left it for four minutes or more.
JOB_HEARTBEAT_SECONDS = 5
JOB_HEARTBEAT_TTL = 25
WORKER_MAINTENANCE_SECONDS = 15
WORKER_TTL_SECONDS = 30
# A job still running this long after its timeout was not stopped by it (stuck where the
# timeout's signal cannot reach): a simple worker then ends its own process, as a forking
# worker kills a work-horse that outlives its timeout, and its supervisor starts it again.
STUCK_AFTER_TIMEOUT_SECONDS = 60
# RQ holds a queue's maintenance lock for 15 minutes if its holder dies mid-maintenance; ours
# lapses sooner, so one kill at the wrong moment does not stop the queue being maintained.
MAINTENANCE_LOCK_SECONDS = 60


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--with-scheduler/--without-scheduler", default=True)
@click.option("--queues", envvar="WORKER_QUEUES", default="", show_default=False,
              help="Queues to listen to, comma-separated, taken in the order urgent, sweeps, "
                   "default, bulk (default: all; env WORKER_QUEUES).")
def worker_command(burst: bool, with_scheduler: bool, queues: str) -> None:
    """Run one RQ worker inside the app context (jobs use the app's database and config).
    It outlives Redis outages: when RQ's loop stops on a lost connection, the worker waits
    (1 s, doubling up to 30 s) and starts again; only a signal (or --burst) ends it."""
    wanted = [q.strip() for q in queues.split(",") if q.strip()] or list(URGENCIES)
    unknown = [q for q in wanted if q not in URGENCIES]
    if unknown:
        raise click.BadParameter(f"unknown queue {', '.join(unknown)}; "
                                 f"choose from {', '.join(URGENCIES)}", param_hint="--queues")

    worker_class = _worker_class(current_app._get_current_object(),
                                 in_process=current_app.config["WORKER_CLASS"] != "fork")

    def run() -> bool:
        # A forking worker starts a work-horse per job; no database connection may cross the
        # fork.
        db.engine.dispose()
        worker = worker_class(worker_queues(wanted), connection=redis_connection(),
                              maintenance_interval=WORKER_MAINTENANCE_SECONDS,
                              worker_ttl=WORKER_TTL_SECONDS,
                              job_monitoring_interval=JOB_HEARTBEAT_SECONDS)
        try:
            worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="INFO")
        except Exception:
            if worker_class.signalled:  # asked to stop; its farewell to a gone Redis failed
                return True
            raise
        return burst or worker_class.signalled  # True: it ended as asked; else RQ gave up

    keep_running(run, "worker")


def _worker_class(app: Flask, in_process: bool):
    """RQ's worker, taking over dead workers' jobs sooner (see JOB_HEARTBEAT_TTL). In process
    (WORKER_CLASS=simple, the default): each job in the worker's own process, in a fresh app
    context, so nothing of one job (the database session, `g`) is left for the next, with a
    thread that beats while the job runs. Else a forked work-horse per job (RQ's default)."""
    import os
    import signal
    import threading

    from rq import SimpleWorker, Worker
    from rq.registry import clean_registries
    from rq.utils import current_timestamp, now
    from rq.worker_registration import clean_worker_registry

    class _Worker(SimpleWorker if in_process else Worker):
        signalled = False

        def request_stop(self, signum, frame):
            _Worker.signalled = True
            super().request_stop(signum, frame)

        def get_heartbeat_ttl(self, job) -> int:
            return JOB_HEARTBEAT_TTL

        def clean_registries(self):
            # RQ's own, with a maintenance lock that lapses in a minute, not fifteen.
            for queue in self.queues:
                if self.connection.set(queue.registry_cleaning_key, 1, nx=True,
                                       ex=MAINTENANCE_LOCK_SECONDS):
                    self._requeue_abandoned(queue)
                    clean_registries(queue, self._exc_handlers)
                    clean_worker_registry(queue)
                    queue.intermediate_queue.cleanup(self, queue)
                    queue.release_maintenance_lock()
            self.last_cleaned_at = now()

        def _requeue_abandoned(self, queue) -> None:
            """Jobs whose worker stopped beating go back on their queue at once, at its front,
            one retry spent. (RQ would schedule each after its first retry interval, and
            scheduled jobs wait for the scheduler lock, which the dead worker may hold for
            another minute; the job has waited for its heartbeat to lapse already.) A job
            with no retry left is left to RQ, which fails it; the sweeps catch that up."""
            registry = queue.started_job_registry
            for entry in self.connection.zrangebyscore(registry.key, 0, current_timestamp()):
                job = queue.fetch_job(registry.parse_job_id(entry))
                if job is None or not job.retries_left:
                    continue
                self.log.warning("Worker %s: job %s was abandoned by its worker; queued again",
                                 self.name, job.id)
                job.retries_left -= 1
                self.connection.zrem(registry.key, entry)  # under the maintenance lock: once
                queue.enqueue_job(job, at_front=True)

        def perform_job(self, job, queue):
            if not in_process:  # a forked work-horse: its own process, nothing carries over
                return super().perform_job(job, queue)
            done = threading.Event()
            beating = threading.Thread(target=self._beat, args=(job, done), daemon=True,
                                       name="job heartbeat")
            beating.start()
            try:
                with app.app_context():
                    return super().perform_job(job, queue)
            finally:
                done.set()
                beating.join()

        def _beat(self, job, done: threading.Event) -> None:
            """Beside a job run in process: keep its started-registry entry alive while it
            runs; if it outlives its timeout by STUCK_AFTER_TIMEOUT_SECONDS, end the process."""
            stuck_at = (None if not job.timeout or job.timeout < 0
                        else time.monotonic() + job.timeout + STUCK_AFTER_TIMEOUT_SECONDS)
            while not done.wait(JOB_HEARTBEAT_SECONDS):
                if stuck_at is not None and time.monotonic() > stuck_at:
                    self.log.error("Worker %s: job %s ran %s s past its timeout; ending the "
                                   "worker so that its job is taken over", self.name, job.id,
                                   STUCK_AFTER_TIMEOUT_SECONDS)
                    os.kill(os.getpid(), signal.SIGKILL)
                try:
                    self.maintain_heartbeats(job)
                except Exception as exc:  # noqa: BLE001 - Redis away: the next beat tries again
                    self.log.warning("Worker %s: heartbeat failed: %s", self.name, exc)

    return _Worker


@click.command("cron")
def cron_command() -> None:
    """Run the periodic scheduler (exactly one per deployment): enqueues PERIODIC_JOBS on the
    sweeps queue. Outlives Redis outages like `flask worker`."""
    from pydoc import locate

    from rq.cron import CronScheduler

    class _Scheduler(CronScheduler):
        signalled = False

        def _request_stop(self, signum, frame):
            _Scheduler.signalled = True
            super()._request_stop(signum, frame)

    def run() -> bool:
        scheduler = _Scheduler(connection=redis_connection())
        for path, interval in PERIODIC_JOBS:
            scheduler.register(locate(path), queue_name=queue_name(SWEEPS), interval=interval,
                               job_timeout=JOB_TIMEOUTS[SWEEPS])
        try:
            scheduler.start()  # returns on a signal; raises when Redis goes away
        except Exception:
            if _Scheduler.signalled:  # asked to stop; its farewell to a gone Redis failed
                return True
            raise
        return True

    keep_running(run, "cron")


@click.command("relay-outbox")
def relay_outbox_command() -> None:
    """Relay outbox messages to RQ now (the periodic sweep does this every 30 seconds)."""
    click.echo(f"Relayed {relay(pending_message_ids())} messages.")
