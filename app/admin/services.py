"""The write path of administration: tenants (settings, closures, branding), people (invite,
roles and limits, deactivation, password links) and delegation. Every function takes the actor,
checks that they administer the tenant (another tenant's admin gets NotFound, as if it did not
exist), records an audit event with before and after values, and never commits."""
from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from zoneinfo import available_timezones

import holidays
from flask import current_app
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import contains_eager, selectinload

from app.actors import Actor, ActorType
from app.admin.jobs import calendar_snapshot
from app.admin.models import (
    ChangeState,
    PasswordLink,
    PasswordLinkPurpose,
    PendingMembershipChange,
    TenantClosure,
    TenantLogo,
)
from app.audit.services import record_event
from app.auth.models import SessionEndReason
from app.auth.services import end_sessions, people_with_role
from app.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import (
    ApprovalStep,
    Kind,
    Membership,
    MembershipRole,
    Role,
    StepState,
    Tenant,
    User,
    WorkItem,
)
from app.outbox.services import add_message
from app.types import utcnow
from app.work.kinds import parse_money
from app.work.money import NON_NEGATIVE, POSITIVE, currency_problem, parse_amount

# ---------------------------------------------------------------------------------------------
# Who administers what.


def is_admin_of(actor: Actor, tenant_id: int) -> bool:
    return actor.user is not None and actor.user.active and Role.ADMIN.value in actor.roles_in(
        tenant_id)


def admin_tenants(actor: Actor) -> list[Tenant]:
    """The tenants the actor administers, by name."""
    ids = [t for t in actor.tenant_ids() if is_admin_of(actor, t)]
    if not ids:
        return []
    return list(db.session.scalars(select(Tenant).where(Tenant.id.in_(ids)).order_by(Tenant.name)))


def require_admin(actor: Actor, tenant: Tenant | None) -> Tenant:
    """The tenant, if the actor administers it. Someone who is not a member is told it does not
    exist (NotFound); a member without the admin role is refused (PermissionDenied)."""
    if actor.type is ActorType.SYSTEM and tenant is not None:
        return tenant
    if tenant is None or tenant.id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    if not is_admin_of(actor, tenant.id):
        raise PermissionDenied("Only an admin of this tenant can do that.")
    return tenant


def tenant_for_admin(actor: Actor, slug: str) -> Tenant:
    tenant = db.session.scalars(select(Tenant).where(Tenant.slug == slug)).one_or_none()
    return require_admin(actor, tenant)


def member_for_admin(actor: Actor, tenant: Tenant, user_id: int) -> Membership:
    """A member of a tenant the actor administers; NotFound for anyone else."""
    require_admin(actor, tenant)
    membership = db.session.scalars(select(Membership).where(
        Membership.tenant_id == tenant.id, Membership.user_id == user_id)).one_or_none()
    if membership is None:
        raise NotFound("No such person in this tenant.")
    return membership


def members_of(actor: Actor, tenant: Tenant) -> list[Membership]:
    """The tenant's members with their roles and delegates, in a fixed number of queries; the
    people it loads do not fetch their other memberships unless something reads them."""
    require_admin(actor, tenant)
    return list(db.session.scalars(
        select(Membership).join(User, User.id == Membership.user_id)
        .where(Membership.tenant_id == tenant.id).order_by(User.active.desc(), User.name)
        .options(contains_eager(Membership.user).lazyload(User.memberships),
                 selectinload(Membership.roles),
                 selectinload(Membership.delegate).lazyload(User.memberships))))


# ---------------------------------------------------------------------------------------------
# Tenants: settings, closures and branding.

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
SETTINGS = ("name", "currency", "timezone", "calendar_country", "working_days", "work_start",
            "work_end", "max_item_amount")


@lru_cache(maxsize=1)
def timezone_names() -> frozenset[str]:
    return frozenset(available_timezones())


@lru_cache(maxsize=1)
def holiday_countries() -> dict[str, str]:
    """ISO 3166 alpha-2 code -> name, for the countries the holidays library has calendars of
    (the calendar column holds two letters)."""
    names: dict[str, str] = {}
    try:  # the library's registry names each country module
        from holidays.registry import COUNTRIES

        for module, (_cls, code, *_rest) in COUNTRIES.items():
            names[code] = module.replace("_", " ").title()
    except (ImportError, ValueError):  # pragma: no cover - an older layout: codes only
        pass
    codes = [c for c in holidays.list_supported_countries() if len(c) == 2]
    return dict(sorted(((c, names.get(c, c)) for c in codes), key=lambda kv: kv[1]))


def clean_tenant_settings(data: dict) -> dict:
    """The settings as stored, or ValidationFailed naming each bad field."""
    errors: dict[str, str] = {}
    name = (data.get("name") or "").strip()
    if not name:
        errors["name"] = "is required"
    elif len(name) > 200:
        errors["name"] = "at most 200 characters"
    currency = (data.get("currency") or "").strip().upper()
    if not CURRENCY_RE.match(currency):
        errors["currency"] = "a three-letter ISO 4217 code, such as EUR"
    elif problem := currency_problem(currency):
        errors["currency"] = problem
    max_item_amount = None
    raw_max = str(data.get("max_item_amount") or "").strip()
    if raw_max:
        try:
            max_item_amount = parse_amount(raw_max, "max_item_amount",
                                           currency=None if "currency" in errors else currency,
                                           sign=POSITIVE)
        except ValidationFailed as failed:
            errors.update(failed.fields)
    timezone = (data.get("timezone") or "").strip()
    if timezone not in timezone_names():
        errors["timezone"] = "not a known time zone name (such as Europe/Berlin)"
    country = (data.get("calendar_country") or "").strip().upper()
    if country not in holiday_countries():
        errors["calendar_country"] = "no public-holiday calendar for that country code"
    days = data.get("working_days") or []
    try:
        days = sorted({int(d) for d in days})
    except (TypeError, ValueError):
        days = [0]
    if not days or any(d < 1 or d > 7 for d in days):
        errors["working_days"] = "choose at least one working day"
    start, end = (data.get("work_start") or "").strip(), (data.get("work_end") or "").strip()
    if not TIME_RE.match(start):
        errors["work_start"] = "a time such as 09:00"
    if not TIME_RE.match(end):
        errors["work_end"] = "a time such as 17:00"
    if "work_start" not in errors and "work_end" not in errors and not start < end:
        errors["work_end"] = "must be after the start of the working day"
    if errors:
        raise ValidationFailed("Some settings are not valid.", errors)
    return {"name": name, "currency": currency, "timezone": timezone,
            "calendar_country": country, "working_days": days, "work_start": start,
            "work_end": end, "max_item_amount": max_item_amount}


