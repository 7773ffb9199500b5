"""Shared models: tenants, people and their memberships, and the work items of every kind."""
from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.types import Money, UTCDateTime, utcnow

# BIGINT on PostgreSQL (a million items and many millions of events); SQLite needs INTEGER
# for its rowid alias to autoincrement.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Role(str, enum.Enum):
    REQUESTER = "requester"
    APPROVER = "approver"
    ANALYST = "analyst"
    MANAGER = "manager"
    ADMIN = "admin"
    AUDITOR = "auditor"


class Kind(str, enum.Enum):
    APPROVAL = "approval"
    BILLING_EXCEPTION = "billing_exception"
    SETTLEMENT_DISPUTE = "settlement_dispute"

    @property
    def label(self) -> str:
        return {
            "approval": "Approval",
            "billing_exception": "Billing exception",
            "settlement_dispute": "Settlement dispute",
        }[self.value]


class Priority(str, enum.Enum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class SlaState(str, enum.Enum):
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    BREACHED = "breached"
    MET = "met"
    PAUSED = "paused"


class Tenant(db.Model):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))
    calendar_country: Mapped[str] = mapped_column(String(2))
    # Working hours as "HH:MM" local time, working days as ISO weekday numbers (1 = Monday).
    working_days: Mapped[list] = mapped_column(JSON, default=lambda: [1, 2, 3, 4, 5])
    work_start: Mapped[str] = mapped_column(String(5), default="09:00")
    work_end: Mapped[str] = mapped_column(String(5), default="17:00")
    is_reseller: Mapped[bool] = mapped_column(Boolean, default=False)
    # The largest amount (in magnitude) one item may carry, whatever its channel; None: only
    # what the storage holds.
    max_item_amount: Mapped[Decimal | None] = mapped_column(Money)
    brand_name: Mapped[str | None] = mapped_column(String(200))
    brand_color: Mapped[str | None] = mapped_column(String(7))
    # SLA escalation: reassign a breached item to the least-loaded colleague (off by default:
    # moving work without asking is a team's choice).
    sla_reassign_on_breach: Mapped[bool] = mapped_column(Boolean, default=False,
                                                         server_default=text("false"))
    # A short hash of the uploaded logo (app.admin.models.TenantLogo), in its URL so browsers
    # cache it until it changes; None without a logo.
    logo_version: Mapped[str | None] = mapped_column(String(16))
    # A fresh random tag whenever the tenant's closures change (None before the first): the
    # cached business calendar is keyed on it.
    calendar_revision: Mapped[str | None] = mapped_column(String(16))
    # Sign-in (app.auth): a session ends after this long without a request, and this long
    # after sign-in whatever its use; None: no limit of this tenant's own. A person in several
    # tenants gets the strictest of them.
    session_idle_minutes: Mapped[int | None] = mapped_column(Integer)
    session_max_hours: Mapped[int | None] = mapped_column(Integer)
    # People with a role that decides or administers (app.auth.second_factor.FACTOR_ROLES)
    # must enrol a second factor before anything else.
    require_second_factor: Mapped[bool] = mapped_column(Boolean, default=False,
                                                        server_default=text("false"))
    # An email-link decision above this amount (in the tenant's currency) needs the
    # approver's second factor; None: the EMAIL_LINK_STEP_UP_ABOVE default.
    step_up_amount: Mapped[Decimal | None] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def display_name(self) -> str:
        return self.brand_name or self.name

    def __repr__(self) -> str:
        return f"<Tenant {self.slug}>"


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # Read when first used (the signed-in person's, on every request; one person's in the admin
    # pages): not with every person loaded for a name (a timeline's, a list of assignees).
    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", foreign_keys="Membership.user_id"
    )

    @property
    def is_active(self) -> bool:  # Flask-Login
        return self.active

    # Flask-Login's id for the session (and remember) cookie, "user id:session id:secret",
    # naming the server-side session record (app.auth.models.UserSession) this object was
    # signed in or recognised with; None for a user loaded any other way, who cannot be
    # signed in by it.
    login_id = None

    def get_id(self) -> str | None:  # Flask-Login
        return self.login_id

    def __eq__(self, other) -> bool:
        # One person, whichever session record (or none) the object was loaded with
        # (UserMixin compares get_id).
        if isinstance(other, User):
            return self is other or (self.id is not None and self.id == other.id)
        return NotImplemented

    __hash__ = object.__hash__

    def membership_in(self, tenant_id: int) -> Membership | None:
        for m in self.memberships:
            if m.tenant_id == tenant_id:
                return m
        return None

    def roles_in(self, tenant_id: int) -> set[str]:
        m = self.membership_in(tenant_id)
        return m.role_set if m else set()

    def __repr__(self) -> str:
        return f"<User {self.email}>"


