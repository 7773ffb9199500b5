"""Every GET page, for every role and for a member of another tenant, fed generated query
strings (the names the pages read and others, with values that are nonsense, huge, not ASCII
or out of range) and path ids that exist, do not, or go past 64 bits: never a server error.

Bounded and deterministic (derandomized), so it runs in `make test`; FUZZ_EXAMPLES raises the
number of requests per page and role (e.g. FUZZ_EXAMPLES=200 for a long run)."""
from __future__ import annotations

import base64
import json
import os
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from werkzeug.routing.converters import NumberConverter

from app.dashboard.tables import TABLES
from app.queues.queries import QUEUES
from app.unit_of_work import commit

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3"))  # per page and role
ROLES = ("requester", "approver", "analyst", "manager", "admin", "auditor")
HUGE = [2**31, 2**63 - 1, 2**63, 2**64, 10**30, 10**100]
# Names the pages read from the query string (and a few they do not).
PARAMETERS = (
    "kind", "subtype", "tenant", "region", "partner_type", "product_line", "min_amount",
    "max_amount", "age", "sla", "assignee", "team_queue", "q", "sort", "status", "state",
    "created_from", "created_to", "resolved_from", "resolved_to", "aged", "decided_by",
    "after", "before", "current", "queue", "item", "actor", "action", "actor_type",
    "date_from", "date_to", "from", "to", "days", "next", "cursor", "limit", "name",
    "page", "id", "format",
)


