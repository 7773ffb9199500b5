"""What administration keeps: a tenant's own closures and logo, single-use set-password links,
and changes to one's own roles or limit waiting for a second admin."""
from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models import Tenant, User
from app.types import UTCDateTime, utcnow


class TenantClosure(db.Model):
    """Days the tenant does not work beyond its country's public holidays (a company shutdown,
    a local holiday): the SLA clock does not run on them."""

    __tablename__ = "tenant_closures"
    __table_args__ = (Index("ix_tenant_closures_tenant_first", "tenant_id", "first_day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    first_day: Mapped[date] = mapped_column(Date)
    last_day: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def days(self) -> list[date]:
        from datetime import timedelta

        return [self.first_day + timedelta(days=n)
                for n in range((self.last_day - self.first_day).days + 1)]


class TenantLogo(db.Model):
    """The tenant's logo, kept in the database (never a path on disk that a name could steer)
    and served with the type its bytes were sniffed as."""

    __tablename__ = "tenant_logos"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           primary_key=True)
    content_type: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PasswordLinkPurpose(str, enum.Enum):
    INVITATION = "invitation"
    RESET = "reset"


class PasswordLink(db.Model):
    """One set-password link sent by mail. Only a SHA-256 of its secret is kept; it works once,
    until it expires, and a newer link for the same person revokes it."""

    __tablename__ = "password_links"
    __table_args__ = (Index("ix_password_links_user_open", "user_id", "used_at", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    purpose: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()
    tenant: Mapped[Tenant | None] = relationship()


class ChangeState(str, enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class PendingMembershipChange(db.Model):
    """A change to an admin's own roles or approval limit: it takes effect only when another
    admin of the tenant approves it (four-eyes)."""

    __tablename__ = "pending_membership_changes"
    __table_args__ = (Index("ix_pending_membership_changes_tenant_state", "tenant_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))  # whose membership
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=ChangeState.PENDING.value)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    __mapper_args__ = {"version_id_col": version}

    tenant: Mapped[Tenant] = relationship()
    user: Mapped[User] = relationship(foreign_keys=[user_id])
    requested_by: Mapped[User] = relationship(foreign_keys=[requested_by_id])
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])