def _settings_of(tenant: Tenant) -> dict:
    return {name: getattr(tenant, name) for name in (*SETTINGS, "sla_reassign_on_breach")}


def _changed(before: dict, after: dict) -> tuple[dict, dict]:
    keys = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


# Slugs that name a page of Cleardesk's own where a tenant's slug goes in a URL
# (`/login/sso/callback` beside `/login/sso/<slug>`).
RESERVED_SLUGS = frozenset({"callback"})


def create_tenant(actor: Actor, *, slug: str, **settings) -> Tenant:
    """A new tenant; whoever creates it (an admin of some tenant) becomes its first admin."""
    if actor.type is not ActorType.SYSTEM and not admin_tenants(actor):
        raise PermissionDenied("Only admins can create tenants.")
    slug = (slug or "").strip().lower()
    errors = {}
    if not SLUG_RE.match(slug):
        errors["slug"] = "2 to 63 lower-case letters, digits or dashes"
    elif slug in RESERVED_SLUGS:
        errors["slug"] = "reserved by Cleardesk's own addresses; choose another"
    elif db.session.scalar(select(func.count()).select_from(Tenant).where(Tenant.slug == slug)):
        errors["slug"] = "already taken"
    try:
        clean = clean_tenant_settings(settings)
    except ValidationFailed as failed:
        errors.update(failed.fields)
    if errors:
        raise ValidationFailed("The tenant is not valid.", errors)
    tenant = Tenant(slug=slug, is_reseller=bool(settings.get("is_reseller")), **clean)
    db.session.add(tenant)
    db.session.flush()
    record_event(actor, "tenant.created", tenant_id=tenant.id,
                 data={"before": None, "after": {"slug": slug, **clean}})
    if actor.user is not None:
        grant_membership(actor, user=actor.user, tenant=tenant, roles=[Role.ADMIN.value])
        db.session.refresh(actor.user)
    return tenant


def update_tenant(actor: Actor, tenant: Tenant, *, sla_reassign_on_breach: bool | None = None,
                  **settings) -> Tenant:
    require_admin(actor, tenant)
    clean = clean_tenant_settings(settings)
    if sla_reassign_on_breach is not None:
        clean["sla_reassign_on_breach"] = bool(sla_reassign_on_breach)
    if clean["currency"] != tenant.currency and db.session.scalar(
            select(func.count()).select_from(WorkItem).where(WorkItem.tenant_id == tenant.id)):
        raise ValidationFailed("The currency cannot change once the tenant has work.",
                               {"currency": f"stays {tenant.currency}: amounts and limits are "
                                            "in it"})
    before, after = _changed(_settings_of(tenant), clean)
    if not after:
        return tenant
    calendar_before = calendar_snapshot(tenant)
    for name, value in clean.items():
        setattr(tenant, name, value)
    db.session.flush()
    record_event(actor, "tenant.updated", tenant_id=tenant.id,
                 data={"before": before, "after": after})
    if set(after) & {"timezone", "calendar_country", "working_days", "work_start", "work_end"}:
        _calendar_changed(tenant, calendar_before, "settings")
    return tenant


# ---------------------------------------------------------------------------------------------
# Sign-in settings: session timeouts.

SESSION_IDLE_RANGE = (5, 60 * 24 * 30)  # minutes: five minutes to thirty days
SESSION_MAX_RANGE = (1, 24 * 90)  # hours: one hour to ninety days


def _bounded_whole(value, bounds: tuple[int, int], unit: str, errors: dict, name: str):
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    if not text.isdigit() or not bounds[0] <= int(text) <= bounds[1]:
        errors[name] = f"a whole number of {unit} from {bounds[0]:,} to {bounds[1]:,}, or empty"
        return None
    return int(text)


def clean_sign_in_settings(data: dict) -> dict:
    errors: dict[str, str] = {}
    clean = {
        "session_idle_minutes": _bounded_whole(data.get("session_idle_minutes"),
                                               SESSION_IDLE_RANGE, "minutes", errors,
                                               "session_idle_minutes"),
        "session_max_hours": _bounded_whole(data.get("session_max_hours"), SESSION_MAX_RANGE,
                                            "hours", errors, "session_max_hours"),
    }
    if "require_second_factor" in data:
        clean["require_second_factor"] = bool(data["require_second_factor"])
    if "step_up_amount" in data:
        text = str(data.get("step_up_amount") or "").strip()
        clean["step_up_amount"] = None
        if text:
            try:
                amount = parse_amount(text, "step_up_amount", currency=data.get("currency"),
                                      sign=NON_NEGATIVE)
            except ValidationFailed as failed:
                errors["step_up_amount"] = next(iter(failed.fields.values()), failed.message)
            else:
                clean["step_up_amount"] = amount
    if errors:
        raise ValidationFailed("Some sign-in settings are not valid.", errors)
    return clean


