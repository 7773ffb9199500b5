"""Administering tenants: creating them, their settings (currency, timezone, business calendar),
sign-in settings (session timeouts), calendar closures and branding. Every function takes the
actor, checks that they administer the tenant (another tenant's admin gets NotFound, as if it did
not exist), records an audit event with before and after values, and never commits."""
from __future__ import annotations

import hashlib
import re
import uuid
from datetime import date
from functools import lru_cache
from zoneinfo import available_timezones

import holidays
from sqlalchemy import func, select

from app.actors import Actor, ActorType
from app.admin.access import admin_tenants, require_admin
from app.admin.jobs import calendar_snapshot
from app.admin.models import TenantClosure, TenantLogo
from app.admin.people import grant_membership
from app.audit.services import record_event
from app.errors import NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import Role, Tenant, WorkItem
from app.outbox.services import add_message
from app.types import utcnow
from app.work.money import NON_NEGATIVE, POSITIVE, currency_problem, parse_amount

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