class LoginThrottle(db.Model):
    """Failed sign-ins counted per email (known or not, so a lock says nothing about which
    accounts exist) and per client address (so one address cannot spray many accounts)."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Membership(db.Model):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "tenant_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    approval_limit: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    delegate_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    delegate_from: Mapped[date | None] = mapped_column(Date)
    delegate_until: Mapped[date | None] = mapped_column(Date)
    # Optional scope of the delegation: only these kinds (None = every kind), only up to this
    # amount (None = any amount).
    delegate_kinds: Mapped[list | None] = mapped_column(JSON)
    delegate_max_amount: Mapped[Decimal | None] = mapped_column(Money)
    # Whom the member reports to in this tenant (a member of it): the first level a waiting
    # approval step escalates to. Never themselves, never a loop (app.admin.reporting_lines).
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships", foreign_keys=[user_id])
    tenant: Mapped[Tenant] = relationship(lazy="joined")
    delegate: Mapped[User | None] = relationship(foreign_keys=[delegate_id])
    manager: Mapped[User | None] = relationship(foreign_keys=[manager_id])
    roles: Mapped[list[MembershipRole]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def role_set(self) -> set[str]:
        return {r.role for r in self.roles}

    def delegates_to(self, user_id: int, on: date, kind: str | None = None,
                     amount: Decimal | None = None) -> bool:
        """True when `user_id` stands in for this member on `on` (and, given an item's kind
        and amount, when the delegation's scope covers it)."""
        return (
            self.delegate_id == user_id
            and self.is_away(on)
            and self.delegation_covers(kind, amount)
        )

    def is_away(self, on: date) -> bool:
        """Out of office on `on`: a delegation is set and its dates include the day."""
        return (
            self.delegate_id is not None
            and self.delegate_from is not None
            and self.delegate_until is not None
            and self.delegate_from <= on <= self.delegate_until
        )

    def delegation_covers(self, kind: str | None, amount: Decimal | None) -> bool:
        if kind is not None and self.delegate_kinds and kind not in self.delegate_kinds:
            return False
        if (amount is not None and self.delegate_max_amount is not None
                and amount > self.delegate_max_amount):
            return False
        return True


class MembershipRole(db.Model):
    __tablename__ = "membership_roles"

    membership_id: Mapped[int] = mapped_column(
        ForeignKey("memberships.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(20), primary_key=True)


# Kept in step with app.work.states.OPEN_STATES (a test checks); the models cannot import it.
OPEN_STATE_VALUES = ("escalated", "info_requested", "investigating", "open", "pending",
                     "under_review", "waiting_on_customer")
OPEN_CONDITION_SQL = "state IN (" + ", ".join(f"'{s}'" for s in OPEN_STATE_VALUES) + ")"
TEAM_QUEUE_CONDITION_SQL = f"{OPEN_CONDITION_SQL} AND team_queue IS NOT NULL"


class WorkItem(db.Model):
    """One row per piece of work; `kind` says which state machine and detail fields apply."""

    __tablename__ = "work_items"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source_system", "external_ref"),
        Index("ix_work_items_created", "tenant_id", "created_at"),
        # Dashboard drill-downs list what was resolved in a date range.
        Index("ix_work_items_resolved", "tenant_id", "resolved_at"),
        # Queues read open items only: partial indexes keep them small at millions of rows.
        *[
            Index(f"ix_work_items_open_{name}", *columns,
                  postgresql_where=text(OPEN_CONDITION_SQL), sqlite_where=text(OPEN_CONDITION_SQL))
            for name, columns in (
                # Per tenant and kind, for single-tenant views; across tenants, for the rest:
                # ordered scans that stop after one page.
                ("sla", ("tenant_id", "kind", "sla_due_at", "id")),
                ("amount", ("tenant_id", "kind", "amount", "id")),
                ("created", ("tenant_id", "kind", "created_at", "id")),
                ("sla_all", ("sla_due_at", "id")),
                ("amount_all", ("amount", "id")),
                ("created_all", ("created_at", "id")),
                ("assignee", ("assignee_id", "sla_due_at", "id")),
                ("counterparty", ("tenant_id", "counterparty")),
                # Queue counts read only this (an index-only scan).
                ("counts", ("tenant_id", "kind", "assignee_id", "team_queue")),
            )
        ],
        # Named team queues (the policy routes items to them): only the open items that are in
        # one, so these stay small; an ordered scan per sort order, across tenants.
        *[
            Index(f"ix_work_items_team_queue_{name}", "team_queue", column, "id",
                  postgresql_where=text(TEAM_QUEUE_CONDITION_SQL),
                  sqlite_where=text(TEAM_QUEUE_CONDITION_SQL))
            for name, column in (("sla", "sla_due_at"), ("amount", "amount"),
                                 ("created", "created_at"))
        ],
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(32))
    subtype: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300))
    external_ref: Mapped[str] = mapped_column(String(128))
    source_system: Mapped[str] = mapped_column(String(64))
    counterparty: Mapped[str] = mapped_column(String(200))
    region: Mapped[str | None] = mapped_column(String(32))
    product_line: Mapped[str | None] = mapped_column(String(64))
    partner_type: Mapped[str | None] = mapped_column(String(32))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    priority: Mapped[str] = mapped_column(String(10), default=Priority.NORMAL.value)
    risk_score: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    requester_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_action_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_state: Mapped[str | None] = mapped_column(String(16))
    # While the item waits on someone outside (the SLA clock is stopped): since when.
    sla_paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    policy_version: Mapped[int | None] = mapped_column(Integer)
    # The named team queue the policy routed the item to (a rule's queue, or the QA sample);
    # the item shows there as well as in its kind's queues.
    team_queue: Mapped[str | None] = mapped_column(String(64))
    # Kind-specific fields, checked against app.work.kinds.DETAIL_FIELDS when written.
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    # Money that dashboards add up is kept in typed columns rather than in `details`.
    amount_at_risk: Mapped[Decimal | None] = mapped_column(Money)  # billing exceptions
    claimed_amount: Mapped[Decimal | None] = mapped_column(Money)  # disputes
    calculated_amount: Mapped[Decimal | None] = mapped_column(Money)  # disputes
    adjustment_amount: Mapped[Decimal | None] = mapped_column(Money)  # partially accepted
    resolution_code: Mapped[str | None] = mapped_column(String(64))
    # Who made the final decision, by actor type (user, policy, email_link, api, system): the
    # dashboard's auto-approval rate counts the 'policy' ones.
    decided_by_type: Mapped[str | None] = mapped_column(String(16))
    last_actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    last_action_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The row version: every change a decision rests on adds one; the ledger
    # (app.work.ledger), the only writer of work items, guards its UPDATEs with it.
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    tenant: Mapped[Tenant] = relationship(lazy="joined")
    requester: Mapped[User | None] = relationship(foreign_keys=[requester_id])
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id])
    last_actor: Mapped[User | None] = relationship(foreign_keys=[last_actor_id])
    steps: Mapped[list[ApprovalStep]] = relationship(
        back_populates="item", order_by="ApprovalStep.position", cascade="all, delete-orphan"
    )

    @property
    def delta(self) -> Decimal | None:
        if self.claimed_amount is None or self.calculated_amount is None:
            return None
        return self.claimed_amount - self.calculated_amount

    @property
    def kind_label(self) -> str:
        return Kind(self.kind).label

    def current_step(self) -> ApprovalStep | None:
        for step in self.steps:
            if step.state == StepState.OPEN.value:
                return step
        return None

    def __repr__(self) -> str:
        return f"<WorkItem {self.id} {self.kind} {self.state}>"


