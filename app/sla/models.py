"""SLA escalation notices: one row per item and level (at risk, breached), written by the SLA
sweep in the transaction that marks the item, and gathered at the end of the sweep into one
digest mail per manager."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models import BigId
from app.types import UTCDateTime, utcnow


class SlaNotice(db.Model):
    __tablename__ = "sla_notices"
    __table_args__ = (
        # Each item is escalated once per level, whatever runs twice.
        UniqueConstraint("item_id", "level", name="uq_sla_notices_item_level"),
        # The sweep's "not yet in a digest" and the digest's own notices.
        Index("ix_sla_notices_digest", "digest_message_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(16))  # at_risk or breached
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The outbox message (topic sla.digest) that mails it; None until the sweep's end.
    digest_message_id: Mapped[int | None] = mapped_column(BigId)