def update_sign_in_settings(actor: Actor, tenant: Tenant, **settings) -> Tenant:
    """Change the tenant's session timeouts; audited with before and after. They apply at each
    member's next request (a person in several tenants gets the strictest)."""
    require_admin(actor, tenant)
    clean = clean_sign_in_settings({**settings, "currency": tenant.currency})
    before, after = _changed({name: getattr(tenant, name) for name in clean}, clean)
    if not after:
        return tenant
    for name, value in after.items():
        setattr(tenant, name, value)
    db.session.flush()
    record_event(actor, "tenant.sign_in_updated", tenant_id=tenant.id,
                 data={"before": before, "after": after})
    return tenant


MAX_CLOSURE_DAYS = 366


def _touch_calendar(tenant: Tenant) -> None:
    tenant.calendar_revision = uuid.uuid4().hex[:16]


def _calendar_changed(tenant: Tenant, before: dict, reason: str) -> None:
    """Open items' due times follow the new calendar; the worker moves them after commit."""
    add_message("tenant.calendar_changed",
                {"tenant_id": tenant.id, "before": before, "reason": reason}, tenant.id)


def closures_of(actor: Actor, tenant: Tenant) -> list[TenantClosure]:
    require_admin(actor, tenant)
    return list(db.session.scalars(select(TenantClosure).where(
        TenantClosure.tenant_id == tenant.id).order_by(TenantClosure.first_day)))


def add_closure(actor: Actor, tenant: Tenant, *, first_day: date | None,
                last_day: date | None, reason: str) -> TenantClosure:
    require_admin(actor, tenant)
    errors = {}
    reason = (reason or "").strip()
    if first_day is None:
        errors["first_day"] = "a date is required"
    last_day = last_day or first_day
    if first_day and last_day < first_day:
        errors["last_day"] = "must not be before the first day"
    elif first_day and (last_day - first_day).days >= MAX_CLOSURE_DAYS:
        errors["last_day"] = "a closure lasts at most a year"
    if not reason:
        errors["reason"] = "say why (it is shown to everyone)"
    elif len(reason) > 200:
        errors["reason"] = "at most 200 characters"
    if errors:
        raise ValidationFailed("The closure is not valid.", errors)
    calendar_before = calendar_snapshot(tenant)
    closure = TenantClosure(tenant_id=tenant.id, first_day=first_day, last_day=last_day,
                            reason=reason)
    db.session.add(closure)
    _touch_calendar(tenant)
    db.session.flush()
    _calendar_changed(tenant, calendar_before, "closure added")
    record_event(actor, "tenant.closure_added", tenant_id=tenant.id,
                 data={"before": None, "after": {"id": closure.id, "first_day": first_day,
                                                 "last_day": last_day, "reason": reason}})
    return closure


def remove_closure(actor: Actor, tenant: Tenant, closure_id: int) -> None:
    require_admin(actor, tenant)
    closure = db.session.get(TenantClosure, closure_id)
    if closure is None or closure.tenant_id != tenant.id:
        raise NotFound("No such closure.")
    before = {"id": closure.id, "first_day": closure.first_day, "last_day": closure.last_day,
              "reason": closure.reason}
    calendar_before = calendar_snapshot(tenant)
    db.session.delete(closure)
    _touch_calendar(tenant)
    db.session.flush()
    _calendar_changed(tenant, calendar_before, "closure removed")
    record_event(actor, "tenant.closure_removed", tenant_id=tenant.id,
                 data={"before": before, "after": None})


def _relative_luminance(color: str) -> float:
    channels = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_with_white(color: str) -> float:
    return 1.05 / (_relative_luminance(color) + 0.05)


# The accent colours links, the brand name and white text on buttons: WCAG's 3:1 for large
# text and interface parts is the least it must reach against white.
MIN_CONTRAST = 3.0


def update_branding(actor: Actor, tenant: Tenant, *, brand_name: str | None,
                    brand_color: str | None) -> Tenant:
    require_admin(actor, tenant)
    errors = {}
    brand_name = (brand_name or "").strip() or None
    brand_color = (brand_color or "").strip().lower() or None
    if brand_name and len(brand_name) > 200:
        errors["brand_name"] = "at most 200 characters"
    if brand_color:
        if not COLOR_RE.match(brand_color):
            errors["brand_color"] = "a colour as #rrggbb, such as #0f766e"
        elif contrast_with_white(brand_color) < MIN_CONTRAST:
            errors["brand_color"] = (f"too light to read on white (contrast "
                                     f"{contrast_with_white(brand_color):.1f}:1, needs "
                                     f"{MIN_CONTRAST:.0f}:1); choose a darker shade")
    if errors:
        raise ValidationFailed("The branding is not valid.", errors)
    before, after = _changed({"brand_name": tenant.brand_name, "brand_color": tenant.brand_color},
                             {"brand_name": brand_name, "brand_color": brand_color})
    if after:
        tenant.brand_name, tenant.brand_color = brand_name, brand_color
        db.session.flush()
        record_event(actor, "tenant.branding_updated", tenant_id=tenant.id,
                     data={"before": before, "after": after})
    return tenant


