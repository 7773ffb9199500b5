"""An admin of contoso can neither see nor change anything of northwind through the admin area:
every admin page and action (walked from the URL map, so a new route is covered the day it is
added) answers 404, the same page a tenant that does not exist gets, and the database is
exactly as it was."""
from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import text

from app import create_app
from app.admin import access, deactivation, delegation, people as people_service, tenants
from app.admin.models import PendingMembershipChange, TenantClosure
from app.errors import NotFound
from app.extensions import db
from app.models import ApproverGroup
from app.unit_of_work import commit
from tests.conftest import actor, csrf_from


def _admin_rules() -> list:
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True})
    rules = [r for r in app.url_map.iter_rules()
             if r.endpoint.startswith("admin.") and "slug" in r.arguments]
    return [pytest.param(r.rule, r.endpoint, sorted(r.methods & {"GET", "POST"}),
                         id=r.endpoint) for r in sorted(rules, key=lambda r: r.endpoint)]


@pytest.fixture
def northwind_things(org):
    closure = TenantClosure(tenant_id=org.northwind.id, first_day=date(2027, 1, 4),
                            last_day=date(2027, 1, 4), reason="Inventory")
    db.session.add(closure)
    change = PendingMembershipChange(tenant_id=org.northwind.id, user_id=org.admin.id,
                                     requested_by_id=org.admin.id,
                                     before={"roles": ["admin"], "approval_limit": "0.00"},
                                     after={"roles": ["admin", "approver"],
                                            "approval_limit": "10.00"})
    db.session.add(change)
    group = ApproverGroup(tenant_id=org.northwind.id, name="Treasury")
    db.session.add(group)
    commit()
    return {"slug": "northwind", "user_id": org.approver.id, "closure_id": closure.id,
            "change_id": change.id, "group_id": group.id}


def _snapshot() -> dict:
    with db.engine.connect() as conn:
        return {t.name: conn.execute(text(f"SELECT * FROM {t.name} ORDER BY 1")).all()
                for t in db.metadata.sorted_tables}


def _normalised(page: str) -> str:
    return re.sub(r'(name="csrf_token" value=|"X-CSRFToken": )"[^"]+"', r'\1"TOKEN"', page)


FORM = {"name": "Hijacked", "currency": "USD", "timezone": "UTC", "calendar_country": "US",
        "working_days": ["1"], "work_start": "09:00", "work_end": "17:00",
        "brand_name": "Hijacked", "brand_color": "#000000", "first_day": "2027-01-05",
        "reason": "x", "roles": ["admin"], "approval_limit": "1000000",
        "email": "spy@example.com", "delegate_id": "1", "last_day": "2027-01-06"}


@pytest.mark.parametrize(("path", "endpoint", "methods"), _admin_rules())
def test_a_contoso_admin_gets_404_on_every_northwind_admin_route(
        org, sign_in, northwind_things, path, endpoint, methods):
    carl = sign_in(org.contoso_admin)
    token = csrf_from(carl.get("/admin/").text)
    rule = next(r for r in carl.application.url_map.iter_rules() if r.endpoint == endpoint)
    values = {name: northwind_things[name] for name in rule.arguments}
    url = rule.build(values)[1]
    missing_url = rule.build({**values, "slug": "no-such-tenant"})[1]
    before = _snapshot()
    for method in methods:
        for headers in ({}, {"HX-Request": "true"}):
            call = carl.get if method == "GET" else carl.post
            kwargs = {} if method == "GET" else {"data": {"csrf_token": token, **FORM}}
            response = call(url, headers=headers, **kwargs)
            missing = call(missing_url, headers=headers, **kwargs)
            assert response.status_code == 404, f"{method} {url} answered {response.status_code}"
            assert (_normalised(response.text).replace(url, "URL")
                    == _normalised(missing.text).replace(missing_url, "URL"))
            assert "Northwind" not in response.text
    assert _snapshot() == before


def test_the_admin_area_of_a_contoso_admin_shows_nothing_of_northwind(org, sign_in):
    carl = sign_in(org.contoso_admin)
    index = carl.get("/admin/").text
    assert "Contoso" in index and "Northwind" not in index and "northwind" not in index
    people = carl.get("/admin/t/contoso/people").text
    assert "Rita Requester" in people  # a member of both: her contoso membership only
    assert "Ann Approver" not in people
    # A northwind-only person does not exist in contoso's admin area.
    assert carl.get(f"/admin/t/contoso/people/{org.approver.id}").status_code == 404


def test_the_service_layer_refuses_a_contoso_admin_on_northwind(org):
    carl = actor(org.contoso_admin)
    calls = [
        lambda: tenants.update_tenant(carl, org.northwind, name="x"),
        lambda: tenants.update_branding(carl, org.northwind, brand_name="x", brand_color=None),
        lambda: tenants.add_closure(carl, org.northwind, first_day=None, last_day=None,
                                     reason="x"),
        lambda: people_service.invite_user(carl, org.northwind, email="a@b.co", name="", roles=[],
                                     approval_limit="0"),
        lambda: people_service.change_membership(carl, org.northwind, user=org.approver,
                                           roles=["admin"], approval_limit="1"),
        lambda: deactivation.deactivate_user(carl, org.northwind, org.approver.id),
        lambda: people_service.request_password_reset(carl, org.northwind, org.approver.id),
        lambda: delegation.set_delegation(carl, org.northwind.id, org.approver.id,
                                        delegate_id=org.backup.id, first_day=None,
                                        last_day=None),
        lambda: access.members_of(carl, org.northwind),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()
        db.session.rollback()