class StepState(str, enum.Enum):
    WAITING = "waiting"  # a later step, not yet open
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class ApprovalStep(db.Model):
    __tablename__ = "approval_steps"
    __table_args__ = (
        UniqueConstraint("item_id", "position"),
        # The open steps only (a sliver of all steps): who they are reserved for, and the
        # unreserved ones (approver_id NULL) that routing assigned, for "My work".
        Index("ix_approval_steps_open_approver", "approver_id", "id",
              postgresql_where=text("state = 'open'"), sqlite_where=text("state = 'open'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(20))
    min_limit: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    state: Mapped[str] = mapped_column(String(16), default=StepState.WAITING.value)
    approver_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # named approver
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    on_behalf_of_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    comment: Mapped[str | None] = mapped_column(Text)
    # A parallel step (a group of approvals decided at once): `need` is what its policy step
    # asked ("all", "any" or a count), `quorum` how many approvals it needs, fixed when it
    # opens from its members (app.approvals.models.ApprovalStepMember); None for a step one
    # person decides. `reject_when` "quorum": a rejection rejects only once the quorum can no
    # longer be met (otherwise any member's rejection rejects).
    need: Mapped[str | None] = mapped_column(String(8))
    quorum: Mapped[int | None] = mapped_column(Integer)
    reject_when: Mapped[str | None] = mapped_column(String(8))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("approver_groups.id"))
    # An approver named by a field of the item (account_owner_email, ...); the step falls back
    # to its role when the field names nobody who may decide it.
    source_field: Mapped[str | None] = mapped_column(String(40))
    # A parallel step with fewer members who may decide it than its quorum becomes, as it
    # opens, a one-person step of this role (None: manager) instead of waiting for ever.
    fallback_role: Mapped[str | None] = mapped_column(String(20))
    # Escalation of a one-person step that waits: after `escalate_after` ("2 days", "16
    # business hours") it goes to the next of `escalate_to`'s levels ("manager": the manager of
    # whoever has it then; {"group": name}). `escalation_level` is the level it has reached;
    # `escalates_at` is when it next escalates (None: no level is left), which the
    # SLA sweep looks for.
    escalate_after: Mapped[str | None] = mapped_column(String(24))
    escalate_to: Mapped[list | None] = mapped_column(JSON)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    escalates_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)

    item: Mapped[WorkItem] = relationship(back_populates="steps")
    approver: Mapped[User | None] = relationship(foreign_keys=[approver_id])
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])
    on_behalf_of: Mapped[User | None] = relationship(foreign_keys=[on_behalf_of_id])

    @property
    def parallel(self) -> bool:
        return self.need is not None


