"""Tenant policies, versioned: routing rules, risk scoring, SLA targets and auto-approval guard
rails; the decision receipt each evaluated item gets; the daily auto-approval budget and the
per-tenant kill switch."""
from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models import BigId, Tenant, User, WorkItem
from app.types import Money, UTCDateTime, utcnow


class PolicyState(str, enum.Enum):
    DRAFT = "draft"  # being edited by its author
    PENDING = "pending"  # submitted; waiting for a second admin
    ACTIVE = "active"  # activated (in force from effective_from)
    RETIRED = "retired"  # superseded by a later version (in force until retired_at)


class Outcome(str, enum.Enum):
    AUTO_APPROVE = "auto_approve"  # approvals only
    STEPS = "steps"  # approvals only
    QUEUE = "queue"  # a named team queue (approvals keep their steps there)
    ASSIGN = "assign"  # exceptions and disputes: to the least-loaded holder of a role
    PRIORITIZE = "prioritize"  # exceptions and disputes: only set the priority


class PolicyVersion(db.Model):
    """One version of a tenant's policy. Drafts change; once submitted a version is frozen."""

    __tablename__ = "policy_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "version"),
        Index("ix_policy_versions_in_force", "tenant_id", "state", "effective_from"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=PolicyState.DRAFT.value)
    based_on_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    note: Mapped[str | None] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approver_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    effective_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Guard rails on auto-approval (None: no limit of that kind).
    max_auto_amount: Mapped[Decimal | None] = mapped_column(Money)
    daily_auto_count: Mapped[int | None] = mapped_column(Integer)
    daily_auto_amount: Mapped[Decimal | None] = mapped_column(Money)
    qa_sample_pct: Mapped[int] = mapped_column(Integer, default=0)
    qa_role: Mapped[str] = mapped_column(String(20), default="manager")
    # Risk scoring inputs: {"base", "per_10k", "per_discount_pct", "regions": {..},
    # "partner_types": {..}, "counterparty_risk": {..}, "max_auto_risk"}.
    risk: Mapped[dict] = mapped_column(JSON, default=dict)
    # SLA targets in business hours: {kind: {priority: hours}}.
    sla_targets: Mapped[dict] = mapped_column(JSON, default=dict)
    # Steps when no rule matches or a guard rail holds an auto-approval back.
    fallback_steps: Mapped[list] = mapped_column(JSON, default=list)
    # An approval nobody decides within this many days of its arrival is closed as expired
    # (the SLA sweep does it; None: approvals routed under this version never expire).
    expire_after_days: Mapped[int | None] = mapped_column(Integer)

    tenant: Mapped[Tenant] = relationship(lazy="joined")
    author: Mapped[User | None] = relationship(foreign_keys=[author_id])
    approver: Mapped[User | None] = relationship(foreign_keys=[approver_id])
    rules: Mapped[list[PolicyRule]] = relationship(
        back_populates="policy", order_by="PolicyRule.position", cascade="all, delete-orphan",
        lazy="selectin")

    @property
    def frozen(self) -> bool:
        return self.state != PolicyState.DRAFT.value

    def status_at(self, now: datetime) -> str:
        """What the version is at `now`: draft, pending, scheduled, active or retired."""
        if self.state in (PolicyState.DRAFT.value, PolicyState.PENDING.value):
            return self.state
        if self.effective_from and self.effective_from > now:
            return "scheduled"
        if self.retired_at and self.retired_at <= now:
            return PolicyState.RETIRED.value
        return PolicyState.ACTIVE.value

    @classmethod
    def in_force(cls, tenant_id: int, at: datetime | None = None) -> PolicyVersion | None:
        """The tenant's version in force at `at` (now): the activated version with the latest
        effective_from at or before it that was not retired by then."""
        at = at or utcnow()
        return db.session.scalars(
            select(cls)
            .where(cls.tenant_id == tenant_id,
                   cls.state.in_((PolicyState.ACTIVE.value, PolicyState.RETIRED.value)),
                   cls.effective_from <= at,
                   or_(cls.retired_at.is_(None), cls.retired_at > at))
            .order_by(cls.effective_from.desc(), cls.version.desc()).limit(1)
        ).first()


class PolicyRule(db.Model):
    """A routing rule: the first rule (by position) whose condition matches decides."""

    __tablename__ = "policy_rules"
    __table_args__ = (UniqueConstraint("policy_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policy_versions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    # The kind of work the rule decides (its condition sees that kind's fields).
    kind: Mapped[str] = mapped_column(String(32), default="approval",
                                      server_default=text("'approval'"))
    name: Mapped[str] = mapped_column(String(120))
    condition: Mapped[str] = mapped_column(Text)  # a rule-engine expression over item fields
    outcome: Mapped[str] = mapped_column(String(16))
    # For Outcome.STEPS (and optionally QUEUE): [{"role": ..., "min_limit": "5000.00" |
    # "amount"}], in order.
    steps: Mapped[list] = mapped_column(JSON, default=list)
    queue: Mapped[str | None] = mapped_column(String(64))  # for Outcome.QUEUE
    # Exceptions and disputes: the priority the rule sets (any outcome), the role it assigns to.
    set_priority: Mapped[str | None] = mapped_column(String(10))
    assign_role: Mapped[str | None] = mapped_column(String(20))

    policy: Mapped[PolicyVersion] = relationship(back_populates="rules")


class PolicyDecision(db.Model):
    """The decision receipt of one item: written undecided when the item arrives under a
    policy, decided exactly once (the update that decides it requires decided_at IS NULL)."""

    __tablename__ = "policy_decisions"
    __table_args__ = (
        Index("ix_policy_decisions_undecided", "item_id",
              postgresql_where=text("decided_at IS NULL"), sqlite_where=text("decided_at IS NULL")),
        Index("ix_policy_decisions_tenant", "tenant_id", "decided_at"),
    )

    item_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("work_items.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    policy_version: Mapped[int | None] = mapped_column(Integer)
    rule_position: Mapped[int | None] = mapped_column(Integer)
    rule_name: Mapped[str | None] = mapped_column(String(120))
    # auto_approved | routed | queued | qa_sample | held | assigned | prioritized | unrouted |
    # skipped
    outcome: Mapped[str | None] = mapped_column(String(16))
    held_by: Mapped[str | None] = mapped_column(String(32))  # the guard rail that held it back
    risk_score: Mapped[int | None] = mapped_column(Integer)
    inputs: Mapped[dict | None] = mapped_column(JSON)
    steps: Mapped[list | None] = mapped_column(JSON)
    queue: Mapped[str | None] = mapped_column(String(64))
    # Exceptions and disputes: the priority set, the role assigned to (and who got it).
    priority: Mapped[str | None] = mapped_column(String(10))
    assign_role: Mapped[str | None] = mapped_column(String(20))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    item: Mapped[WorkItem] = relationship()


class PolicyBudgetDay(db.Model):
    """Auto-approvals of one tenant on one of its local days, against the daily budget."""

    __tablename__ = "policy_budget_days"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))


class PolicyKillSwitch(db.Model):
    """Stops every auto-approval of a tenant at once, whatever its policy says. Operational,
    not versioned: it must work without waiting for a second admin."""

    __tablename__ = "policy_kill_switches"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True,
                                           autoincrement=False)
    engaged: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Counterparty risk reads recent rejections per counterparty; closed items are not in the
# open-item indexes.
Index("ix_work_items_rejected_counterparty", WorkItem.tenant_id, WorkItem.counterparty,
      WorkItem.resolved_at, postgresql_where=text("state = 'rejected'"),
      sqlite_where=text("state = 'rejected'"))
