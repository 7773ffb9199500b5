"""The log of sent mail. Bodies are stored with link tokens redacted: whoever reads the log
(or a copy of the database) cannot act on an approval link from it."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models import BigId, Tenant
from app.types import UTCDateTime, utcnow


class MailStatus:
    """A mail's row is committed as SENDING before it goes to the SMTP server and marked SENT
    once the server accepted it. A SENDING row found afterwards (the process died in between,
    or the server's answer never came) is UNCONFIRMED: the mail may well have gone, so it is
    never sent again (its link, committed before sending, works); admins see it as such."""

    SENDING = "sending"
    SENT = "sent"
    UNCONFIRMED = "unconfirmed"


class SentMail(db.Model):
    __tablename__ = "sent_mails"
    __table_args__ = (Index("ix_sent_mails_tenant_sent", "tenant_id", "sent_at"),
                      Index("ix_sent_mails_step_kind", "step_id", "kind"),
                      Index("ix_sent_mails_status_sent", "status", "sent_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("work_items.id", ondelete="SET NULL"),
                                                index=True)
    step_id: Mapped[int | None] = mapped_column(
        ForeignKey("approval_steps.id", ondelete="SET NULL"))
    recipient_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recipient: Mapped[str] = mapped_column(String(254))
    # assignment, reminder or digest
    kind: Mapped[str] = mapped_column(String(32))
    # Makes a notice that must go once (a step's reminder, a day's digest) unique.
    notice_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    subject: Mapped[str] = mapped_column(String(300))
    text_body: Mapped[str] = mapped_column(Text)  # link tokens redacted
    message_id: Mapped[str | None] = mapped_column(String(200))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=MailStatus.SENT,
                                        server_default=MailStatus.SENT)

    tenant: Mapped[Tenant | None] = relationship()
