"""Writing audit events into the chain, proving a chain was not altered (and anchoring how far
it was proven), alerting admins when it was, and the auditors' own audited actions."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Select, false, func, insert, or_, select, text, update

from app.actors import Actor
from app.audit.chain import (
    HASHED_FIELDS,
    LINK_JOIN,
    encoding_around_link,
    event_hash,
    values_hash,
)
from app.audit.formats import event_columns
from app.audit.models import (
    GENESIS_HASH,
    GLOBAL_CHAIN,
    AuditAlert,
    AuditAnchor,
    AuditChainHead,
    AuditEvent,
    AuditExport,
    ExportFormat,
    ExportStatus,
)
from app.bulk import insert_rows
from app.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import Role, Tenant
from app.outbox.services import add_message
from app.types import jsonable, utcnow
from app.unit_of_work import register_writer, unit_of_work


def dialect_insert():
    """The database's own INSERT construct (with ON CONFLICT), for upserts."""
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _advance_head(chain_id: int, count: int) -> tuple[int, str]:
    """Take the next `count` sequence numbers of a chain; returns the last one taken before
    and its hash. The UPDATE locks the head row until commit, so writers of one tenant queue
    here and the sequence stays gapless."""
    stmt = (
        update(AuditChainHead)
        .where(AuditChainHead.chain_id == chain_id)
        .values(last_seq=AuditChainHead.last_seq + count)
        .returning(AuditChainHead.last_seq, AuditChainHead.last_hash)
    )
    row = db.session.execute(stmt).one_or_none()
    if row is None:
        db.session.execute(
            dialect_insert()(AuditChainHead)
            .values(chain_id=chain_id, last_seq=0, last_hash=GENESIS_HASH)
            .on_conflict_do_nothing()
        )
        row = db.session.execute(stmt).one()
    return row.last_seq - count, row.last_hash


# Events recorded in a transaction wait in the session until it commits; then they take
# their sequence numbers and hashes. The head row of a chain is locked only for those last
# statements and the commit itself, not for the whole unit of work, so concurrent writers of
# one tenant hardly wait for each other (issue #7: the chain's cost under concurrency).
# Above this many events in one chain at once, COPY (which also has no limit of parameters; an
# INSERT may carry at most 65,535, some 4,000 events).
_COPY_FROM = 100


def record_event(
    actor: Actor,
    action: str,
    *,
    tenant_id: int | None,
    item_id: int | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    comment: str | None = None,
    on_behalf_of_id: int | None = None,
    data: dict | None = None,
) -> dict:
    """Append one event to the tenant's chain in the caller's transaction (never commits).
    The event is written when the transaction commits, and is lost with it if it rolls back
    (also when only the savepoint it was recorded in rolls back)."""
    chain_id = tenant_id if tenant_id is not None else GLOBAL_CHAIN
    payload = dict(data or {})
    if actor.ip:
        payload.setdefault("ip", actor.ip)
    if actor.user_agent:
        payload.setdefault("user_agent", actor.user_agent[:300])
    fields = {
        "chain_id": chain_id,
        "seq": None,
        "tenant_id": tenant_id,
        "occurred_at": utcnow(),
        "actor_type": actor.type.value,
        "actor_id": actor.user_id,
        "actor_label": actor.label or actor.type.value,
        "on_behalf_of_id": on_behalf_of_id,
        "action": action,
        "item_id": item_id,
        "from_state": from_state,
        "to_state": to_state,
        "comment": comment,
        "data": jsonable(payload),
        "prev_hash": None,
    }
    unit_of_work().add("audit_events", fields)
    return fields