MAX_LOGO_BYTES = 256 * 1024
# Raster formats only: an SVG can carry script, so it is refused whatever it is called.
LOGO_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image(data: bytes) -> str | None:
    """The image type the bytes are (not what the file name or the browser claims), or None."""
    for signature, content_type in LOGO_SIGNATURES:
        if data.startswith(signature):
            return content_type
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def set_logo(actor: Actor, tenant: Tenant, data: bytes) -> TenantLogo:
    require_admin(actor, tenant)
    if not data:
        raise ValidationFailed("Choose a logo file.", {"logo": "no file was sent"})
    if len(data) > MAX_LOGO_BYTES:
        raise ValidationFailed("The logo is too large.",
                               {"logo": f"larger than the {MAX_LOGO_BYTES // 1024} KB allowed"})
    content_type = sniff_image(data)
    if content_type is None:
        raise ValidationFailed("The logo is not an image Cleardesk accepts.",
                               {"logo": "a PNG, JPEG, GIF or WebP image (SVG is not accepted)"})
    digest = hashlib.sha256(data).hexdigest()
    logo = db.session.get(TenantLogo, tenant.id)
    before = {"sha256": logo.sha256, "content_type": logo.content_type} if logo else None
    if logo is None:
        logo = TenantLogo(tenant_id=tenant.id)
        db.session.add(logo)
    logo.content_type, logo.data, logo.sha256, logo.updated_at = (
        content_type, data, digest, utcnow())
    tenant.logo_version = digest[:16]
    db.session.flush()
    record_event(actor, "tenant.logo_updated", tenant_id=tenant.id,
                 data={"before": before, "after": {"sha256": digest, "content_type": content_type,
                                                   "bytes": len(data)}})
    return logo


def remove_logo(actor: Actor, tenant: Tenant) -> None:
    require_admin(actor, tenant)
    logo = db.session.get(TenantLogo, tenant.id)
    if logo is None:
        return
    before = {"sha256": logo.sha256, "content_type": logo.content_type}
    db.session.delete(logo)
    tenant.logo_version = None
    db.session.flush()
    record_event(actor, "tenant.logo_removed", tenant_id=tenant.id,
                 data={"before": before, "after": None})


def logo_for_member(actor: Actor, slug: str) -> TenantLogo:
    """A tenant's logo, for its members only (NotFound otherwise)."""
    tenant = db.session.scalars(select(Tenant).where(Tenant.slug == slug)).one_or_none()
    if tenant is None or tenant.id not in actor.tenant_ids():
        raise NotFound("No such logo.")
    logo = db.session.get(TenantLogo, tenant.id)
    if logo is None:
        raise NotFound("No such logo.")
    return logo


# ---------------------------------------------------------------------------------------------
# People: memberships with roles and limits, four-eyes on one's own.


def _clean_roles_and_limit(roles, approval_limit) -> tuple[list[str], Decimal]:
    known = {r.value for r in Role}
    roles = sorted({r for r in (roles or []) if r})
    unknown = [r for r in roles if r not in known]
    if unknown:
        raise ValidationFailed(f"Unknown role {unknown[0]!r}.",
                               {"roles": f"choose from {', '.join(sorted(known))}"})
    limit = parse_money(approval_limit if approval_limit not in (None, "") else "0",
                        "approval_limit")
    if limit < 0:
        raise ValidationFailed("An approval limit cannot be negative.",
                               {"approval_limit": "must be zero or more"})
    return roles, limit


def grant_membership(actor: Actor, *, user: User, tenant: Tenant, roles: list[str],
                     approval_limit="0") -> Membership:
    """Give a user roles and a limit in a tenant (no permission check: the system, seeding and
    change_membership call it). Audited with before and after values."""
    roles, limit = _clean_roles_and_limit(roles, approval_limit)
    membership = db.session.scalars(
        select(Membership).where(Membership.user_id == user.id,
                                 Membership.tenant_id == tenant.id)
    ).one_or_none()
    before = None
    if membership is None:
        membership = Membership(user=user, tenant=tenant, approval_limit=limit)
        db.session.add(membership)
    else:
        before = {"roles": sorted(membership.role_set),
                  "approval_limit": membership.approval_limit}
        membership.approval_limit = limit
    membership.roles = [MembershipRole(role=r) for r in roles]
    db.session.flush()
    record_event(actor, "membership.granted", tenant_id=tenant.id,
                 data={"user_id": user.id, "email": user.email, "before": before,
                       "after": {"roles": roles, "approval_limit": limit}})
    return membership


def _active_admins(tenant_id: int, excluding: int | None = None) -> int:
    return sum(1 for user in people_with_role(Role.ADMIN.value, tenant_id)
               if user.id != excluding)


def _keep_an_admin(tenant: Tenant, user_id: int) -> None:
    if _active_admins(tenant.id, excluding=user_id) == 0:
        raise InvalidTransition(f"{tenant.display_name} must keep at least one active admin.")


def change_membership(actor: Actor, tenant: Tenant, *, user: User, roles, approval_limit
                      ) -> Membership | PendingMembershipChange:
    """Set a member's roles and limit. A change to one's own is only proposed: it waits for
    another admin of the tenant (four-eyes) and the pending change is returned."""
    require_admin(actor, tenant)
    roles, limit = _clean_roles_and_limit(roles, approval_limit)
    membership = db.session.scalars(select(Membership).where(
        Membership.tenant_id == tenant.id, Membership.user_id == user.id)).one_or_none()
    before = ({"roles": sorted(membership.role_set), "approval_limit": membership.approval_limit}
              if membership else None)
    after = {"roles": roles, "approval_limit": limit}
    if before == after:
        return membership
    if membership is not None and Role.ADMIN.value in membership.role_set \
            and Role.ADMIN.value not in roles:
        _keep_an_admin(tenant, user.id)
    if user.id == actor.user_id:
        return _propose_own_change(actor, tenant, user, before, after)
    return grant_membership(actor, user=user, tenant=tenant, roles=roles, approval_limit=limit)


