"""What the auditor pages show: a tenant's events found by filters and paged by sequence
number, an item's whole timeline, one event in full, the chain's anchor, and the access review.
Read-only; every query is limited to one tenant the viewer audits (see require_audit_tenant)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import func, select

from app.actors import Actor, ActorType
from app.audit.chain import event_hash
from app.audit.models import AuditChainHead, AuditEvent, AuditExport
from app.audit.services import (
    AUDIT_ROLES,
    audit_tenant_ids,
    latest_anchor,
    local_day_bounds,
    open_alerts_for,
)
from app.auth.models import Passkey, RecoveryCode, SecondFactor
from app.auth.second_factor import FACTOR_ROLES
from app.auth.sso import settings_of, sso_status_by_user
from app.extensions import db
from app.models import Membership, Role, Tenant, User, WorkItem
from app.types import utcnow
from app.work.states import ACTION_ROLES

PAGE_SIZE = 50
ACTOR_TYPES = [t.value for t in ActorType]

# Actions offered as suggestions in the search box; any action can be typed.
KNOWN_ACTIONS = [
    "item.created", "item.claimed", "item.released", "item.reassigned", "item.commented",
    "approval.step_approved", "item.approve", "item.reject", "item.request_info",
    "item.resubmit", "item.withdraw", "item.expire", "item.investigate", "item.resolve",
    "item.wait_on_customer", "item.escalate", "item.review", "item.accept",
    "item.partially_accept", "membership.granted", "api_token.created",
    "audit.export_requested", "audit.export_completed", "audit.export_downloaded",
    "audit.access_review_exported", "audit.verification_failed", "audit.alert_acknowledged",
    "api_token.revoked", "api_token.used", "webhook.subscribed", "webhook.paused",
    "webhook.resumed", "webhook.redelivered", "import.uploaded", "import.confirmed",
    "import.finished",
]


@dataclass
class EventSearch:
    tenant: Tenant
    item_id: int | None = None
    actor: str | None = None
    action: str | None = None
    actor_type: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    before: int | None = None  # keyset: events with a smaller sequence number

    def args(self, **changes) -> dict:
        """The query string of this search (for links, the next page, the export form)."""
        values = {"tenant": self.tenant.id, "item": self.item_id, "actor": self.actor,
                  "action": self.action, "actor_type": self.actor_type,
                  "date_from": self.date_from, "date_to": self.date_to, "before": self.before}
        values.update(changes)
        return {k: v for k, v in values.items() if v not in (None, "")}

    @property
    def filtered(self) -> bool:
        return any((self.item_id, self.actor, self.action, self.actor_type, self.date_from,
                    self.date_to))


@dataclass
class EventPage:
    events: list[AuditEvent]
    users: dict[int, User]
    more: bool
    next_before: int | None
    items: dict[int, WorkItem] = field(default_factory=dict)


def search_events(search: EventSearch) -> EventPage:
    """One page of the tenant's events, newest first, keyset-paged on the sequence number
    (the chain's own order) so a page costs the same at any depth."""
    tenant_id = search.tenant.id
    query = select(AuditEvent).where(AuditEvent.chain_id == tenant_id)
    if search.item_id:
        query = query.where(AuditEvent.item_id == search.item_id)
    if search.actor:
        actor = search.actor.strip()
        user = db.session.scalars(select(User).where(User.email == actor.lower())).one_or_none()
        query = query.where(AuditEvent.actor_id == user.id if user
                            else AuditEvent.actor_label == actor)
    if search.action:
        action = search.action.strip()
        query = query.where(AuditEvent.action.startswith(action[:-1], autoescape=True)
                            if action.endswith("*") else AuditEvent.action == action)
    if search.actor_type:
        query = query.where(AuditEvent.actor_type == search.actor_type)
    starts_at, ends_before = local_day_bounds(search.tenant, search.date_from, search.date_to)
    if starts_at:
        query = query.where(AuditEvent.occurred_at >= starts_at)
    if ends_before:
        query = query.where(AuditEvent.occurred_at < ends_before)
    if search.before:
        query = query.where(AuditEvent.seq < search.before)
    rows = list(db.session.scalars(query.order_by(AuditEvent.seq.desc()).limit(PAGE_SIZE + 1)))
    more = len(rows) > PAGE_SIZE
    events = rows[:PAGE_SIZE]
    return EventPage(events, users_of(events), more, events[-1].seq if more else None,
                     _items_of(events, tenant_id))


def item_timeline(tenant: Tenant, item_id: int) -> tuple[WorkItem | None, list[AuditEvent]]:
    item = db.session.scalars(select(WorkItem).where(WorkItem.id == item_id,
                                                     WorkItem.tenant_id == tenant.id)
                              ).one_or_none()
    events = list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.chain_id == tenant.id, AuditEvent.item_id == item_id)
        .order_by(AuditEvent.seq)))
    return item, events


