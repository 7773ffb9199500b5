"""`flask audit anchor`: verify every chain now and anchor it (what the hourly job does)."""
from __future__ import annotations

import sys
import time

import click
from sqlalchemy import select

from app.audit.services import anchor_all
from app.cli import audit_cli
from app.extensions import db
from app.models import Tenant
from app.unit_of_work import commit


@audit_cli.command("anchor")
def audit_anchor_command() -> None:
    """Verify every chain and record how far it verified; alert the admins and exit 1 if one
    is broken."""
    names = {t.id: t.slug for t in db.session.scalars(select(Tenant))}
    started = time.monotonic()
    reports = anchor_all()
    commit()
    for r in reports:
        name = names.get(r.chain_id, "global" if r.chain_id == 0 else f"chain {r.chain_id}")
        status = f"anchored at #{r.events}" if r.ok else f"BROKEN, admins alerted: {r.problem}"
        click.echo(f"{name:>12}: {status}")
    click.echo(f"Verified {sum(r.events for r in reports):,} events in "
               f"{time.monotonic() - started:.2f}s.")
    if any(not r.ok for r in reports):
        sys.exit(1)