def _propose_own_change(actor, tenant, user, before, after) -> PendingMembershipChange:
    if _active_admins(tenant.id, excluding=user.id) == 0:
        raise PermissionDenied("A change to your own roles or limit needs a second admin, and "
                               f"{tenant.display_name} has no other active admin.")
    open_change = db.session.scalars(select(PendingMembershipChange).where(
        PendingMembershipChange.tenant_id == tenant.id,
        PendingMembershipChange.user_id == user.id,
        PendingMembershipChange.state == ChangeState.PENDING.value)).one_or_none()
    if open_change is not None:
        raise InvalidTransition("A change of your roles or limit already waits for another "
                                "admin; it must be decided first.")
    change = PendingMembershipChange(
        tenant_id=tenant.id, user_id=user.id, requested_by_id=actor.user_id,
        before=_jsonable_membership(before), after=_jsonable_membership(after))
    db.session.add(change)
    db.session.flush()
    record_event(actor, "membership.change_requested", tenant_id=tenant.id,
                 data={"change_id": change.id, "user_id": user.id, "before": before,
                       "after": after})
    return change


def _jsonable_membership(values: dict | None) -> dict | None:
    if values is None:
        return None
    return {"roles": values["roles"], "approval_limit": str(values["approval_limit"])}


def pending_changes(actor: Actor, tenant: Tenant) -> list[PendingMembershipChange]:
    require_admin(actor, tenant)
    return list(db.session.scalars(select(PendingMembershipChange).where(
        PendingMembershipChange.tenant_id == tenant.id,
        PendingMembershipChange.state == ChangeState.PENDING.value)
        .order_by(PendingMembershipChange.id)))


def _pending_change(actor: Actor, tenant: Tenant, change_id: int) -> PendingMembershipChange:
    require_admin(actor, tenant)
    change = db.session.get(PendingMembershipChange, change_id)
    if change is None or change.tenant_id != tenant.id:
        raise NotFound("No such change.")
    if change.state != ChangeState.PENDING.value:
        raise InvalidTransition(f"This change was already {change.state}.")
    if actor.user_id in (change.requested_by_id, change.user_id):
        raise PermissionDenied("Another admin must decide a change to your own roles or limit.")
    return change


def approve_change(actor: Actor, tenant: Tenant, change_id: int) -> Membership:
    change = _pending_change(actor, tenant, change_id)
    user = db.session.get(User, change.user_id)
    after = change.after
    if Role.ADMIN.value not in after["roles"] and Role.ADMIN.value in user.roles_in(tenant.id):
        _keep_an_admin(tenant, user.id)
    change.state, change.decided_by_id, change.decided_at = (
        ChangeState.APPROVED.value, actor.user_id, utcnow())
    record_event(actor, "membership.change_approved", tenant_id=tenant.id,
                 data={"change_id": change.id, "user_id": user.id,
                       "requested_by_id": change.requested_by_id, "before": change.before,
                       "after": after})
    return grant_membership(actor, user=user, tenant=tenant, roles=after["roles"],
                            approval_limit=after["approval_limit"])


def reject_change(actor: Actor, tenant: Tenant, change_id: int) -> PendingMembershipChange:
    change = _pending_change(actor, tenant, change_id)
    change.state, change.decided_by_id, change.decided_at = (
        ChangeState.REJECTED.value, actor.user_id, utcnow())
    db.session.flush()
    record_event(actor, "membership.change_rejected", tenant_id=tenant.id,
                 data={"change_id": change.id, "user_id": change.user_id,
                       "requested_by_id": change.requested_by_id, "before": change.before,
                       "after": change.after})
    return change


def invite_user(actor: Actor, tenant: Tenant, *, email: str, name: str, roles,
                approval_limit) -> tuple[User, bool]:
    """Add someone to the tenant. A new person gets an account without a password and an
    invitation mail with a single-use link to set one; someone who already has an account gets
    the membership. Returns the user and whether they were invited."""
    from app.auth.services import find_user_by_email

    require_admin(actor, tenant)
    email = (email or "").strip().lower()
    name = (name or "").strip()
    errors = {}
    if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email) or len(email) > 254:
        errors["email"] = "not an email address"
    if len(name) > 200:
        errors["name"] = "at most 200 characters"
    try:
        roles, limit = _clean_roles_and_limit(roles, approval_limit)
    except ValidationFailed as failed:
        errors.update(failed.fields)
    if errors:
        raise ValidationFailed("The person's details are not valid.", errors)
    if not roles:
        raise ValidationFailed("Give the person at least one role.",
                               {"roles": "choose at least one"})
    user = find_user_by_email(email)
    if user is not None:
        if user.membership_in(tenant.id) is not None:
            raise ValidationFailed("That person is already a member here.",
                                   {"email": "already a member of this tenant"})
        grant_membership(actor, user=user, tenant=tenant, roles=roles, approval_limit=limit)
        return user, False
    user = User(email=email, name=name or email.split("@")[0], password_hash=None, active=True)
    db.session.add(user)
    db.session.flush()
    record_event(actor, "user.invited", tenant_id=tenant.id,
                 data={"user_id": user.id, "email": email, "before": None,
                       "after": {"name": user.name, "active": True}})
    grant_membership(actor, user=user, tenant=tenant, roles=roles, approval_limit=limit)
    add_message("account.password_link",
                {"user_id": user.id, "tenant_id": tenant.id,
                 "purpose": PasswordLinkPurpose.INVITATION.value}, tenant.id)
    db.session.refresh(user)
    return user, True


def request_password_reset(actor: Actor, tenant: Tenant, user_id: int) -> User:
    """Mail the person a single-use link to set a new password (their password stays valid
    until they use it)."""
    membership = member_for_admin(actor, tenant, user_id)
    user = membership.user
    if not user.active:
        raise InvalidTransition(f"{user.name} is deactivated; reactivate them first.")
    record_event(actor, "user.password_reset_requested", tenant_id=tenant.id,
                 data={"user_id": user.id})
    add_message("account.password_link",
                {"user_id": user.id, "tenant_id": tenant.id,
                 "purpose": PasswordLinkPurpose.RESET.value}, tenant.id)
    return user


# ---------------------------------------------------------------------------------------------
# Deactivating: sessions end, claims go back, open steps are routed again.