def event_in_tenants(actor: Actor, event_id: int) -> AuditEvent | None:
    """The event if it belongs to a tenant the actor audits."""
    return db.session.scalars(
        select(AuditEvent).where(AuditEvent.id == event_id,
                                 AuditEvent.tenant_id.in_(audit_tenant_ids(actor)))
    ).one_or_none()


def event_context(event: AuditEvent) -> dict:
    fields = {name: getattr(event, name) for name in (
        "chain_id", "seq", "tenant_id", "occurred_at", "actor_type", "actor_id", "actor_label",
        "on_behalf_of_id", "action", "item_id", "from_state", "to_state", "comment", "data",
        "prev_hash")}
    neighbours = dict(db.session.execute(
        select(AuditEvent.seq, AuditEvent.id).where(
            AuditEvent.chain_id == event.chain_id,
            AuditEvent.seq.in_((event.seq - 1, event.seq + 1)))).all())
    previous_hash = db.session.scalar(select(AuditEvent.hash).where(
        AuditEvent.chain_id == event.chain_id, AuditEvent.seq == event.seq - 1))
    return {
        "event": event,
        "users": users_of([event]),
        "hash_matches": event_hash(fields) == event.hash,
        "links": (previous_hash == event.prev_hash) if event.seq > 1 else None,
        "previous_id": neighbours.get(event.seq - 1),
        "next_id": neighbours.get(event.seq + 1),
    }


def users_of(events) -> dict[int, User]:
    ids = {e.actor_id for e in events} | {e.on_behalf_of_id for e in events}
    ids.discard(None)
    if not ids:
        return {}
    return {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(ids)))}


def _items_of(events, tenant_id: int) -> dict[int, WorkItem]:
    ids = {e.item_id for e in events if e.item_id}
    if not ids:
        return {}
    return {i.id: i for i in db.session.scalars(
        select(WorkItem).where(WorkItem.id.in_(ids), WorkItem.tenant_id == tenant_id))}


@dataclass
class ChainStatus:
    events: int
    anchored_seq: int | None
    anchored_at: object | None

    @property
    def unanchored(self) -> int:
        return self.events - (self.anchored_seq or 0)


def chain_status(tenant: Tenant) -> ChainStatus:
    head = db.session.get(AuditChainHead, tenant.id)
    anchor = latest_anchor(tenant.id)
    return ChainStatus(head.last_seq if head else 0, anchor.seq if anchor else None,
                       anchor.anchored_at if anchor else None)


def recent_exports(actor: Actor, tenant_id: int, limit: int = 5) -> list[AuditExport]:
    return list(db.session.scalars(
        select(AuditExport).where(AuditExport.requested_by_id == actor.user_id,
                                  AuditExport.tenant_id == tenant_id)
        .order_by(AuditExport.id.desc()).limit(limit)))


def open_alerts(actor: Actor, tenant_id: int | None = None) -> list:
    query = open_alerts_for(actor)
    alerts = list(db.session.scalars(query))
    if tenant_id is not None:
        alerts = [a for a in alerts if a.tenant_id in (tenant_id, None)]
    return alerts


def audit_tenants(actor: Actor) -> list[Tenant]:
    ids = audit_tenant_ids(actor)
    if not ids:
        return []
    return list(db.session.scalars(select(Tenant).where(Tenant.id.in_(ids))
                                   .order_by(Tenant.name)))


# ---------------------------------------------------------------------------------------------
# The quarterly user-access review.

KIND_NAMES = {"approval": "approvals", "billing_exception": "billing exceptions",
              "settlement_dispute": "settlement disputes"}


@dataclass
class AccessRow:
    name: str
    email: str
    active: bool
    roles: list[str]
    approval_limit: object
    decides: list[str]
    delegate: str | None
    delegate_from: date | None
    delegate_until: date | None
    delegation_state: str | None
    delegated_by: list[str]
    last_sign_in: object | None
    member_since: object | None
    second_factor: bool = False  # a confirmed TOTP factor
    passkeys: int = 0  # how many passkeys they registered
    recovery_codes_left: int = 0
    factor_missing: bool = False  # the tenant requires one of this person's roles: none yet
    # Single sign-on: "off" (the tenant has none), "linked" (signed in through the tenant's
    # provider; `sso_last_sign_in` says when last) or "not yet"; `password_sign_in` says
    # whether a password still lets them in ("yes", "no", or "break-glass" for admins).
    sso: str = "off"
    sso_last_sign_in: object | None = None
    password_sign_in: str = "yes"

    @property
    def factor_names(self) -> str:
        """"passkey", "totp", or both ("passkey + totp"); "" for none."""
        return " + ".join(name for name, on in (("passkey", self.passkeys),
                                                ("totp", self.second_factor)) if on)


