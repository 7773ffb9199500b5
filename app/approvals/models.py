"""Email-link tokens: one row per link sent. Only a SHA-256 of the link's nonce is kept, so the
table cannot be used to act; the row binds the link to its item, step, approver and the facts
the approver decides on when it was sent, and records its single use or why it was revoked."""
from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models import ApprovalStep, BigId, User, WorkItem
from app.types import Money, UTCDateTime, utcnow


class RevokeReason(str, enum.Enum):
    DECIDED = "decided"  # the step was decided another way (browser, API, another link)
    SUPERSEDED = "superseded"  # the item changed after the link was sent
    CLOSED = "closed"  # the item was withdrawn, sent back for information, or closed


class ApprovalLinkToken(db.Model):
    __tablename__ = "approval_link_tokens"
    __table_args__ = (Index("ix_approval_link_tokens_open", "item_id", "used_at", "revoked_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    nonce_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"))
    step_id: Mapped[int] = mapped_column(ForeignKey("approval_steps.id", ondelete="CASCADE"))
    approver_id: Mapped[int] = mapped_column(ForeignKey("users.id"))  # who the link is for
    item_version: Mapped[int] = mapped_column(Integer)
    # app.approvals.links.decision_facts of the item when the link was sent (None: a link of
    # before fingerprints, bound to the item version instead).
    facts_sha256: Mapped[str | None] = mapped_column(String(64))
    item_amount: Mapped[Decimal] = mapped_column(Money)  # to say what changed when superseded
    purpose: Mapped[str] = mapped_column(String(32), default="assignment")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    used_action: Mapped[str | None] = mapped_column(String(16))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))

    item: Mapped[WorkItem] = relationship()
    step: Mapped[ApprovalStep] = relationship()
    approver: Mapped[User] = relationship(foreign_keys=[approver_id])
    used_by: Mapped[User | None] = relationship(foreign_keys=[used_by_id])


class ApprovalStepMember(db.Model):
    """Who a parallel step waits on, fixed when the step opens (a group's members, or the
    holders of a role, less the requester and anyone who approved an earlier step): what
    "who is still needed" and the quorum count against, whatever the group becomes later."""

    __tablename__ = "approval_step_members"

    step_id: Mapped[int] = mapped_column(
        ForeignKey("approval_steps.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"),
                                         index=True)

    user: Mapped[User] = relationship()


class ApprovalVote(db.Model):
    """One member's decision on a parallel step. Unique per step and member, and per step and
    the person who cast it (a delegate standing in for a member): no one counts twice."""

    __tablename__ = "approval_votes"
    __table_args__ = (UniqueConstraint("step_id", "member_id"),
                      UniqueConstraint("step_id", "decided_by_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("approval_steps.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"),
                                         index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("users.id"))  # whose vote it counts as
    decided_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(8))  # "approve" or "reject"
    comment: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    member: Mapped[User] = relationship(foreign_keys=[member_id])
    decided_by: Mapped[User] = relationship(foreign_keys=[decided_by_id])
