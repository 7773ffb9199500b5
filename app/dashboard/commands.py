"""`flask dashboard rebuild-rollups`: recompute the dashboard rollups from the items (after a
bulk load that bypassed the write path, or once after upgrading to the rollup tables)."""
from __future__ import annotations

import time

import click
from flask.cli import AppGroup

from app.extensions import db
from app.unit_of_work import commit
from app.work.rollups import rebuild_rollups

dashboard_cli = AppGroup("dashboard", help="Manager dashboard maintenance.")


@dashboard_cli.command("rebuild-rollups")
def rebuild_rollups_command() -> None:
    """Recompute the rollup tables in one transaction (readers see the old or the new)."""
    started = time.monotonic()
    result = rebuild_rollups(db.session)
    commit()
    click.echo(f"Rolled up {result['items']:,} items and {result['steps']:,} decided steps into "
               f"{result['daily_rows']:,} daily, {result['step_rows']:,} step, "
               f"{result['open_rows']:,} backlog and {result['due_rows']:,} due-slot rows in "
               f"{time.monotonic() - started:.1f}s.")