def deactivate_user(actor: Actor, tenant: Tenant, user_id: int) -> User:
    """End someone's access to Cleardesk. An account spans tenants, so only an admin of every
    tenant the person works in can deactivate it."""
    membership = member_for_admin(actor, tenant, user_id)
    user = membership.user
    if user.id == actor.user_id:
        raise PermissionDenied("You cannot deactivate yourself; ask another admin.")
    if not user.active:
        return user
    others = [m.tenant for m in user.memberships
              if m.tenant_id != tenant.id and not is_admin_of(actor, m.tenant_id)]
    if others:
        raise PermissionDenied(f"{user.name} also works in tenants you do not administer; "
                               "an admin of each of their tenants must deactivate them.")
    for m in user.memberships:
        if Role.ADMIN.value in m.role_set:
            _keep_an_admin(m.tenant, user.id)
    user.active = False
    ended = end_sessions(actor, user, SessionEndReason.DEACTIVATED)  # signed out everywhere
    db.session.flush()
    for m in user.memberships:
        handed = _hand_back_work(actor, user, m.tenant_id)
        record_event(actor, "user.deactivated", tenant_id=m.tenant_id,
                     data={"user_id": user.id, "email": user.email,
                           "before": {"active": True}, "after": {"active": False},
                           "sessions_ended": len(ended), **handed})
    # Unused password links die with the account.
    db.session.execute(update(PasswordLink).where(
        PasswordLink.user_id == user.id, PasswordLink.used_at.is_(None),
        PasswordLink.revoked_at.is_(None)).values(revoked_at=utcnow()))
    return user


def remove_member(actor: Actor, tenant: Tenant, user_id: int) -> User:
    """End someone's membership of this tenant only (their account and other tenants stay):
    their claims here are released, their open steps here routed to others, delegations to
    them here end."""
    membership = member_for_admin(actor, tenant, user_id)
    user = membership.user
    if user.id == actor.user_id:
        raise PermissionDenied("You cannot remove yourself; ask another admin.")
    if Role.ADMIN.value in membership.role_set:
        _keep_an_admin(tenant, user.id)
    before = {"roles": sorted(membership.role_set), "approval_limit": membership.approval_limit,
              "delegation": _delegation_of(membership)}
    db.session.delete(membership)
    db.session.flush()
    db.session.expire(user, ["memberships"])
    handed = _hand_back_work(actor, user, tenant.id)
    record_event(actor, "membership.removed", tenant_id=tenant.id,
                 data={"user_id": user.id, "email": user.email, "before": before,
                       "after": None, **handed})
    return user


def reactivate_user(actor: Actor, tenant: Tenant, user_id: int) -> User:
    membership = member_for_admin(actor, tenant, user_id)
    user = membership.user
    if user.active:
        return user
    others = [m for m in user.memberships
              if m.tenant_id != tenant.id and not is_admin_of(actor, m.tenant_id)]
    if others:
        raise PermissionDenied(f"{user.name} also works in tenants you do not administer; "
                               "an admin of each of their tenants must reactivate them.")
    user.active = True
    db.session.flush()
    record_event(actor, "user.reactivated", tenant_id=tenant.id,
                 data={"user_id": user.id, "before": {"active": False},
                       "after": {"active": True}})
    return user


def _hand_back_work(actor: Actor, user: User, tenant_id: int) -> dict:
    """Release the person's claimed open items, route their open approval steps to someone
    else, end delegations to them and revoke their unused email links, in one tenant."""
    from app.approvals.models import ApprovalAssignment, ApprovalLinkToken, RevokeReason
    from app.approvals.services import assign_step_approver
    from app.work import ledger
    from app.work.queries import open_items

    claimed = db.session.scalars(select(WorkItem).where(
        WorkItem.tenant_id == tenant_id, WorkItem.assignee_id == user.id, open_items())
        .order_by(WorkItem.id)).all()
    now = utcnow()
    ledger.apply_changes(actor, tenant_id, [
        ledger.Change(item, {"assignee_id": None, "claimed_at": None,
                             "last_actor_id": actor.user_id, "last_action_at": now},
                      action="item.released",
                      data={"previous_assignee_id": user.id, "reason": "deactivated"})
        for item in claimed], now=now)
    released = [item.id for item in claimed]

    # Delegations to them end first, so routing does not count on them standing in.
    ended = []
    for m in db.session.scalars(select(Membership).where(
            Membership.tenant_id == tenant_id, Membership.delegate_id == user.id)).all():
        ended.append(m.user_id)
        before = _delegation_of(m)
        _clear_delegation_fields(m)
        record_event(actor, "delegation.cleared", tenant_id=tenant_id,
                     on_behalf_of_id=m.user_id,
                     data={"user_id": m.user_id, "before": before, "after": None,
                           "reason": "delegate deactivated"})
    rerouted = []
    routed_step_ids = select(ApprovalAssignment.step_id).where(
        ApprovalAssignment.approver_id == user.id)
    steps = db.session.scalars(
        select(ApprovalStep).join(WorkItem, WorkItem.id == ApprovalStep.item_id)
        .where(WorkItem.tenant_id == tenant_id, ApprovalStep.state == StepState.OPEN.value,
               (ApprovalStep.approver_id == user.id) | ApprovalStep.id.in_(routed_step_ids))
    ).all()
    for step in steps:
        item = step.item
        db.session.execute(delete(ApprovalAssignment).where(
            ApprovalAssignment.step_id == step.id))
        step.approver_id = None
        db.session.flush()
        new_approver = assign_step_approver(item, step)
        record_event(actor, "approval.step_rerouted", tenant_id=tenant_id, item_id=item.id,
                     data={"step": step.position, "previous_approver_id": user.id,
                           "approver_id": new_approver, "reason": "deactivated"})
        rerouted.append(step.id)

    db.session.execute(update(ApprovalLinkToken).where(
        ApprovalLinkToken.tenant_id == tenant_id, ApprovalLinkToken.approver_id == user.id,
        ApprovalLinkToken.used_at.is_(None), ApprovalLinkToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=RevokeReason.SUPERSEDED.value))
    db.session.flush()
    return {"released_item_ids": released, "rerouted_step_ids": rerouted,
            "delegations_ended_for": ended}


