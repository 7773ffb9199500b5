"""Tenant settings, closures and branding through the admin pages: bad input re-renders the form
with messages next to the fields and changes nothing; good input is saved and audited with its
before and after values."""
from __future__ import annotations

import struct
import zlib
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.admin.models import TenantClosure, TenantLogo
from app.audit.models import AuditEvent
from app.extensions import db
from app.models import Tenant
from app.work.calendar import calendar_for
from tests.admin.conftest import post_form

SETTINGS = {"name": "Northwind Traders", "currency": "USD", "timezone": "America/Chicago",
            "calendar_country": "US", "working_days": ["1", "2", "3", "4"],
            "work_start": "08:00", "work_end": "16:30"}


def png(width=2, height=1, padding=0) -> bytes:
    """A real PNG (optionally with a large text chunk, to make it big)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + b"\x0f\x76\x6e" * width for _ in range(height))
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if padding:
        body += chunk(b"tEXt", b"Comment\x00" + b"x" * padding)
    return (b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _events(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                   .order_by(AuditEvent.id)))


def _tenant(slug="northwind") -> Tenant:
    db.session.expire_all()
    return db.session.scalars(select(Tenant).where(Tenant.slug == slug)).one()


def test_the_admin_nav_link_and_area_are_for_admins_only(org, sign_in):
    admin = sign_in(org.admin)
    assert 'href="/admin/"' in admin.get("/queues/mine").text
    index = admin.get("/admin/")
    assert index.status_code == 200
    assert "Northwind" in index.text and "Contoso" not in index.text

    approver = sign_in(org.approver)
    assert 'href="/admin/"' not in approver.get("/queues/mine").text
    assert approver.get("/admin/").status_code == 403
    assert approver.get("/admin/t/northwind/").status_code == 403


@pytest.mark.parametrize("field, value, message", [
    ("timezone", "Mars/Olympus_Mons", "not a known time zone name"),
    ("timezone", "", "not a known time zone name"),
    ("calendar_country", "XX", "no public-holiday calendar"),
    ("currency", "EURO", "three-letter ISO 4217 code"),
    ("work_end", "07:00", "must be after the start"),
    ("work_start", "25:00", "a time such as 09:00"),
    ("working_days", [], "choose at least one working day"),
    ("name", "", "is required"),
])
def test_bad_settings_re_render_with_a_message_and_change_nothing(org, sign_in, field, value,
                                                                  message):
    admin = sign_in(org.admin)
    events = len(_events("tenant.updated"))
    response = post_form(admin, "/admin/t/northwind/", {**SETTINGS, field: value})
    assert response.status_code == 422
    assert message in response.text
    assert 'aria-invalid="true"' in response.text
    tenant = _tenant()
    assert (tenant.timezone, tenant.name) == ("America/New_York", "Northwind")
    assert len(_events("tenant.updated")) == events


def test_settings_are_saved_and_audited_with_before_and_after(org, sign_in):
    admin = sign_in(org.admin)
    response = post_form(admin, "/admin/t/northwind/", SETTINGS)
    assert response.status_code == 303
    tenant = _tenant()
    assert (tenant.name, tenant.timezone, tenant.working_days, tenant.work_start,
            tenant.work_end) == ("Northwind Traders", "America/Chicago", [1, 2, 3, 4], "08:00",
                                 "16:30")
    [event] = _events("tenant.updated")
    assert event.actor_id == org.admin.id and event.tenant_id == tenant.id
    assert event.data["before"]["timezone"] == "America/New_York"
    assert event.data["after"]["timezone"] == "America/Chicago"
    assert event.data["before"]["working_days"] == [1, 2, 3, 4, 5]
    assert "currency" not in event.data["after"]  # unchanged values are not listed
    # The SLA calendar follows the new hours at once.
    assert calendar_for(tenant).start.strftime("%H:%M") == "08:00"


def test_reassigning_breached_work_is_switched_on_in_the_settings_and_audited(org, sign_in):
    admin = sign_in(org.admin)
    assert 'name="sla_reassign_on_breach"' in admin.get("/admin/t/northwind/").text
    assert post_form(admin, "/admin/t/northwind/",
                     {**SETTINGS, "sla_reassign_on_breach": "y"}).status_code == 303
    assert _tenant().sla_reassign_on_breach is True
    [event] = _events("tenant.updated")
    assert (event.data["before"]["sla_reassign_on_breach"],
            event.data["after"]["sla_reassign_on_breach"]) == (False, True)
    # An unticked box is a choice too: it switches it off again.
    assert post_form(admin, "/admin/t/northwind/", SETTINGS).status_code == 303
    assert _tenant().sla_reassign_on_breach is False


def test_the_currency_is_fixed_once_the_tenant_has_work(org, sign_in, make_item):
    make_item(org.northwind)
    admin = sign_in(org.admin)
    response = post_form(admin, "/admin/t/northwind/", {**SETTINGS, "currency": "CAD"})
    assert response.status_code == 422
    assert "stays USD" in response.text
    assert _tenant().currency == "USD"


def test_an_admin_creates_a_tenant_and_becomes_its_admin(org, sign_in):
    admin = sign_in(org.admin)
    response = post_form(admin, "/admin/tenants/new", {**SETTINGS, "slug": "emea-resale",
                                                       "name": "EMEA Resale",
                                                       "currency": "eur",
                                                       "timezone": "Europe/Paris",
                                                       "calendar_country": "FR"})
    assert response.status_code == 303
    tenant = _tenant("emea-resale")
    assert (tenant.currency, tenant.calendar_country) == ("EUR", "FR")
    assert admin.get("/admin/t/emea-resale/").status_code == 200
    [created] = _events("tenant.created")
    assert created.data["after"]["slug"] == "emea-resale"
    again = post_form(admin, "/admin/tenants/new", {**SETTINGS, "slug": "emea-resale"})
    assert again.status_code == 422 and "already taken" in again.text
    bad = post_form(admin, "/admin/tenants/new", {**SETTINGS, "slug": "Not A Slug!"})
    assert bad.status_code == 422 and "lower-case letters" in bad.text
    # A tenant "callback" could never start single sign-on: /login/sso/callback is ours.
    reserved = post_form(admin, "/admin/tenants/new", {**SETTINGS, "slug": "callback"})
    assert reserved.status_code == 422 and "reserved" in reserved.text


def test_closures_are_added_listed_used_by_the_calendar_and_removed(org, sign_in):
    admin = sign_in(org.admin)
    monday = date(2027, 3, 1)
    assert calendar_for(_tenant()).is_working_day(monday)
    response = post_form(admin, "/admin/t/northwind/closures",
                         {"first_day": "2027-03-01", "last_day": "2027-03-02",
                          "reason": "Office move"})
    assert response.status_code == 303
    page = admin.get("/admin/t/northwind/closures")
    assert "Office move" in page.text
    tenant = _tenant()
    calendar = calendar_for(tenant)
    assert not calendar.is_working_day(monday)
    assert not calendar.is_working_day(monday + timedelta(days=1))
    assert calendar.is_working_day(monday + timedelta(days=2))
    # An item arriving on the Friday before is due after the closure.
    friday = datetime(2027, 2, 26, 16, 0, tzinfo=calendar.tz)
    assert calendar.add(friday, timedelta(hours=2)).date() == date(2027, 3, 3)
    [added] = _events("tenant.closure_added")
    assert added.data["after"]["reason"] == "Office move"

    closure = db.session.scalars(select(TenantClosure)).one()
    removed = post_form(admin, f"/admin/t/northwind/closures/{closure.id}/remove")
    assert removed.status_code == 303
    assert calendar_for(_tenant()).is_working_day(monday)
    [gone] = _events("tenant.closure_removed")
    assert gone.data["before"]["first_day"] == "2027-03-01"


@pytest.mark.parametrize("data, message", [
    ({"first_day": "", "reason": "x"}, "a date is required"),
    ({"first_day": "2027-13-40", "reason": "x"}, "must be a date like 2026-01-31"),
    ({"first_day": "2027-03-02", "last_day": "2027-03-01", "reason": "x"},
     "must not be before the first day"),
    ({"first_day": "2027-03-02", "reason": ""}, "say why"),
    ({"first_day": "2027-01-01", "last_day": "2028-06-01", "reason": "x"}, "at most a year"),
])
def test_bad_closures_re_render_with_a_message(org, sign_in, data, message):
    admin = sign_in(org.admin)
    response = post_form(admin, "/admin/t/northwind/closures", data)
    assert response.status_code == 422
    assert message in response.text
    assert db.session.scalar(select(func.count()).select_from(TenantClosure)) == 0


@pytest.mark.parametrize("color, message", [
    ("teal", "a colour as #rrggbb"),
    ("#12345", "a colour as #rrggbb"),
    ("#ffff00", "too light to read on white"),
    ("red;}body{display:none", "a colour as #rrggbb"),
])
def test_a_bad_accent_colour_re_renders_with_a_message(org, sign_in, color, message):
    admin = sign_in(org.admin)
    response = post_form(admin, "/admin/t/northwind/branding",
                         {"brand_name": "NW", "brand_color": color})
    assert response.status_code == 422
    assert message in response.text
    assert _tenant().brand_color is None and _tenant().brand_name is None


@pytest.mark.parametrize("filename, data, message", [
    ("huge.png", png(padding=300 * 1024), "larger than the 256 KB allowed"),
    ("logo.png", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
     "SVG is not accepted"),
    ("logo.png", b"MZ\x90\x00 this is really an executable", "a PNG, JPEG, GIF or WebP"),
    ("logo.gif", b"GIF8", "a PNG, JPEG, GIF or WebP"),
])
def test_a_wrong_or_oversized_logo_re_renders_with_a_message(org, sign_in, filename, data,
                                                             message):
    import io

    admin = sign_in(org.admin)
    response = post_form(admin, "/admin/t/northwind/branding",
                         {"brand_name": "", "brand_color": "",
                          "logo": (io.BytesIO(data), filename, "image/png")},
                         content_type="multipart/form-data")
    assert response.status_code == 422
    assert message in response.text
    assert db.session.get(TenantLogo, org.northwind.id) is None


def test_branding_is_saved_served_with_its_sniffed_type_and_shown_to_members(org, sign_in):
    import io

    admin = sign_in(org.admin)
    image = png()
    response = post_form(admin, "/admin/t/northwind/branding",
                         {"brand_name": "Northwind Finance", "brand_color": "#0F766E",
                          "logo": (io.BytesIO(image), "logo.bin", "application/octet-stream")},
                         content_type="multipart/form-data")
    assert response.status_code == 303
    tenant = _tenant()
    assert (tenant.brand_name, tenant.brand_color) == ("Northwind Finance", "#0f766e")
    assert tenant.logo_version
    [event] = _events("tenant.branding_updated")
    assert event.data["before"] == {"brand_name": None, "brand_color": None}
    assert event.data["after"] == {"brand_name": "Northwind Finance", "brand_color": "#0f766e"}
    assert _events("tenant.logo_updated")[0].data["after"]["content_type"] == "image/png"

    # A member working only in northwind sees its brand in the layout (white-label).
    approver = sign_in(org.approver)
    home = approver.get("/queues/mine").text
    assert "Northwind Finance" in home and "--cd-accent: #0f766e" in home
    logo_url = f"/account/logo/northwind?v={tenant.logo_version}"
    assert logo_url in home
    served = approver.get(logo_url)
    assert served.status_code == 200
    assert served.content_type == "image/png" and served.data == image
    assert served.headers["X-Content-Type-Options"] == "nosniff"

    # Someone of another tenant gets nothing, as if there were no logo.
    outsider = sign_in(org.contoso_admin)
    assert outsider.get(logo_url).status_code == 404
    assert "Northwind Finance" not in outsider.get("/queues/mine").text

    removed = post_form(admin, "/admin/t/northwind/branding/logo/remove")
    assert removed.status_code == 303
    assert _tenant().logo_version is None
    assert approver.get(logo_url).status_code == 404
