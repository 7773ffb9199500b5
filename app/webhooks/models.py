"""Webhook subscriptions of a tenant and the deliveries made to them."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models import BigId, Tenant, User
from app.types import UTCDateTime, utcnow


class SubscriptionStatus(str, enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"  # after repeated failures, or by an admin; deliveries wait, none is lost


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"  # queued for its first attempt
    SENDING = "sending"  # an attempt is under way
    RETRYING = "retrying"  # failed; next attempt at next_attempt_at
    HELD = "held"  # the subscription is paused; sent when it resumes
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt failed; an admin may redeliver


class WebhookSubscription(db.Model):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list] = mapped_column(JSON, default=list)
    # Not the signing secret: a random salt. The secret is HMAC(SECRET_KEY, salt), computed
    # when signing, so a copy of the database alone cannot forge deliveries.
    secret_salt: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=SubscriptionStatus.ACTIVE.value)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_reason: Mapped[str | None] = mapped_column(String(300))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    tenant: Mapped[Tenant] = relationship()
    created_by: Mapped[User | None] = relationship()


class WebhookDelivery(db.Model):
    """One event for one subscription. `delivery_id` is stable: every attempt and every
    redelivery sends the same id and the same body, so receivers can de-duplicate."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "outbox_message_id", "part"),
        Index("ix_webhook_deliveries_log", "subscription_id", "id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        # A delivery job's batch: the due deliveries of one subscription, oldest first, without
        # reading past its delivered history.
        Index("ix_webhook_deliveries_subscription_due", "subscription_id", "id",
              postgresql_where=text("status IN ('pending', 'retrying')"),
              sqlite_where=text("status IN ('pending', 'retrying')")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    outbox_message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("outbox_messages.id"))
    # Which of the message's items this delivery is about: a batch message (items.created)
    # carries many, each delivered as its own event; 0 for a message about one item.
    part: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    event: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the exact bytes signed and sent, kept as text
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    subscription: Mapped[WebhookSubscription] = relationship()