# ---------------------------------------------------------------------------------------------
# Set-password links (invitations and resets).

LINK_TTL = {PasswordLinkPurpose.INVITATION.value: ("INVITATION_TTL_HOURS", 72),
            PasswordLinkPurpose.RESET.value: ("PASSWORD_RESET_TTL_HOURS", 2)}
MIN_PASSWORD = 12


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_password_link(user: User, tenant_id: int | None,
                        purpose: str) -> tuple[str, PasswordLink]:
    """A new link (its secret returned once, only its hash kept); the person's older unused
    links stop working."""
    now = utcnow()
    db.session.execute(update(PasswordLink).where(
        PasswordLink.user_id == user.id, PasswordLink.used_at.is_(None),
        PasswordLink.revoked_at.is_(None)).values(revoked_at=now))
    key, default = LINK_TTL[purpose]
    hours = int(current_app.config.get(key, default))
    token = secrets.token_urlsafe(32)
    row = PasswordLink(token_hash=_token_hash(token), user_id=user.id, tenant_id=tenant_id,
                       purpose=purpose, created_at=now, expires_at=now + timedelta(hours=hours))
    db.session.add(row)
    db.session.flush()
    return token, row


class LinkRefused(InvalidTransition):
    status = 410


def password_link(token: str) -> PasswordLink:
    """The link a token names, if it can still be used; LinkRefused says why not."""
    row = db.session.scalars(select(PasswordLink).where(
        PasswordLink.token_hash == _token_hash(token or ""))).one_or_none()
    if row is None:
        raise NotFound("This link is not valid. Ask for a new one from the sign-in page "
                       "(Forgot your password?) or from your admin.")
    if row.used_at is not None:
        raise LinkRefused("This link was already used. Sign in, or ask your admin for a new one.")
    if row.revoked_at is not None:
        raise LinkRefused("A newer link was sent, or the account was deactivated; this one no "
                          "longer works.")
    if row.expires_at <= utcnow():
        raise LinkRefused("This link has expired. Ask for a new one from the sign-in page "
                          "(Forgot your password?) or from your admin.")
    if not row.user.active:
        raise LinkRefused("This account is deactivated.")
    return row


def set_password_with_link(token: str, password: str, confirm: str, ip: str | None,
                           user_agent: str | None, keep_session_id: str | None = None) -> User:
    """Set the password a link is for; every other session of the person ends (the one the
    request came with, `keep_session_id`, stays if it is theirs)."""
    from app.auth.passwords import hash_password

    row = password_link(token)
    if len(password or "") < MIN_PASSWORD:
        raise ValidationFailed(f"Passwords need at least {MIN_PASSWORD} characters.",
                               {"password": f"at least {MIN_PASSWORD} characters"})
    if len(password) > 1024:
        raise ValidationFailed("That password is too long.", {"password": "too long"})
    if password != confirm:
        raise ValidationFailed("The two passwords differ.", {"confirm": "does not match"})
    user = row.user
    now = utcnow()
    # Single use even when two requests race: only one UPDATE finds it unused.
    used = db.session.execute(update(PasswordLink).where(
        PasswordLink.id == row.id, PasswordLink.used_at.is_(None)).values(used_at=now))
    if used.rowcount != 1:
        raise LinkRefused("This link was already used.")
    user.password_hash = hash_password(password)
    actor = Actor(ActorType.USER, user=user, label=user.email, ip=ip, user_agent=user_agent)
    ended = end_sessions(actor, user, SessionEndReason.PASSWORD_CHANGED, keep=keep_session_id)
    db.session.flush()
    record_event(actor, "user.password_set", tenant_id=row.tenant_id,
                 data={"user_id": user.id, "via": row.purpose, "link_id": row.id,
                       "sessions_ended": len(ended)})
    if row.purpose == PasswordLinkPurpose.RESET.value:
        record_event(actor, "auth.password_reset", tenant_id=None,
                     data={"user_id": user.id, "link_id": row.id, "sessions_ended": ended})
    return user


# ---------------------------------------------------------------------------------------------
# Delegation (out of office).

DELEGATION_FIELDS = ("delegate_id", "delegate_from", "delegate_until", "delegate_kinds",
                     "delegate_max_amount")


def _delegation_of(m: Membership) -> dict | None:
    if m.delegate_id is None:
        return None
    return {name: getattr(m, name) for name in DELEGATION_FIELDS}


def _clear_delegation_fields(m: Membership) -> None:
    for name in DELEGATION_FIELDS:
        setattr(m, name, None)


# Who has approvals to delegate when away.
DELEGATING_ROLES = frozenset({Role.APPROVER.value, Role.MANAGER.value})


def delegation_membership(actor: Actor, tenant_id: int, user_id: int) -> Membership:
    """The membership whose delegation the actor may change: their own (in a tenant where they
    decide approvals), or anyone's in a tenant they administer."""
    tenant = db.session.get(Tenant, tenant_id) if tenant_id else None
    if tenant is None or tenant_id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    if user_id != actor.user_id:
        return member_for_admin(actor, tenant, user_id)
    membership = actor.user.membership_in(tenant_id)
    if not membership.role_set & DELEGATING_ROLES:
        raise PermissionDenied("Only approvers and managers have approvals to delegate.")
    return membership