# The usual case on PostgreSQL, one event in a transaction: the database numbers it, finishes
# its hash from the encoding cut around the link (app.audit.chain.encoding_around_link) and
# moves the head, in one statement: one round trip, and the head stays locked only from this
# statement to the commit.
_LINK_ONE = text("""
WITH head AS (
    UPDATE audit_chain_heads
       SET last_seq = last_seq + 1,
           prev_hash = last_hash,
           last_hash = encode(sha256(convert_to(
               CAST(:before AS text) || last_hash || CAST(:link_join AS text)
               || CAST(last_seq + 1 AS text) || CAST(:after AS text), 'UTF8')), 'hex')
     WHERE chain_id = :chain_id
 RETURNING last_seq, prev_hash, last_hash
)
INSERT INTO audit_events (chain_id, seq, tenant_id, occurred_at, actor_type, actor_id,
                          actor_label, on_behalf_of_id, action, item_id, from_state, to_state,
                          comment, data, prev_hash, hash)
SELECT CAST(:chain_id AS integer), last_seq, CAST(:tenant_id AS integer),
       CAST(:occurred_at AS timestamptz), CAST(:actor_type AS varchar),
       CAST(:actor_id AS integer), CAST(:actor_label AS varchar),
       CAST(:on_behalf_of_id AS integer), CAST(:action AS varchar), CAST(:item_id AS bigint),
       CAST(:from_state AS varchar), CAST(:to_state AS varchar), CAST(:comment AS text),
       CAST(:data AS json), prev_hash, last_hash
  FROM head
RETURNING seq, prev_hash, hash
""")


def _link_one(session, fields: dict) -> bool:
    """Write one event with _LINK_ONE; False when the chain has no head row yet."""
    before, after = encoding_around_link(fields)
    params = {name: fields[name] for name in HASHED_FIELDS if name not in ("seq", "prev_hash")}
    params.update(data=json.dumps(fields["data"]), before=before, after=after,
                  link_join=LINK_JOIN)
    row = session.execute(_LINK_ONE, params).one_or_none()
    if row is None:
        return False
    fields["seq"], fields["prev_hash"], fields["hash"] = row
    return True


def write_pending_events(session, pending: list[dict]) -> None:
    """Chain and insert the events the transaction recorded: lock each chain's head (in chain
    order, so two transactions never wait for each other crosswise), number and hash the
    events, insert them and move the head, in two statements per chain."""
    by_chain: dict[int, list[dict]] = {}
    for fields in pending:
        by_chain.setdefault(fields["chain_id"], []).append(fields)
    unit_of_work(session).changed_tenants.update(
        fields["tenant_id"] for fields in pending if fields["tenant_id"] is not None)
    postgres = session.get_bind().dialect.name == "postgresql"
    for chain_id in sorted(by_chain):
        events = by_chain[chain_id]
        if postgres and len(events) == 1 and _link_one(session, events[0]):
            continue
        seq, prev_hash = _advance_head(chain_id, len(events))
        for fields in events:
            seq += 1
            fields["seq"] = seq
            fields["prev_hash"] = prev_hash
            fields["hash"] = prev_hash = event_hash(fields)
        move_head = (update(AuditChainHead).where(AuditChainHead.chain_id == chain_id)
                     .values(last_hash=prev_hash, prev_hash=events[-1]["prev_hash"]))
        if postgres and len(events) > _COPY_FROM:
            # A worker's batch: COPY is several times faster than INSERT for many rows.
            insert_rows(AuditEvent.__table__, events)
            session.execute(move_head)
        else:
            session.execute(insert(AuditEvent.__table__), events)
            session.execute(move_head)


# Written last in the commit (UnitOfWork.WRITE_ORDER): the head row is the most contended lock
# a writer takes.
register_writer("audit_events", write_pending_events)


@dataclass
class ChainReport:
    chain_id: int
    events: int
    ok: bool
    problem: str | None = None
    bad_seq: int | None = None
    last_hash: str | None = None  # of the last event that verified


def _verify_columns(dialect: str) -> list:
    """What the walk reads: the exported columns (plain values, no ORM, no per-row type
    conversion; see app.audit.formats) and the id."""
    return [*event_columns(dialect), AuditEvent.__table__.c.id]


def _original_seq(fields: dict, around: int, window: int = 2000) -> int | None:
    """The sequence number an event was hashed with, if it was moved within `window`."""
    probe = dict(fields)
    for candidate in range(max(1, around - window), around + window + 1):
        probe["seq"] = candidate
        if candidate != around and event_hash(probe) == fields["hash"]:
            return candidate
    return None


def _broken_link(fields: dict, seq: int) -> str:
    original = _original_seq(fields, seq)
    if original is None:
        return (f"event #{seq} does not link to event #{seq - 1} and does not match its hash: "
                "it was forged or edited")
    if original == seq - 1:
        return f"event #{seq} was #{original}: an event was inserted before it"
    return f"event #{seq} was #{original}: events were reordered or renumbered"


