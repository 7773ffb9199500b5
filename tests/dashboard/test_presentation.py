"""How the dashboard says its figures: past-due work beside attainment, plain words for
turnaround, money with its currency and separators, drill-downs that cover what a figure
counts, and no printed value on a bar too small to hold it."""
from __future__ import annotations

import html
import re

from sqlalchemy import select

from app.actors import Actor
from app.dashboard.charts import render_chart
from app.dashboard.forecast import forecast_for
from app.dashboard.services import dashboard_for, parse_scope
from app.dashboard.tables import page_table, table
from app.extensions import db
from app.models import User


def _dashboard_of(email):
    user = db.session.scalars(select(User).where(User.email == email)).one()
    scope = parse_scope(Actor.for_user(user), {"days": "30"})
    dash = dashboard_for(scope)
    dash.forecast = forecast_for(scope, dash)
    return dash


def test_past_due_now_sits_beside_attainment_and_opens_those_items(seeded, client, auth):
    auth.login("manager@cleardesk.demo", "demo-password")
    page = html.unescape(client.get("/dashboard?days=30").text)
    cards = re.findall(r"<h2>([^<]+)</h2>", page.split('aria-label="Key figures"')[1])
    assert cards[:2] == ["SLA attainment", "Past due now"]
    dash = _dashboard_of("manager@cleardesk.demo")
    past_due = sum(f.overdue for f in dash.forecast)
    open_now = sum(f.open for f in dash.forecast)
    assert past_due > 0
    card = page.split('id="past-due"')[1].split("</article>")[0]
    assert f"{past_due:,} of {open_now:,} open items" in card
    assert "/queues/team?sla=breached" in card


def test_turnaround_is_said_in_plain_words(seeded, client, auth):
    auth.login("manager@cleardesk.demo", "demo-password")
    page = html.unescape(client.get("/dashboard?days=30").text)
    assert "bucket" not in page and "p90" not in page and "(≤)" not in page
    dash = _dashboard_of("manager@cleardesk.demo")
    approvals = dash.turnaround["kind"][0]
    assert (f"half are decided within {approvals.median_within} business hours; "
            f"9 in 10 within {approvals.p90_within}.") in page
    header, _rows = table(dash, "turnaround-kind")
    assert "Half decided within (business hours)" in header


def test_money_in_tables_has_its_currency_and_separators_and_the_csv_stays_plain(seeded):
    dash = _dashboard_of("manager@cleardesk.demo")
    header, shown = page_table(dash, "leakage")
    _header, plain = table(dash, "leakage")
    for row, raw in zip(shown, plain):
        for column in ("Amount at risk", "Dispute delta", "Leakage"):
            index = header.index(column)
            assert re.fullmatch(rf"{raw[1]} \d{{1,3}}(,\d{{3}})*\.\d\d", row[index]), row[index]
            assert re.fullmatch(r"\d+\.\d\d", raw[index])  # the CSV: a plain number


def test_the_leakage_drill_downs_cover_exceptions_and_disputes(seeded, client, auth):
    auth.login("manager@cleardesk.demo", "demo-password")
    page = html.unescape(client.get("/dashboard?days=30").text)
    card = page.split("<h2>Leakage now</h2>")[1].split("</article>")[0]
    kinds = set(re.findall(r"kind=([a-z_]+)", card))
    assert kinds == {"billing_exception", "settlement_dispute"}
    section = page.split('id="leakage-auto"')[1]
    leakage_table = section.split("<table")[1].split("</table>")[0]
    assert set(re.findall(r"kind=([a-z_]+)", leakage_table)) == kinds


def printed(svg: str) -> list[str]:
    return re.findall(r'class="value"[^>]*>([^<]+)</text>', svg)


def test_a_bar_too_small_for_its_value_shows_none_and_a_big_one_keeps_it():
    svg = render_chart({"kind": "StackedBar", "title": "Met and breached", "labels": ["A", "B"],
                        "series": [("Met", [(400, None), (2, None)]),
                                   ("Breached", [(60, None), (1, None)])]})
    assert printed(svg) == ["400", "60"]
    svg = render_chart({"kind": "HorizontalBar", "title": "By type", "labels": ["A", "B"],
                        "series": [("Arrived", [(5000, None), (3, None)])]})
    assert printed(svg) == ["5000"]
