"""The policy admin pages: admins of the tenant only, draft from the version in force, live
validation, diff, simulation, submit, four-eyes activation and the kill switch; each step
audited."""
import re

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.policy.models import PolicyKillSwitch, PolicyVersion
from tests.conftest import csrf_from

AUTO = ("Small deals", "amount <= 1000", "auto_approve", "")


def _post(client, auth, path, data, page="/admin/policy/"):
    token = auth.csrf(page)
    return client.post(path, data={"csrf_token": token, **data})


def _actions():
    return [e.action for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.action.startswith("policy.")).order_by(AuditEvent.id))]


@pytest.mark.parametrize("roles", [("approver",), ("auditor",), ("manager",)])
def test_only_admins_of_the_tenant_see_the_policy_pages(client, auth, admins, make_user, roles):
    tenant, _author, _checker = admins
    make_user("someone@example.com", [tenant], roles=roles)
    auth.login("someone@example.com")
    assert client.get("/admin/policy/").status_code == 403
    assert client.get(f"/admin/policy/?tenant={tenant.id}").status_code == 403


def test_an_admin_of_another_tenant_gets_not_found(client, auth, admins, make_tenant, make_user):
    tenant, _author, _checker = admins
    other = make_tenant("contoso", "EUR", "Europe/Berlin", "DE")
    make_user("other@example.com", [other], roles=("admin",))
    auth.login("other@example.com")
    assert client.get(f"/admin/policy/?tenant={tenant.id}").status_code == 404
    response = _post(client, auth, f"/admin/policy/{tenant.id}/drafts", {})
    assert response.status_code == 404


def test_the_draft_to_activation_walk_through_with_four_eyes(client, auth, admins, make_policy,
                                                           make_item):
    tenant, author, checker = admins
    active = make_policy(tenant, author, checker, [AUTO])
    auth.login(author.email)
    page = client.get("/admin/policy/")
    assert page.status_code == 200 and "version 1" in page.text and "amount &lt;= 1000" in page.text
    created = _post(client, auth, f"/admin/policy/{tenant.id}/drafts", {})
    assert created.status_code == 303
    draft = db.session.scalars(select(PolicyVersion).where(PolicyVersion.version == 2)).one()
    assert draft.based_on_id == active.id and [r.condition for r in draft.rules] == [
        "amount <= 1000"]
    version_url = f"/admin/policy/{tenant.id}/versions/{draft.id}"

    # Live validation names the problem as it is typed.
    checked = _post(client, auth, f"/admin/policy/{tenant.id}/check",
                    {"condition": "amont < 5"}, version_url)
    assert "Unknown field “amont”. Did you mean “amount”?" in checked.text
    good = _post(client, auth, f"/admin/policy/{tenant.id}/check",
                 {"condition": 'region == "NA"'}, version_url)
    assert "✓ Valid" in good.text and "region" in good.text

    # A bad rule re-renders with its message and changes nothing.
    bad = _post(client, auth, f"{version_url}/rules",
                {"name": "Broken", "condition": 'region < 5', "outcome": "auto_approve"},
                version_url)
    assert bad.status_code == 422 and "Type mismatch in “region &lt; 5”" in bad.text
    db.session.expire_all()
    assert len(db.session.get(PolicyVersion, draft.id).rules) == 1
    added = _post(client, auth, f"{version_url}/rules",
                  {"name": "EMEA refunds", "condition": 'region == "EMEA" and amount < 200',
                   "outcome": "steps", "steps": "approver >= 100\nmanager >= amount"},
                  version_url)
    assert added.status_code == 303
    diff = client.get(version_url)
    assert "diff-add" in diff.text and "EMEA refunds" in diff.text

    make_item(tenant, amount="150.00")
    simulated = client.get(f"{version_url}/simulation?days=30", headers={"HX-Request": "true"})
    assert simulated.status_code == 200 and "Would auto-approve" in simulated.text

    assert _post(client, auth, f"{version_url}/submit", {}, version_url).status_code == 303
    refused = _post(client, auth, f"{version_url}/activate", {"effective_from": ""}, version_url)
    assert refused.status_code == 403 and "another admin must activate it" in refused.text
    db.session.expire_all()
    assert db.session.get(PolicyVersion, draft.id).state == "pending"

    auth.login(checker.email)
    done = _post(client, auth, f"{version_url}/activate", {"effective_from": ""}, version_url)
    assert done.status_code == 303
    db.session.expire_all()
    assert db.session.get(PolicyVersion, draft.id).state == "active"
    assert db.session.get(PolicyVersion, active.id).state == "retired"
    # Every step audited, the refused activation not at all.
    assert _actions()[-4:] == ["policy.draft_created", "policy.rule_saved", "policy.submitted",
                               "policy.activated"]
    activated = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "policy.activated").order_by(AuditEvent.id.desc())).first()
    assert activated.actor_id == checker.id and activated.data["version"] == 2
    assert activated.data["author_id"] == author.id and activated.data["retires"] == [1]


def test_only_the_author_edits_a_draft_so_the_activator_never_shaped_it(admins, make_policy):
    from app.errors import PermissionDenied
    from app.policy import services
    from tests.conftest import actor

    tenant, author, checker = admins
    make_policy(tenant, author, checker, [AUTO])
    draft = services.create_draft(actor(author), tenant.id)
    with pytest.raises(PermissionDenied, match="Only the author"):
        services.save_rule(actor(checker), tenant.id, draft.id, rule_id=None, name="Sneaky",
                           condition="true", outcome="auto_approve")


def test_the_kill_switch_needs_a_reason_and_is_audited(client, auth, admins):
    tenant, author, _checker = admins
    auth.login(author.email)
    missing = _post(client, auth, f"/admin/policy/{tenant.id}/kill-switch", {"engage": "on"})
    assert missing.status_code == 303
    assert db.session.get(PolicyKillSwitch, tenant.id) is None
    _post(client, auth, f"/admin/policy/{tenant.id}/kill-switch",
          {"engage": "on", "reason": "Fraud wave"})
    page = client.get("/admin/policy/")
    assert "Auto-approval is stopped" in page.text and "Fraud wave" in page.text
    assert _actions() == ["policy.kill_switch_engaged"]


def test_posts_without_a_csrf_token_are_refused(client, auth, admins):
    tenant, author, _checker = admins
    auth.login(author.email)
    assert client.post(f"/admin/policy/{tenant.id}/drafts").status_code == 400
    assert re.search("New draft", client.get("/admin/policy/").text)
