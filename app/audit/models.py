"""Audit events, chained per tenant by hash, the head of each chain, the anchors that
periodic verification leaves, the alerts it raises, and exports of the trail."""
from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models import BigId, Tenant, User
from app.types import UTCDateTime

GENESIS_HASH = "0" * 64
# Events that belong to no tenant (sign-in, system work) form chain 0.
GLOBAL_CHAIN = 0


class AuditEvent(db.Model):
    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("chain_id", "seq"),
        Index("ix_audit_events_item", "item_id", "seq"),
        Index("ix_audit_events_tenant_time", "tenant_id", "occurred_at"),
        # The auditor's search: one tenant's events by actor or by action, newest first.
        Index("ix_audit_events_actor", "chain_id", "actor_id", "seq"),
        Index("ix_audit_events_action", "chain_id", "action", "seq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    chain_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_label: Mapped[str] = mapped_column(String(254))
    on_behalf_of_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(db.Model):
    """The last sequence number and hash of one chain; its row lock serialises writers."""

    __tablename__ = "audit_chain_heads"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    # The hash before last_hash. PostgreSQL links a single event in the statement that
    # advances the head, and an UPDATE returns only new values, so the old one is kept here.
    prev_hash: Mapped[str | None] = mapped_column(String(64))


class AuditAnchor(db.Model):
    """A chain's sequence number and hash as a periodic verification found them. Append-only
    like the events: a later verification that finds fewer events, or another hash at that
    sequence number, proves the chain was cut or rewritten even if its head was rewound too."""

    __tablename__ = "audit_anchors"
    __table_args__ = (Index("ix_audit_anchors_chain", "chain_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    chain_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    anchored_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditAlert(db.Model):
    """A failed verification, shown to the tenant's admins until one acknowledges it."""

    __tablename__ = "audit_alerts"
    __table_args__ = (Index("ix_audit_alerts_open", "acknowledged_at", "chain_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    chain_id: Mapped[int] = mapped_column(Integer)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    problem: Mapped[str] = mapped_column(Text)
    bad_seq: Mapped[int | None] = mapped_column(BigInteger)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    acknowledged_by: Mapped[User | None] = relationship(foreign_keys=[acknowledged_by_id])


class ExportFormat(str, enum.Enum):
    CSV = "csv"
    JSONL = "jsonl"


class ExportStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class AuditExport(db.Model):
    """One export of a tenant's events: the background job's progress, then its file (kept
    under the instance folder and handed only to the person who asked for it)."""

    __tablename__ = "audit_exports"
    __table_args__ = (Index("ix_audit_exports_requester", "requested_by_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    format: Mapped[str] = mapped_column(String(8))
    # The range, as local dates of the tenant (inclusive), and the same range in UTC.
    date_from: Mapped[date | None] = mapped_column(Date)
    date_to: Mapped[date | None] = mapped_column(Date)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=ExportStatus.QUEUED.value)
    total: Mapped[int | None] = mapped_column(BigInteger)
    progress: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seq: Mapped[int | None] = mapped_column(BigInteger)
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    file_name: Mapped[str | None] = mapped_column(String(200))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)

    tenant: Mapped[Tenant] = relationship(lazy="joined")
    requested_by: Mapped[User] = relationship()

    @property
    def finished(self) -> bool:
        return self.status in (ExportStatus.DONE.value, ExportStatus.FAILED.value)

    @property
    def percent(self) -> int:
        if self.status == ExportStatus.DONE.value:
            return 100
        if not self.total:
            return 0
        return min(99, int(self.progress * 100 / self.total))