def _cursor(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


CRAFTED = [
    "²", "١٢", "１２", "-1", "0", "00", "1_000", " 7 ", "+5", "1e999999999", "-1E+999999",
    "NaN",
    "Infinity", "-Infinity", "1,000.005", "0001-01-01", "9999-12-31", "2026-02-30",
    "2026-01-31T10:00:00", "20260131", "2-", "-3", "3-2", "all", "me", "none", "policy",
    "\x00", "\ud800", "%", "_", "\\", "'; DROP TABLE users; --", "/%0d%0aSet-Cookie:x=1",
    "//evil.test", "\r\n", "a" * 5000, *[str(n) for n in HUGE], f"{10**30}-",
    _cursor("sla", "2026-01-31T10:00:00", 1), _cursor("sla", "2026-01-31T10:00:00+00:00", 10**30),
    _cursor("amount", "Infinity", 1), _cursor("amount", "1e999999999", 1),
    _cursor("age", "0001-01-01T00:00:00+14:00", 1), _cursor("events", 10**30),
    _cursor("events", -1), "AAAA", "====",
]
values = st.one_of(st.sampled_from(CRAFTED), st.text(max_size=40),
                   st.integers(min_value=-(10**40), max_value=10**40).map(str),
                   st.dates().map(str), st.decimals(allow_nan=True, allow_infinity=True).map(str))
PAGING = ("after", "before", "cursor", "limit")
queries = st.lists(st.tuples(st.one_of(st.sampled_from(PARAMETERS), st.text(max_size=10)),
                             values), max_size=6)


@pytest.fixture
def world(make_tenant, make_user, make_item):
    nw = make_tenant("northwind")
    co = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    emails = {}
    for role in ROLES:
        emails[role] = f"{role}@x.test"
        make_user(emails[role], [nw, co], roles=(role,), limit="100000")
    emails["everyone"] = "everyone@x.test"
    make_user(emails["everyone"], [nw, co], roles=ROLES, limit="1000000")
    emails["outsider"] = "outsider@x.test"
    make_user(emails["outsider"], [co], roles=("approver", "manager", "admin", "auditor"))
    requester = make_user("someone@x.test", [nw, co], roles=("requester",))
    items = [make_item(nw, requester=requester, amount="120.00"),
             make_item(nw, kind="billing_exception", amount="80.00"),
             make_item(co, kind="settlement_dispute", amount="300.00")]
    commit()
    return {"emails": emails, "ids": [i.id for i in items] + [nw.id, co.id],
            "slugs": ["northwind", "contoso", "unknown", "NORTHWIND", "²"]}


def _get_rules(app):
    return sorted((rule for rule in app.url_map.iter_rules()
                   if "GET" in rule.methods and rule.endpoint != "static"),
                  key=lambda rule: rule.rule)


def _known(rule, name, world) -> list:
    """Values of a path argument that reach the page (and some that do not)."""
    converter = rule._converters[name]
    if isinstance(converter, NumberConverter):
        return world["ids"] + [1, 0, *HUGE]
    if name == "name" and "dashboard" in rule.rule:
        return sorted(TABLES) + ["unknown"]
    if name == "name":
        return sorted(QUEUES) + ["@QA sample", "@²", "unknown"]
    if name == "slug":
        return world["slugs"]
    return ["x", "a" * 300, "²"]


def _path_values(rule, world):
    """A strategy of the values of the rule's path arguments."""
    return st.fixed_dictionaries({
        name: st.one_of(st.sampled_from(_known(rule, name, world)),
                        st.integers(min_value=0, max_value=10**6)
                        if isinstance(rule._converters[name], NumberConverter)
                        else st.text(max_size=20))
        for name in rule.arguments})


ARGUMENT = re.compile(r"<(?:[^<>]+:)?(\w+)>")


def _path(rule, path_values) -> str:
    def value(match):
        text = str(path_values[match.group(1)])
        return quote("".join(c for c in text if c not in "/\x00") or "x", safe="",
                     errors="surrogatepass")

    return ARGUMENT.sub(value, rule.rule)


def _query(pairs) -> str:
    """Percent-encoded as UTF-8, lone surrogates included (invalid UTF-8 on the wire)."""
    return "&".join(f"{quote(k, safe='', errors='surrogatepass')}="
                    f"{quote(v, safe='', errors='surrogatepass')}" for k, v in pairs)


def _fuzz(client, rule, world) -> None:
    requests = st.tuples(_path_values(rule, world), queries,
                         st.sampled_from([{}, {"HX-Request": "true"},
                                          {"HX-Request": "true", "HX-Target": "queue-results"}]))

    @given(request=requests)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(request):
        path_values, query, headers = request
        path = _path(rule, path_values)
        response = client.get(f"{path}?{_query(query)}", headers=headers)
        assert response.status_code < 500, (path, query, response.status_code)

    run()


@pytest.mark.parametrize("who", [*ROLES, "outsider"])
def test_no_get_page_answers_a_server_error_to_any_query(app, client, auth, world, who):
    app.config["PROPAGATE_EXCEPTIONS"] = True  # a server error fails with its traceback
    auth.login(world["emails"][who])
    for rule in _get_rules(app):
        _fuzz(client, rule, world)


def test_every_crafted_value_in_every_parameter_of_every_page_is_no_server_error(
        app, client, auth, world):
    """The sweep behind the random search: each crafted value once in each parameter of each
    page (rotated, so one request carries many), as someone holding every role."""
    app.config["PROPAGATE_EXCEPTIONS"] = True
    auth.login(world["emails"]["everyone"])
    names = list(PARAMETERS)
    failures = []
    for rule in _get_rules(app):
        for n in range(len(CRAFTED)):
            path_values = {name: known[n % len(known)] for name in rule.arguments
                           for known in [_known(rule, name, world)]}
            # Every other request leaves out the paging parameters, which may refuse the
            # request before the filters are used.
            query = [(name, CRAFTED[(n + j) % len(CRAFTED)]) for j, name in enumerate(names)
                     if n % 2 == 0 or name not in PAGING]
            path = _path(rule, path_values)
            try:
                status = client.get(f"{path}?{_query(query)}").status_code
            except Exception as error:  # noqa: BLE001 - collected and reported below
                status = f"{type(error).__name__}: {error}"[:300]
            if not isinstance(status, int) or status >= 500:
                failures.append((path, n, status))
    assert not failures, "\n".join(f"{path} (value {n}): {status}" for path, n, status
                                    in failures)