def _decides(roles: set[str]) -> list[str]:
    """The kinds of work the roles let a person decide, from the one transition table."""
    out = []
    for kind, actions in ACTION_ROLES.items():
        deciding = [a for a, allowed in actions.items()
                    if roles & allowed and a not in ("resubmit", "withdraw", "expire")]
        if deciding:
            out.append(KIND_NAMES.get(kind, kind))
    if Role.ADMIN.value in roles:
        out.append("tenant administration")
    if Role.AUDITOR.value in roles:
        out.append("audit trail (read only)")
    return out


def _delegation_state(m: Membership, today: date) -> str | None:
    if m.delegate_id is None:
        return None
    if m.delegate_from is None or m.delegate_until is None:
        return "incomplete"
    if m.delegate_until < today:
        return "ended"
    if m.delegate_from > today:
        return "scheduled"
    return "active"


def access_review(tenant: Tenant) -> list[AccessRow]:
    memberships = list(db.session.scalars(
        select(Membership).join(Membership.user).where(Membership.tenant_id == tenant.id)
        .order_by(User.name, User.email)))
    today = utcnow().date()
    delegated_by: dict[int, list[str]] = {}
    for m in memberships:
        if m.delegate_id and _delegation_state(m, today) in ("active", "scheduled"):
            delegated_by.setdefault(m.delegate_id, []).append(m.user.name)
    user_ids = [m.user_id for m in memberships]
    with_factor = set(db.session.scalars(select(SecondFactor.user_id).where(
        SecondFactor.user_id.in_(user_ids), SecondFactor.confirmed_at.is_not(None))))
    passkey_counts = dict(db.session.execute(
        select(Passkey.user_id, func.count()).where(Passkey.user_id.in_(user_ids))
        .group_by(Passkey.user_id)).all())
    codes_left = dict(db.session.execute(
        select(RecoveryCode.user_id, func.count()).where(
            RecoveryCode.user_id.in_(user_ids), RecoveryCode.used_at.is_(None))
        .group_by(RecoveryCode.user_id)).all())
    sso_settings = settings_of(tenant.id)
    sso_on = bool(sso_settings and sso_settings.enabled)
    password_off = sso_on and sso_settings.password_sign_in_off
    links = sso_status_by_user(tenant)
    rows = []
    for m in memberships:
        roles = m.role_set
        has_totp = m.user_id in with_factor
        has_factor = has_totp or m.user_id in passkey_counts
        link = links.get(m.user_id)
        rows.append(AccessRow(
            name=m.user.name, email=m.user.email, active=m.user.active,
            roles=sorted(roles), approval_limit=m.approval_limit, decides=_decides(roles),
            delegate=m.delegate.name if m.delegate else None, delegate_from=m.delegate_from,
            delegate_until=m.delegate_until, delegation_state=_delegation_state(m, today),
            delegated_by=sorted(delegated_by.get(m.user_id, [])),
            last_sign_in=m.user.last_login_at, member_since=m.created_at,
            second_factor=has_totp, passkeys=passkey_counts.get(m.user_id, 0),
            recovery_codes_left=codes_left.get(m.user_id, 0) if has_totp else 0,
            factor_missing=(not has_factor and tenant.require_second_factor
                            and bool(roles & FACTOR_ROLES)),
            sso=("linked" if link else "not yet") if sso_on else "off",
            sso_last_sign_in=link.last_sign_in_at if link else None,
            password_sign_in=("yes" if not password_off else
                              "break-glass" if Role.ADMIN.value in roles and has_factor
                              else "no")))
    return rows


ACCESS_CSV_COLUMNS = ["name", "email", "active", "roles", "approval_limit", "currency",
                      "can_decide", "delegates_to", "delegation_from", "delegation_until",
                      "delegation_state", "acts_for", "last_sign_in_utc", "member_since_utc",
                      "second_factor", "recovery_codes_left", "single_sign_on",
                      "sso_last_sign_in_utc", "password_sign_in"]


def _cell(text: str) -> str:
    """A spreadsheet must not run a name as a formula."""
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


def access_csv_rows(tenant: Tenant, rows: list[AccessRow]) -> list[list]:
    def stamp(value):
        return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""

    return [[_cell(r.name), _cell(r.email), "yes" if r.active else "no", " ".join(r.roles),
             f"{r.approval_limit:.2f}", tenant.currency, "; ".join(r.decides),
             _cell(r.delegate or ""), r.delegate_from or "", r.delegate_until or "",
             r.delegation_state or "", _cell("; ".join(r.delegated_by)),
             stamp(r.last_sign_in), stamp(r.member_since),
             r.factor_names or ("missing (required)" if r.factor_missing else "none"),
             r.recovery_codes_left if r.second_factor else "", r.sso,
             stamp(r.sso_last_sign_in), r.password_sign_in] for r in rows]


def can_audit(actor: Actor, tenant_id: int) -> bool:
    return bool(actor.roles_in(tenant_id) & AUDIT_ROLES)
