"""The API-token admin pages: an admin of the tenant creates a token (the secret shown once,
only its hash kept), sees its last use and revokes it; nobody else can."""
from __future__ import annotations

import re

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.models import ApiToken
from tests.conftest import csrf_from


def _create(client, tenant, name="Billing export", scopes=("items:read", "items:write")):
    page = client.get(f"/admin/integrations/tokens?tenant={tenant.id}")
    return client.post(f"/admin/integrations/tokens?tenant={tenant.id}",
                       data={"name": name, "scopes": list(scopes),
                             "csrf_token": csrf_from(page.text)})


def test_an_admin_creates_a_token_shown_once_that_then_works(client, auth, make_tenant,
                                                              make_user):
    tenant = make_tenant()
    make_user("admin@x.test", [tenant], roles=("admin",))
    auth.login("admin@x.test")
    response = _create(client, tenant)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    secret = re.search(r'<code id="new-token">([^<]+)</code>', response.text).group(1)
    row = db.session.scalars(select(ApiToken)).one()
    assert row.scopes == ["items:read", "items:write"] and row.created_by_id is not None
    assert secret not in client.get("/admin/integrations/tokens").text  # never shown again
    used = client.get("/api/v1/items", headers={"Authorization": f"Bearer {secret}"})
    assert used.status_code == 200
    listing = client.get("/admin/integrations/tokens").text
    assert "never" not in listing.split('id="tokens"')[1].split("</table>")[0]


def test_a_token_needs_a_name_and_a_scope(client, auth, make_tenant, make_user):
    tenant = make_tenant()
    make_user("admin@x.test", [tenant], roles=("admin",))
    auth.login("admin@x.test")
    response = _create(client, tenant, name="", scopes=())
    assert response.status_code == 422
    assert "field-error" in response.text
    assert db.session.scalars(select(ApiToken)).all() == []


def test_revoking_stops_the_token_and_is_audited(client, auth, make_tenant, make_user,
                                                 make_token):
    tenant = make_tenant()
    make_user("admin@x.test", [tenant], roles=("admin",))
    secret = make_token(tenant)
    row = db.session.scalars(select(ApiToken)).one()
    auth.login("admin@x.test")
    page = client.get("/admin/integrations/tokens")
    response = client.post(f"/admin/integrations/tokens/{row.id}/revoke?tenant={tenant.id}",
                           data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 303
    assert "revoked" in client.get("/admin/integrations/tokens").text
    assert client.get("/api/v1/items", headers={"Authorization": f"Bearer {secret}"}
                      ).status_code == 401
    assert db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.action == "api_token.revoked")).all() == ["api_token.revoked"]


def test_only_admins_of_the_tenant_manage_its_tokens(client, auth, make_tenant, make_user,
                                                     make_token):
    mine, other = make_tenant(), make_tenant("contoso", "EUR", "Europe/Berlin", "DE")
    make_token(other)
    theirs = db.session.scalars(select(ApiToken)).one()
    make_user("admin@x.test", [mine], roles=("admin",))
    make_user("approver@x.test", [mine, other], roles=("approver",))
    auth.login("approver@x.test")
    assert client.get("/admin/integrations/tokens").status_code == 403
    auth.login("admin@x.test")
    # Not a member there: no hint that the tenant exists.
    assert client.get(f"/admin/integrations/tokens?tenant={other.id}").status_code == 404
    page = client.get("/admin/integrations/tokens")
    revoke = client.post(f"/admin/integrations/tokens/{theirs.id}/revoke?tenant={mine.id}",
                         data={"csrf_token": csrf_from(page.text)})
    assert revoke.status_code == 404
    no_csrf = client.post(f"/admin/integrations/tokens?tenant={mine.id}",
                          data={"name": "x", "scopes": ["items:read"]})
    assert no_csrf.status_code == 400
    db.session.expire_all()
    assert db.session.get(ApiToken, theirs.id).revoked_at is None