class ApprovalAssignment(db.Model):
    """Who a step was routed to when it opened: the approver it is mailed to (or, while they
    are out of office, their delegate, who then decides on their behalf). Unlike a step's own
    approver_id, which reserves the step for one person, a routed step stays in the queue for
    any approver who may decide it."""

    __tablename__ = "approval_assignments"

    step_id: Mapped[int] = mapped_column(
        ForeignKey("approval_steps.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"),
                                         index=True)
    approver_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    approver: Mapped[User] = relationship()


class ApproverGroup(db.Model):
    """A named group of approvers of one tenant ("Treasury", "Regional controllers EMEA") that
    policy steps name; its members are tenant members."""

    __tablename__ = "approver_groups"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    members: Mapped[list[ApproverGroupMember]] = relationship(
        cascade="all, delete-orphan", lazy="selectin")

    @property
    def member_ids(self) -> set[int]:
        return {m.user_id for m in self.members}


class ApproverGroupMember(db.Model):
    __tablename__ = "approver_group_members"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("approver_groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    user: Mapped[User] = relationship()


class ApiToken(db.Model):
    """A source system's credential for one tenant; only a SHA-256 of the secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Written at most once a minute (last use) and once an hour (the audited use), so reads
    # through the API do not turn into a write each.
    last_used_ip: Mapped[str | None] = mapped_column(String(64))
    use_audited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    tenant: Mapped[Tenant] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