def _explain(row, expected_seq: int, prev_hash: str) -> tuple[str, int]:
    """Name what is wrong with the first event that broke the walk (the slow, careful path)."""
    fields = dict(zip([*HASHED_FIELDS, "hash", "id"], row))
    fields["occurred_at"] = fields["occurred_at"].isoformat() + "+00:00"
    fields["data"] = json.loads(fields["data"])
    seq = fields["seq"]
    if seq < expected_seq:
        return (f"event #{seq} (id {fields['id']}) repeats a sequence number: "
                "an event was inserted", seq)
    if seq > expected_seq:
        return f"event #{expected_seq} is missing: deleted", expected_seq
    content_ok = event_hash(fields) == fields["hash"]
    if fields["prev_hash"] != prev_hash:
        if content_ok:
            return (f"event #{seq} does not link to event #{seq - 1}: "
                    "an event before it was replaced", seq)
        return _broken_link(fields, seq), seq
    if _original_seq(fields, seq) is not None:
        return _broken_link(fields, seq), seq
    return f"event #{seq} was edited: its content no longer matches its hash", seq


def latest_anchor(chain_id: int) -> AuditAnchor | None:
    return db.session.scalars(
        select(AuditAnchor).where(AuditAnchor.chain_id == chain_id)
        .order_by(AuditAnchor.seq.desc(), AuditAnchor.id.desc()).limit(1)
    ).first()


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def verify_chain(chain_id: int, batch: int = 10000) -> ChainReport:
    """Walk one chain in sequence order and name the first event that breaks it:
    an edited event (its hash no longer matches), a deleted one (a gap), an inserted one (a
    repeated sequence number, or a renumbered chain), a reordered pair, a chain that ends
    before its latest anchor or its head says it should (events cut off the end), or one
    rewritten since it was anchored.

    The walk stops at the head as read first, so events committed meanwhile are not taken
    for forgeries; events beyond the head are looked for at the end, in an order that is
    safe against concurrent writers (an event and its head move in one transaction)."""
    head = db.session.execute(
        select(AuditChainHead.last_seq, AuditChainHead.last_hash)
        .where(AuditChainHead.chain_id == chain_id)
    ).one_or_none()
    anchor = latest_anchor(chain_id)
    anchor_seq = anchor.seq if anchor is not None else 0
    anchored_hash = None
    connection = db.session.connection()
    table = AuditEvent.__table__.c
    stmt = (select(*_verify_columns(connection.dialect.name))
            .where(table.chain_id == chain_id).order_by(table.seq, table.id))
    if head is not None:
        stmt = stmt.where(table.seq <= head.last_seq)
    expected_seq = 1
    prev_hash = GENESIS_HASH
    loads = json.loads
    # Core, not the ORM: a server-side cursor on PostgreSQL, and rows as plain tuples.
    result = connection.execute(stmt.execution_options(yield_per=batch))
    try:
        for row in result:
            (chain, seq, tenant_id, occurred_at, actor_type, actor_id, actor_label,
             on_behalf_of_id, action, item_id, from_state, to_state, comment, data,
             row_prev_hash, row_hash, _id) = row
            if seq != expected_seq or row_prev_hash != prev_hash or row_hash != values_hash(
                    chain, seq, tenant_id, occurred_at.isoformat() + "+00:00", actor_type,
                    actor_id, actor_label, on_behalf_of_id, action, item_id, from_state,
                    to_state, comment, loads(data), row_prev_hash):
                problem, bad_seq = _explain(row, expected_seq, prev_hash)
                return ChainReport(chain_id, expected_seq - 1, False, problem, bad_seq,
                                   prev_hash)
            if seq == anchor_seq:
                anchored_hash = row_hash
            prev_hash = row_hash
            expected_seq += 1
    finally:
        result.close()
    count = expected_seq - 1

    def broken(problem: str, bad_seq: int) -> ChainReport:
        return ChainReport(chain_id, count, False, problem, bad_seq, prev_hash)

    if anchor is not None and anchor_seq > count:
        return broken(f"the chain ends at #{count} but it was anchored at #{anchor_seq} on "
                      f"{_when(anchor.anchored_at)}: events were cut off the end", count + 1)
    if anchor is not None and anchored_hash != anchor.hash:
        return broken(f"event #{anchor_seq} no longer has the hash anchored on "
                      f"{_when(anchor.anchored_at)}: the chain was rewritten up to it",
                      anchor_seq)
    if head is not None and head.last_seq > count:
        return broken(f"the chain ends at #{count} but its head records #{head.last_seq}: "
                      "events were cut off the end", count + 1)
    if head is not None and head.last_hash != prev_hash:
        return broken(f"event #{count} does not have the hash its head records: "
                      "the chain was altered at its end", count)
    beyond = db.session.scalar(select(func.max(AuditEvent.seq))
                               .where(AuditEvent.chain_id == chain_id)) or 0
    now_head = db.session.scalar(select(AuditChainHead.last_seq)
                                 .where(AuditChainHead.chain_id == chain_id))
    if now_head is not None and beyond > now_head:
        return broken(f"the chain runs to #{beyond} but its head records #{now_head}: "
                      "events were added after the head", now_head + 1)
    return ChainReport(chain_id, count, True, last_hash=prev_hash)


