"""API fixtures: tokens issued through the write path, a bearer client, and the app served on
a real port (werkzeug's threaded server, as the browser tests do) for concurrent clients and
Schemathesis."""
from __future__ import annotations

import pytest

from app.api.tokens import issue_token
from app.unit_of_work import commit
from tests.conftest import SYSTEM

ALL_SCOPES = ("items:read", "items:write", "decisions:write")


@pytest.fixture
def make_token(app):
    def make(tenant, scopes=ALL_SCOPES, name="billing"):
        _row, secret = issue_token(SYSTEM, tenant.id, name, scopes)
        commit()
        return secret

    return make


class BearerClient:
    """The Flask test client with a token on every request."""

    def __init__(self, client, token):
        self.client, self.token = client, token

    def _headers(self, extra):
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path, headers=None, **kw):
        return self.client.get(path, headers=self._headers(headers), **kw)

    def post(self, path, json=None, headers=None, **kw):
        return self.client.post(path, json=json, headers=self._headers(headers), **kw)


@pytest.fixture
def api(client, make_tenant, make_token):
    tenant = make_tenant()
    bearer = BearerClient(client, make_token(tenant))
    bearer.tenant = tenant
    return bearer


@pytest.fixture
def live_server(app, live_server):
    """The shared live server, answering a server error as in production (a 500, logged)."""
    app.config["PROPAGATE_EXCEPTIONS"] = False
    return live_server


def item_payload(**overrides) -> dict:
    body = {"kind": "billing_exception", "subtype": "payment_failed", "title": "Card declined",
            "external_ref": "INV-1001", "source_system": "billing", "counterparty": "Acme Labs",
            "amount": "1250.00", "details": {"invoice_number": "INV-1001"}}
    body.update(overrides)
    return body
