"""The dashboard page: managers only, a manager of one tenant sees only that tenant, bad
choices re-render with a message, every table exports CSV, and drill-downs list the items."""
from __future__ import annotations

import csv
import html
import io
import re

import pytest
from sqlalchemy import select

from app.actors import Actor
from app.dashboard.services import dashboard_for, parse_scope
from app.dashboard.tables import TABLES, table
from app.extensions import db
from app.models import Tenant
from tests.dashboard.recompute import all_items, day_of, is_final


def _tenant(slug) -> Tenant:
    return db.session.scalars(select(Tenant).where(Tenant.slug == slug)).one()


@pytest.fixture
def contoso_manager(seeded, make_user):
    return make_user("morgan.contoso@x.test", [_tenant("contoso")], roles=("manager",),
                     name="Contoso Manager")


def test_a_manager_of_one_tenant_sees_only_that_tenants_figures(contoso_manager, client, auth):
    contoso, northwind = _tenant("contoso"), _tenant("northwind")
    auth.login(contoso_manager.email)
    page = client.get("/dashboard?tenant=all&days=90")
    assert page.status_code == 200
    assert "Contoso" in page.text
    assert "Northwind" not in page.text and "Fabrikam" not in page.text
    # The figures on the page are contoso's: the total decided in the range matches.
    items = [i for i in all_items([contoso.id]) if is_final(i)]
    scope = parse_scope(Actor.for_user(contoso_manager), {"days": "90"})
    decided = sum(1 for i in items if scope.start <= day_of(i.resolved_at, contoso) <= scope.end)
    assert f"of {decided} decided" in page.text
    everyone = [i for i in all_items() if is_final(i)]
    assert len(everyone) > len(items)
    # Asking for another tenant shows a message and still only contoso.
    other = client.get(f"/dashboard?tenant={northwind.id}&days=90")
    assert other.status_code == 200
    assert "not one of the tenants you manage" in other.text
    assert "Northwind" not in other.text
    # So does the CSV export.
    export = client.get(f"/dashboard/export/leakage.csv?tenant={northwind.id}")
    rows = list(csv.reader(io.StringIO(export.text)))
    assert [r[0] for r in rows[1:]] == ["Contoso GmbH"]


def test_people_who_manage_nothing_are_refused(seeded, client, auth):
    auth.login("approver@cleardesk.demo", "demo-password")
    assert client.get("/dashboard").status_code == 403
    assert client.get("/dashboard/export/daily.csv").status_code == 403


def test_the_dashboard_needs_a_sign_in(seeded, client):
    response = client.get("/dashboard")
    assert response.status_code in (302, 303) and "/login" in response.headers["Location"]


@pytest.mark.parametrize("query, message", [
    ("from=yesterday", "must be a date like"),
    ("from=2026-05-01&to=2026-04-01", "must not be before the start"),
    ("days=12", "choose 7, 30 or 90 days"),
    ("from=2020-01-01&to=2026-01-01", "at most 366 days"),
    ("tenant=abc", "not one of the tenants you manage"),
])
def test_bad_choices_re_render_with_a_message(seeded, client, auth, query, message):
    auth.login("manager@cleardesk.demo", "demo-password")
    response = client.get(f"/dashboard?{query}")
    assert response.status_code == 200
    assert message in response.text
    assert "<svg" in response.text  # still a dashboard, on the default range


def test_every_table_exports_the_same_rows_as_csv(seeded, client, auth):
    auth.login("manager@cleardesk.demo", "demo-password")
    for name in TABLES:
        response = client.get(f"/dashboard/export/{name}.csv?tenant=all&days=30")
        assert response.status_code == 200, name
        assert response.mimetype == "text/csv"
        assert f"cleardesk-{name}-all-" in response.headers["Content-Disposition"]
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows[0], name
    assert client.get("/dashboard/export/nothing.csv").status_code == 404


def test_csv_rows_are_the_tables_rows(seeded, client, auth):
    from app.models import User

    auth.login("manager@cleardesk.demo", "demo-password")
    manager = db.session.scalars(select(User).where(User.email == "manager@cleardesk.demo")).one()
    dash = dashboard_for(parse_scope(Actor.for_user(manager), {"tenant": "all", "days": "90"}))
    for name in ("attainment", "turnaround-approver", "ageing", "exceptions", "workload"):
        header, rows = table(dash, name)
        response = client.get(f"/dashboard/export/{name}.csv?tenant=all&days=90")
        assert list(csv.reader(io.StringIO(response.text))) == [
            header, *[[str(v) for v in row] for row in rows]]


def test_a_drill_down_lists_exactly_the_items_behind_the_figure(seeded, client, auth):
    auth.login("manager@cleardesk.demo", "demo-password")
    northwind = _tenant("northwind")
    page = client.get(f"/dashboard?tenant={northwind.id}&days=7")
    links = [html.unescape(u) for u in re.findall(r'href="(/queues/team\?[^"]*)"', page.text)]
    breached = next(u for u in links if "sla=breached" in u and "kind=" not in u
                    and "resolved_from" in u)
    queue = client.get(breached)
    assert queue.status_code == 200
    shown = {int(i) for i in re.findall(r'id="row-(\d+)"', queue.text)}
    scope_start = re.search(r"resolved_from=([\d-]+)", breached).group(1)
    expected = {i.id for i in all_items([northwind.id]) if is_final(i)
                and i.sla_state == "breached"
                and day_of(i.resolved_at, northwind).isoformat() >= scope_start}
    assert expected, "the demo week has breaches"
    assert shown == expected if len(expected) <= 50 else shown <= expected
    # Every drill-down link opens a queue page without any filter ignored.
    for url in set(links):
        response = client.get(url)
        assert response.status_code == 200, url
        assert "filters were ignored" not in response.text, url


def test_a_table_opened_on_the_dashboard_is_fetched_as_a_fragment_or_a_page(seeded, client,
                                                                            auth):
    auth.login("manager@cleardesk.demo", "demo-password")
    page = client.get("/dashboard?tenant=all&days=30")
    assert 'hx-get="/dashboard/tables/turnaround-approver?' in page.text
    fragment = client.get("/dashboard/tables/turnaround-approver?tenant=all&days=30",
                          headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and "Avery Approver" in fragment.text
    assert "/queues/team?" in fragment.text  # each row opens its items
    whole = client.get("/dashboard/tables/turnaround-approver?tenant=all&days=30")
    assert "<html" in whole.text and "Turnaround by approver" in whole.text
    assert client.get("/dashboard/tables/nothing").status_code == 404