def chain_ids() -> list[int]:
    ids = set(db.session.scalars(select(AuditChainHead.chain_id)))
    ids |= set(db.session.scalars(select(AuditEvent.chain_id).distinct()))
    return sorted(ids)


def verify_all() -> list[ChainReport]:
    return [verify_chain(c) for c in chain_ids()]


# ---------------------------------------------------------------------------------------------
# Who may read a tenant's trail: its auditors and admins. The one place that decides it.

AUDIT_ROLES = frozenset({Role.AUDITOR.value, Role.ADMIN.value})


def audit_tenant_ids(actor: Actor) -> list[int]:
    """Tenants whose audit trail the actor may read, in a stable order."""
    return sorted(t for t in actor.tenant_ids() if actor.roles_in(t) & AUDIT_ROLES)


def require_audit_tenant(actor: Actor, tenant_id: int | None) -> Tenant:
    """The tenant if the actor audits or administers it; NotFound for a tenant the actor is
    not a member of (no hint that it exists), PermissionDenied for one they only work in."""
    if tenant_id is None or tenant_id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant.")
    if not actor.roles_in(tenant_id) & AUDIT_ROLES:
        raise PermissionDenied(f"Only auditors and admins of {tenant.display_name} can read "
                               "its audit trail.")
    return tenant


# ---------------------------------------------------------------------------------------------
# Anchoring and alerts.

ANCHOR_ACTOR = "audit-anchor"


def anchor_chain(chain_id: int) -> ChainReport:
    """Verify one chain; record how far it verified (an anchor), or raise an alert."""
    report = verify_chain(chain_id)
    if report.ok:
        if report.events:
            db.session.add(AuditAnchor(chain_id=chain_id, seq=report.events,
                                       hash=report.last_hash, anchored_at=utcnow()))
            db.session.flush()
    else:
        raise_alert(report)
    return report


def raise_alert(report: ChainReport) -> AuditAlert | None:
    """An alert for the admins of the chain's tenant (of any tenant for the global chain),
    written with its audit event and an outbox message that mails them. A problem
    already alerted and not yet acknowledged is not raised again."""
    already = db.session.scalar(
        select(AuditAlert.id).where(AuditAlert.chain_id == report.chain_id,
                                    AuditAlert.acknowledged_at.is_(None),
                                    AuditAlert.problem == report.problem).limit(1))
    if already is not None:
        return None
    tenant_id = None if report.chain_id == GLOBAL_CHAIN else report.chain_id
    alert = AuditAlert(chain_id=report.chain_id, tenant_id=tenant_id, raised_at=utcnow(),
                       problem=report.problem, bad_seq=report.bad_seq)
    db.session.add(alert)
    db.session.flush()
    details = {"alert_id": alert.id, "chain_id": report.chain_id, "problem": report.problem,
               "bad_seq": report.bad_seq}
    record_event(Actor.system(ANCHOR_ACTOR), "audit.verification_failed", tenant_id=tenant_id,
                 data=details)
    add_message("audit.verification_failed", details, tenant_id)
    return alert


def anchor_all() -> list[ChainReport]:
    return [anchor_chain(c) for c in chain_ids()]


def open_alerts_for(actor: Actor) -> Select:
    """Unacknowledged alerts of the tenants the actor administers (the global chain's too,
    for anyone who administers a tenant)."""
    admin_of = [t for t in actor.tenant_ids() if Role.ADMIN.value in actor.roles_in(t)]
    if not admin_of:
        return select(AuditAlert).where(false())
    return (select(AuditAlert)
            .where(AuditAlert.acknowledged_at.is_(None),
                   or_(AuditAlert.tenant_id.in_(admin_of), AuditAlert.tenant_id.is_(None)))
            .order_by(AuditAlert.raised_at.desc()))


