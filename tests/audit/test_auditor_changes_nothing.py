"""Auditors read everything in their tenants and change nothing anywhere: every POST route of
the app, found in its URL map (so a new route is covered the day it is added), refuses a
signed-in auditor with a valid CSRF token, and the database is exactly as it was."""
import pytest
from sqlalchemy import text
from werkzeug.routing.converters import NumberConverter

from app import create_app
from app.access import access_of
from app.audit.services import ChainReport, raise_alert
from app.extensions import db
from app.unit_of_work import commit
from tests.conftest import csrf_from

# POST routes an auditor may use, and why. Anything else must refuse them.
ALLOWED = {
    "auth.login": "signing in (there is no auditor yet)",
    "auth.logout": "signing out",
    "auth.forgot_password": "asking for a reset link by mail, as anyone may before signing in",
    "auth.switch_tenant": "which tenant to show; kept in the session, not the database",
    "account.end_session": "ending one of one's own sessions, as signing out",
    "account.end_other_sessions": "signing out one's own other sessions",
    "auth.login_code": "the second step of signing in",
    "account.start_second_factor": "one's own second factor, which protects one's sign-in",
    "account.confirm_second_factor": "one's own second factor, which protects one's sign-in",
    "account.disable_second_factor": "one's own second factor, which protects one's sign-in",
    "account.renew_recovery_codes": "one's own recovery codes, which protect one's sign-in",
    "account.passkey_options": "a challenge for one's own passkey, which protects one's sign-in",
    "account.add_passkey": "one's own passkey, which protects one's sign-in",
    "account.remove_passkey": "one's own passkey, which protects one's sign-in",
    "auth.login_code_passkey_options": "a challenge for the second step of signing in",
    "auth.passkey_sign_in_options": "a challenge for signing in with a passkey",
    "auth.passkey_sign_in": "signing in with a passkey (there is no auditor yet)",
    "audit.create_export": "an export is a read, itself audited",
    "queues.save": "a person's own saved filter, not tenant data",
    "queues.delete": "a person's own saved filter, not tenant data",
}

# Routes whose refusal is checked with several actions (on an approval).
VARIANTS = {
    "items.act": ["approve", "reject", "request_info", "claim", "release", "reassign"],
    "queues.bulk": ["approve", "claim", "release", "reassign"],
}

# Known gaps, owned elsewhere: strict, so the day they are fixed this file says so.
KNOWN_GAPS: dict[str, str] = {}
# The JSON API takes bearer tokens, never a session: a signed-in auditor is not even
# authenticated there (401), whatever the route.
TOKEN_ONLY = {"api.create_item", "api.decide", "api.resubmit", "api.add_attachments"}


def _post_routes() -> list:
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True})
    rules = sorted((r for r in app.url_map.iter_rules() if "POST" in r.methods),
                   key=lambda r: r.endpoint)
    cases = []
    for rule in rules:
        if rule.endpoint in ALLOWED:
            continue
        for variant in VARIANTS.get(rule.endpoint, [None]):
            for where in ("own tenant", "other tenant"):
                name = f"{rule.endpoint}{'-' + variant if variant else ''}-{where}"
                marks = ([pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[rule.endpoint])]
                         if rule.endpoint in KNOWN_GAPS else [])
                cases.append(pytest.param(rule.rule, rule.endpoint, variant, where, id=name,
                                          marks=marks))
    return cases


def _snapshot() -> dict:
    """Every row of every table, read outside the test's session."""
    with db.engine.connect() as conn:
        return {t.name: conn.execute(text(f"SELECT * FROM {t.name} ORDER BY 1")).all()
                for t in db.metadata.sorted_tables}


@pytest.fixture
def alert(world):
    alert = raise_alert(ChainReport(world.northwind.id, 1, False, "event #2 was edited", 2))
    foreign = raise_alert(ChainReport(world.contoso.id, 1, False, "event #2 was edited", 2))
    commit()
    return {"own tenant": alert.id, "other tenant": foreign.id}


def _arguments(rule, world, alert, where) -> tuple[dict, bool]:
    """Values for the rule's URL arguments; True when every argument was a known one."""
    own = where == "own tenant"
    known = {
        "item_id": (world.item if own else world.foreign_item).id,
        "alert_id": alert[where],
        "name": "unassigned",
    }
    values, all_known = {}, True
    for argument in rule.arguments:
        if argument in known:
            values[argument] = known[argument]
        else:
            all_known = False
            converter = rule._converters.get(argument)
            values[argument] = 999999 if isinstance(converter, NumberConverter) else "unknown"
    return values, all_known


@pytest.mark.parametrize(("path", "endpoint", "variant", "where"), _post_routes())
def test_an_auditor_is_refused_and_nothing_changes(world, alert, sign_in, path, endpoint,
                                                   variant, where):
    client = sign_in(world.auditor)
    token = csrf_from(client.get("/audit/").text)
    rule = next(r for r in client.application.url_map.iter_rules() if r.endpoint == endpoint)
    values, all_known = _arguments(rule, world, alert, where)
    item = world.item if where == "own tenant" else world.foreign_item
    form = {"csrf_token": token, "action": variant or "approve", "comment": "auditor was here",
            "version": item.version, "resolution_code": "fixed", "adjustment_amount": "1.00",
            "assignee_id": world.auditor.id, "selected_ids": item.id, "queue": "unassigned",
            "name": "auditor view", "filters": "", "tenant": item.tenant_id,
            "tenant_id": item.tenant_id, "format": "jsonl"}
    before = _snapshot()

    for headers in ({"HX-Request": "true"}, {}):
        response = client.post(rule.build(values)[1], data=form, headers=headers)
        status = response.status_code
        if endpoint in TOKEN_ONLY:
            assert status == 401, f"{endpoint} answered {status} to a session, not 401"
        elif status == 303 and not headers:
            # A plain form post may answer with the page again and the refusal on it.
            shown = client.get(response.headers["Location"])
            assert "flash-error" in shown.text, f"{endpoint} redirected without a refusal"
        elif not all_known:
            assert 400 <= status < 500 and status != 401, (
                f"{endpoint} answered {status} to an auditor")
        elif where == "own tenant":
            assert status == 403, f"{endpoint} answered {status} to an auditor, not 403"
        elif not access_of(client.application, endpoint, "POST").admits({"auditor"}):
            # The route's declared access refuses auditors before anything named in the
            # request is looked at: the answer says nothing about the foreign data.
            assert status == 403, f"{endpoint} answered {status} to an auditor, not 403"
        else:
            assert status == 404, f"{endpoint} answered {status} for another tenant's data"
        assert _snapshot() == before, f"{endpoint} changed the database for an auditor"


def test_every_allowed_route_still_exists():
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True})
    endpoints = {r.endpoint for r in app.url_map.iter_rules() if "POST" in r.methods}
    assert set(ALLOWED) <= endpoints
