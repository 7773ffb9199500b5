"""Command-line entry points: seeding, users, tokens, audit verification, and the RQ processes."""
from __future__ import annotations

import sys
import time

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select, text

from app.actors import Actor
from app.extensions import db
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
    from app.access import access_of

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
    from app.demo.seed import DEMO_PASSWORD, USERS, SeedRefused, seed_demo

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
    commit()
    from app.demo.journeys import seed_journeys

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
    from app.admin.services import grant_membership
    from app.auth.services import create_user
    from app.errors import DomainError
    from app.models import Tenant

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
    from app.api.tokens import issue_token
    from app.errors import DomainError
    from app.models import Tenant

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

    from app.mail.sink import last_approval_link, sink_log_path

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
    from app.audit.services import verify_all
    from app.models import Tenant

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


WORKER_MAINTENANCE_SECONDS = 60
WORKER_TTL_SECONDS = 60


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
    from rq import SimpleWorker, Worker

    from app.jobs import URGENCIES, keep_running, redis_connection, worker_queues

    wanted = [q.strip() for q in queues.split(",") if q.strip()] or list(URGENCIES)
    unknown = [q for q in wanted if q not in URGENCIES]
    if unknown:
        raise click.BadParameter(f"unknown queue {', '.join(unknown)}; "
                                 f"choose from {', '.join(URGENCIES)}", param_hint="--queues")

    in_process = current_app.config["WORKER_CLASS"] == "simple"
    app = current_app._get_current_object()

    class _Worker(SimpleWorker if in_process else Worker):
        signalled = False

        def request_stop(self, signum, frame):
            _Worker.signalled = True
            super().request_stop(signum, frame)

        def perform_job(self, job, queue):
            if not in_process:  # a forked work-horse: its own process, nothing carries over
                return super().perform_job(job, queue)
            # In the worker's own process: each job in a fresh app context, so nothing of one
            # job (the database session, `g`) is left for the next.
            with app.app_context():
                return super().perform_job(job, queue)

    def run() -> bool:
        # A forking worker starts a work-horse per job; no database connection may cross the
        # fork.
        db.engine.dispose()
        # Maintenance every minute, not RQ's ten, and an idle worker waking every 45 s to do
        # it (RQ's default waits 405 s for a job): a job whose worker was killed outright is
        # retried once its heartbeat lapses, and the scheduler lock a killed worker held is
        # taken over (else a retry scheduled on its queues never runs).
        worker = _Worker(worker_queues(wanted), connection=redis_connection(),
                         maintenance_interval=WORKER_MAINTENANCE_SECONDS,
                         worker_ttl=WORKER_TTL_SECONDS)
        try:
            worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="INFO")
        except Exception:
            if _Worker.signalled:  # asked to stop; its farewell to a Redis that is gone failed
                return True
            raise
        return burst or _Worker.signalled  # True: it ended as asked; else RQ's loop gave up

    keep_running(run, "worker")


@click.command("cron")
def cron_command() -> None:
    """Run the periodic scheduler (exactly one per deployment): enqueues PERIODIC_JOBS on the
    sweeps queue. Outlives Redis outages like `flask worker`."""
    from pydoc import locate

    from rq.cron import CronScheduler

    from app.jobs import PERIODIC_JOBS, SWEEPS, keep_running, queue_name, redis_connection

    class _Scheduler(CronScheduler):
        signalled = False

        def _request_stop(self, signum, frame):
            _Scheduler.signalled = True
            super()._request_stop(signum, frame)

    def run() -> bool:
        scheduler = _Scheduler(connection=redis_connection())
        for path, interval in PERIODIC_JOBS:
            scheduler.register(locate(path), queue_name=queue_name(SWEEPS), interval=interval)
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
    from app.outbox.services import pending_message_ids, relay

    click.echo(f"Relayed {relay(pending_message_ids())} messages.")