def possible_delegates(tenant_id: int, user_id: int) -> list[User]:
    """Who can stand in for someone: the tenant's other active members who decide approvals."""
    return list(db.session.scalars(
        select(User).join(Membership, Membership.user_id == User.id)
        .join(MembershipRole, MembershipRole.membership_id == Membership.id)
        .where(Membership.tenant_id == tenant_id, User.id != user_id, User.active.is_(True),
               MembershipRole.role.in_([Role.APPROVER.value, Role.MANAGER.value]))
        .distinct().order_by(User.name)))


def set_delegation(actor: Actor, tenant_id: int, user_id: int, *, delegate_id: int | None,
                   first_day: date | None, last_day: date | None, kinds=None,
                   max_amount=None) -> Membership:
    """Out of office from first_day to last_day: new approval steps of the person go to the
    delegate, who decides them on their behalf; optionally only for some kinds of work and up
    to an amount."""
    membership = delegation_membership(actor, tenant_id, user_id)
    errors = {}
    delegate = None
    if not delegate_id:
        errors["delegate_id"] = "choose who stands in"
    elif delegate_id == user_id:
        errors["delegate_id"] = "someone other than the person away"
    else:
        delegate = db.session.scalars(select(Membership).where(
            Membership.tenant_id == tenant_id, Membership.user_id == delegate_id)).one_or_none()
        if delegate is None or not delegate.user.active:
            errors["delegate_id"] = "not an active member of this tenant"
        elif not delegate.role_set & {Role.APPROVER.value, Role.MANAGER.value}:
            errors["delegate_id"] = "holds no role that decides approvals"
    if first_day is None:
        errors["first_day"] = "a date is required"
    if last_day is None:
        errors["last_day"] = "a date is required"
    if first_day and last_day:
        if last_day < first_day:
            errors["last_day"] = "must not be before the first day"
        elif last_day < utcnow().date():
            errors["last_day"] = "is in the past"
        elif (last_day - first_day).days > 366:
            errors["last_day"] = "an absence lasts at most a year"
    kinds = sorted({k for k in (kinds or []) if k})
    known = {k.value for k in Kind}
    if any(k not in known for k in kinds):
        errors["kinds"] = "unknown kind of work"
    amount = None
    if max_amount not in (None, ""):
        try:
            amount = parse_money(max_amount, "max_amount")
            if amount < 0:
                errors["max_amount"] = "must be zero or more"
        except ValidationFailed as failed:
            errors.update({"max_amount": next(iter(failed.fields.values()), "not a number")})
    if errors:
        raise ValidationFailed("The out-of-office settings are not valid.", errors)
    before = _delegation_of(membership)
    membership.delegate_id = delegate_id
    membership.delegate_from, membership.delegate_until = first_day, last_day
    membership.delegate_kinds = kinds or None
    membership.delegate_max_amount = amount
    db.session.flush()
    record_event(actor, "delegation.set", tenant_id=tenant_id,
                 on_behalf_of_id=user_id if user_id != actor.user_id else None,
                 data={"user_id": user_id, "before": before,
                       "after": _delegation_of(membership)})
    return membership


def clear_delegation(actor: Actor, tenant_id: int, user_id: int) -> Membership:
    membership = delegation_membership(actor, tenant_id, user_id)
    before = _delegation_of(membership)
    if before is None:
        return membership
    _clear_delegation_fields(membership)
    db.session.flush()
    record_event(actor, "delegation.cleared", tenant_id=tenant_id,
                 on_behalf_of_id=user_id if user_id != actor.user_id else None,
                 data={"user_id": user_id, "before": before, "after": None})
    return membership


# ---------------------------------------------------------------------------------------------
# Reporting lines: whom a member reports to, the first level an approval escalates to.

MAX_REPORTING_DEPTH = 200


def possible_managers(tenant_id: int, user_id: int) -> list[User]:
    """Who someone may report to: the tenant's other active members who decide approvals."""
    return possible_delegates(tenant_id, user_id)


def set_manager(actor: Actor, tenant: Tenant, user_id: int, manager_id: int | None) -> Membership:
    """Name whom a member reports to in this tenant (None: nobody). Refused: themselves, someone
    who is not an active member deciding approvals, and a loop (the new manager reports,
    directly or through others, to the member). Audited with before and after."""
    membership = member_for_admin(actor, tenant, user_id)
    manager_id = manager_id or None
    if manager_id == membership.manager_id:
        return membership
    if manager_id is not None:
        if manager_id == user_id:
            raise ValidationFailed("Nobody reports to themselves.",
                                   {"manager_id": "someone other than this person"})
        boss = db.session.scalars(select(Membership).where(
            Membership.tenant_id == tenant.id, Membership.user_id == manager_id)).one_or_none()
        if boss is None or not boss.user.active:
            raise ValidationFailed("The manager must be an active member of this tenant.",
                                   {"manager_id": "not an active member of this tenant"})
        if not boss.role_set & DELEGATING_ROLES:
            raise ValidationFailed("The manager must decide approvals.",
                                   {"manager_id": "holds no role that decides approvals"})
        lines = dict(db.session.execute(select(Membership.user_id, Membership.manager_id).where(
            Membership.tenant_id == tenant.id, Membership.manager_id.is_not(None))).all())
        above, seen = manager_id, set()
        while above is not None and above not in seen and len(seen) < MAX_REPORTING_DEPTH:
            if above == user_id:
                raise ValidationFailed(
                    f"{boss.user.name} reports to {membership.user.name} (directly or through "
                    "others): that would make a loop.",
                    {"manager_id": "reports to this person already"})
            seen.add(above)
            above = lines.get(above)
    before = membership.manager_id
    membership.manager_id = manager_id
    db.session.flush()
    record_event(actor, "membership.manager_set", tenant_id=tenant.id,
                 data={"user_id": user_id, "before": before, "after": manager_id})
    return membership