def acknowledge_alert(actor: Actor, alert_id: int) -> AuditAlert:
    alert = db.session.get(AuditAlert, alert_id)
    if alert is None:
        raise NotFound("No such alert.")
    if alert.tenant_id is None:
        allowed = any(Role.ADMIN.value in actor.roles_in(t) for t in actor.tenant_ids())
    else:
        if alert.tenant_id not in actor.tenant_ids():
            raise NotFound("No such alert.")
        allowed = Role.ADMIN.value in actor.roles_in(alert.tenant_id)
    if not allowed:
        raise PermissionDenied("Only an admin can acknowledge an audit alert.")
    if alert.acknowledged_at is not None:
        return alert
    alert.acknowledged_at = utcnow()
    alert.acknowledged_by_id = actor.user_id
    record_event(actor, "audit.alert_acknowledged", tenant_id=alert.tenant_id,
                 data={"alert_id": alert.id, "problem": alert.problem})
    return alert


# ---------------------------------------------------------------------------------------------
# Exports and other copies of the trail leaving the building; each one is itself audited.

MAX_EXPORT_DAYS = 3660


def local_day_bounds(tenant: Tenant, date_from: date | None, date_to: date | None):
    """[start of date_from, start of the day after date_to) in the tenant's timezone, in UTC."""
    zone = ZoneInfo(tenant.timezone)
    starts_at = (datetime.combine(date_from, time(0), zone).astimezone(UTC)
                 if date_from else None)
    ends_before = (datetime.combine(date_to + timedelta(days=1), time(0), zone).astimezone(UTC)
                   if date_to else None)
    return starts_at, ends_before


def request_export(actor: Actor, *, tenant_id: int, export_format: str,
                   date_from: date | None = None, date_to: date | None = None) -> AuditExport:
    """Ask for an export of a tenant's events in a range of its local dates; the job that
    writes the file leaves through the outbox once this transaction commits."""
    tenant = require_audit_tenant(actor, tenant_id)
    if export_format not in {f.value for f in ExportFormat}:
        raise ValidationFailed("Choose CSV or JSON Lines.", {"format": "csv or jsonl"})
    if date_from and date_to and date_from > date_to:
        raise ValidationFailed("The range ends before it starts.",
                               {"date_to": "on or after the start"})
    if date_from and date_to and (date_to - date_from).days > MAX_EXPORT_DAYS:
        raise ValidationFailed("Export at most ten years at once.", {"date_to": "too far"})
    starts_at, ends_before = local_day_bounds(tenant, date_from, date_to)
    export = AuditExport(tenant_id=tenant.id, requested_by_id=actor.user_id,
                         requested_at=utcnow(), format=export_format, date_from=date_from,
                         date_to=date_to, starts_at=starts_at, ends_before=ends_before,
                         status=ExportStatus.QUEUED.value, progress=0)
    db.session.add(export)
    db.session.flush()
    record_event(actor, "audit.export_requested", tenant_id=tenant.id,
                 data={"export_id": export.id, "format": export_format,
                       "date_from": date_from, "date_to": date_to})
    add_message("audit.export_requested", {"export_id": export.id}, tenant.id)
    return export


def get_own_export(actor: Actor, export_id: int) -> AuditExport:
    """An export, for the person who asked for it while they still audit that tenant; to
    anyone else it does not exist."""
    export = db.session.get(AuditExport, export_id)
    if (export is None or actor.user_id is None or export.requested_by_id != actor.user_id
            or not actor.roles_in(export.tenant_id) & AUDIT_ROLES):
        raise NotFound("No such export.")
    return export


def record_export_download(actor: Actor, export: AuditExport) -> None:
    if export.status != ExportStatus.DONE.value:
        raise InvalidTransition("This export is not ready yet.")
    record_event(actor, "audit.export_downloaded", tenant_id=export.tenant_id,
                 data={"export_id": export.id, "sha256": export.sha256,
                       "events": export.total})


def record_access_review_export(actor: Actor, tenant_id: int) -> Tenant:
    tenant = require_audit_tenant(actor, tenant_id)
    record_event(actor, "audit.access_review_exported", tenant_id=tenant.id,
                 data={"format": "csv"})
    return tenant
