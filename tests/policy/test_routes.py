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
    assert client.get("/admin/policy/", follow_redirects=True).status_code == 403
    assert client.get(f"/admin/t/{tenant.slug}/policy/").status_code == 403


def test_an_admin_of_another_tenant_gets_not_found(client, auth, admins, make_tenant, make_user):
    tenant, _author, _checker = admins
    other = make_tenant("contoso", "EUR", "Europe/Berlin", "DE")
    make_user("other@example.com", [other], roles=("admin",))
    auth.login("other@example.com")
    assert client.get(f"/admin/t/{tenant.slug}/policy/").status_code == 404
    response = _post(client, auth, f"/admin/t/{tenant.slug}/policy/drafts", {})
    assert response.status_code == 404


def test_the_draft_to_activation_walk_through_with_four_eyes(client, auth, admins, make_policy,
                                                           make_item):
    tenant, author, checker = admins
    active = make_policy(tenant, author, checker, [AUTO])
    auth.login(author.email)
    page = client.get("/admin/policy/", follow_redirects=True)
    assert page.status_code == 200 and "version 1" in page.text and "amount &lt;= 1000" in page.text
    created = _post(client, auth, f"/admin/t/{tenant.slug}/policy/drafts", {})
    assert created.status_code == 303
    draft = db.session.scalars(select(PolicyVersion).where(PolicyVersion.version == 2)).one()
    assert draft.based_on_id == active.id and [r.condition for r in draft.rules] == [
        "amount <= 1000"]
    version_url = f"/admin/t/{tenant.slug}/policy/versions/{draft.id}"

    # Live validation names the problem as it is typed.
    checked = _post(client, auth, f"/admin/t/{tenant.slug}/policy/check",
                    {"condition": "amont < 5"}, version_url)
    assert "Unknown field “amont”. Did you mean “amount”?" in checked.text
    good = _post(client, auth, f"/admin/t/{tenant.slug}/policy/check",
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
    from app.policy import versions
    from tests.conftest import actor

    tenant, author, checker = admins
    make_policy(tenant, author, checker, [AUTO])
    draft = versions.create_draft(actor(author), tenant.id)
    with pytest.raises(PermissionDenied, match="Only the author"):
        versions.save_rule(actor(checker), tenant.id, draft.id, rule_id=None, name="Sneaky",
                           condition="true", outcome="auto_approve")


def test_the_kill_switch_needs_a_reason_and_is_audited(client, auth, admins):
    tenant, author, _checker = admins
    auth.login(author.email)
    missing = _post(client, auth, f"/admin/t/{tenant.slug}/policy/kill-switch", {"engage": "on"})
    assert missing.status_code == 303
    assert db.session.get(PolicyKillSwitch, tenant.id) is None
    _post(client, auth, f"/admin/t/{tenant.slug}/policy/kill-switch",
          {"engage": "on", "reason": "Fraud wave"})
    page = client.get("/admin/policy/", follow_redirects=True)
    assert "Auto-approval is stopped" in page.text and "Fraud wave" in page.text
    assert _actions() == ["policy.kill_switch_engaged"]


def test_posts_without_a_csrf_token_are_refused(client, auth, admins):
    tenant, author, _checker = admins
    auth.login(author.email)
    assert client.post(f"/admin/t/{tenant.slug}/policy/drafts").status_code == 400
    assert re.search("New draft", client.get("/admin/policy/", follow_redirects=True).text)


# The rule form shows each kind only its own fields and outcomes.

KIND_INPUTS = {
    "approval": ({"outcome", "queue", "steps"}, ["auto_approve", "steps", "queue"]),
    "billing_exception": ({"outcome", "queue", "assign_role", "set_priority"},
                          ["queue", "assign", "prioritize"]),
    "settlement_dispute": ({"outcome", "queue", "assign_role", "set_priority"},
                           ["queue", "assign", "prioritize"]),
}


@pytest.fixture
def draft_page(client, auth, admins, make_policy):
    """The author signed in on a fresh draft: (tenant, draft, its page's URL, a CSRF token)."""
    from app.policy import versions
    from app.unit_of_work import commit
    from tests.conftest import actor

    tenant, author, checker = admins
    make_policy(tenant, author, checker, [AUTO])
    draft = versions.create_draft(actor(author), tenant.id)
    commit()
    auth.login(author.email)
    url = f"/admin/t/{tenant.slug}/policy/versions/{draft.id}"
    return tenant, draft, url, auth.csrf(url)


def _kind_part(client, url, token, **data):
    return client.post(f"{url}/rule-form", headers={"HX-Request": "true", "X-CSRFToken": token},
                       data={"form_id": "new", "name": "", "condition": "", **data})


def _main_part(html):
    """The swapped part of a rule-form answer, without its out-of-band condition check."""
    return html.split('hx-swap-oob="true"')[0]


@pytest.mark.parametrize("kind", list(KIND_INPUTS))
def test_the_rule_form_fragment_for_a_kind_holds_exactly_its_outcomes_and_fields(
        client, draft_page, kind):
    from app.policy.rules import FIELDS_BY_KIND

    tenant, draft, url, token = draft_page
    answer = _kind_part(client, url, token, kind=kind, outcome="queue", queue="Deal desk")
    assert answer.status_code == 200 and "<html" not in answer.text
    part = _main_part(answer.text)
    assert part.lstrip().startswith('<div id="kindpart-new"')
    inputs, outcomes = KIND_INPUTS[kind]
    assert set(re.findall(r'name="(\w+)"', part)) == inputs
    assert re.findall(r'<option value="(\w+)"[^>]*>(?:Auto|Approval|Send|Assign|Only)',
                      part) == outcomes
    assert 'value="Deal desk"' in part  # what was typed survives the switch
    # The condition's help lists this kind's fields, with their types, and no other kind's.
    chips = re.findall(r"<li title=\"[^\"]*\"><code>(\w+)</code> <small>([^<]+)</small>", part)
    assert chips == [(name, "a number" if ftype.name == "FLOAT" else "text")
                     for name, (ftype, _help) in FIELDS_BY_KIND[kind].items()]


def test_switching_to_a_kind_picks_an_outcome_that_fits_and_rechecks_the_condition(
        client, draft_page):
    tenant, draft, url, token = draft_page
    answer = _kind_part(client, url, token, kind="settlement_dispute", outcome="auto_approve",
                        condition="discount_pct > 10")
    assert re.search(r'<option value="queue"\s+selected', answer.text)
    assert "auto_approve" not in _main_part(answer.text)
    oob = answer.text.split('id="check-new"')[1]
    assert "Unknown field “discount_pct” of settlement disputes." in oob
    back = _kind_part(client, url, token, kind="approval", outcome="queue",
                      condition="discount_pct > 10")
    assert "✓ Valid — uses discount_pct" in back.text


def test_the_rule_form_fragment_needs_the_csrf_token_an_admin_and_a_known_form(
        client, auth, draft_page, admins, make_user):
    tenant, draft, url, token = draft_page
    refused = client.post(f"{url}/rule-form", headers={"HX-Request": "true"},
                          data={"form_id": "new", "kind": "approval"})
    assert refused.status_code == 400
    unknown = _kind_part(client, url, token, kind="approval", form_id="rule")
    assert unknown.status_code == 422
    make_user("appr@example.com", [tenant], roles=("approver",))
    auth.login("appr@example.com")
    other = auth.csrf("/")
    assert _kind_part(client, url, other, kind="approval").status_code == 403


def test_without_js_the_kind_button_shows_the_whole_page_with_that_kind_fields(
        client, draft_page):
    tenant, draft, url, token = draft_page
    page = client.get(url).text
    assert "Show this kind's fields" in page and "<noscript>" in page
    shown = client.post(f"{url}/rule-form", data={
        "csrf_token": token, "form_id": "new", "name": "Disputes", "kind": "settlement_dispute",
        "condition": "delta > 5000", "outcome": "auto_approve"})
    assert shown.status_code == 200 and "<html" in shown.text
    new_form = shown.text.split('id="kindpart-new"')[1].split("</fieldset>")[0]
    assert set(re.findall(r'name="(\w+)"', new_form)) == KIND_INPUTS["settlement_dispute"][0]
    assert 'value="Disputes"' in shown.text and "delta &gt; 5000" in shown.text
    db.session.expire_all()
    assert len(db.session.get(PolicyVersion, draft.id).rules) == 1  # nothing saved


@pytest.mark.parametrize("kind, data, field, message", [
    ("settlement_dispute", {"outcome": "auto_approve"}, "outcome",
     "Settlement disputes are never auto-approved"),
    ("billing_exception", {"outcome": "steps", "steps": "approver >= 0"}, "outcome",
     "Approval steps are for approvals; send billing exceptions to a queue"),
    ("billing_exception", {"outcome": "queue", "queue": "Ops", "steps": "approver >= 0"},
     "steps", "approval steps are for approvals, not billing exceptions"),
])
def test_a_plain_post_of_an_outcome_that_does_not_fit_the_kind_is_refused_with_its_reason(
        client, draft_page, kind, data, field, message):
    tenant, draft, url, token = draft_page
    refused = client.post(f"{url}/rules", data={
        "csrf_token": token, "form_id": "new", "name": "Misfit", "kind": kind,
        "condition": "amount > 10", **data})
    assert refused.status_code == 422
    new_form = refused.text.split('id="kindpart-new"')[1].split("</fieldset>")[0]
    assert message in new_form  # shown in the form, though its input is not the kind's
    assert set(re.findall(r'name="(\w+)"', new_form)) == KIND_INPUTS[kind][0]
    db.session.expire_all()
    assert [r.name for r in db.session.get(PolicyVersion, draft.id).rules] == ["Small deals"]


def test_live_validation_under_the_dispute_kind_does_not_know_an_approval_only_field(
        client, draft_page):
    tenant, draft, url, token = draft_page
    checked = client.post(f"/admin/t/{tenant.slug}/policy/check",
                          headers={"HX-Request": "true", "X-CSRFToken": token},
                          data={"condition": "discount_pct > 10", "kind": "settlement_dispute"})
    assert checked.status_code == 200
    assert "Unknown field “discount_pct” of settlement disputes." in checked.text
    fine = client.post(f"/admin/t/{tenant.slug}/policy/check",
                       headers={"HX-Request": "true", "X-CSRFToken": token},
                       data={"condition": "discount_pct > 10", "kind": "approval"})
    assert "✓ Valid" in fine.text


def test_a_fitting_rule_of_each_kind_saves_from_the_form(client, draft_page):
    tenant, draft, url, token = draft_page
    saved = client.post(f"{url}/rules", data={
        "csrf_token": token, "form_id": "new", "name": "Big deltas", "kind": "settlement_dispute",
        "condition": "delta > 5000", "outcome": "assign", "assign_role": "analyst",
        "set_priority": "high"})
    assert saved.status_code == 303
    db.session.expire_all()
    rule = db.session.get(PolicyVersion, draft.id).rules[-1]
    assert (rule.kind, rule.outcome, rule.assign_role, rule.set_priority) == (
        "settlement_dispute", "assign", "analyst", "high")
    page = client.get(url).text
    edit = page.split(f'id="kindpart-r{rule.id}"')[1].split("</fieldset>")[0]
    assert set(re.findall(r'name="(\w+)"', edit)) == KIND_INPUTS["settlement_dispute"][0]
    assert re.search(r'<option value="analyst"\s+selected', edit)


def test_old_policy_urls_redirect_into_the_admin_frame(client, auth, admins, make_policy):
    tenant, author, checker = admins
    active = make_policy(tenant, author, checker, [AUTO])
    auth.login(author.email)
    new_home = f"/admin/t/{tenant.slug}/policy/"

    for old, new in [
            ("/admin/policy/", new_home),
            (f"/admin/policy/?tenant={tenant.id}", new_home),
            (f"/admin/policy/{tenant.id}/versions/{active.id}",
             f"{new_home}versions/{active.id}"),
            (f"/admin/policy/{tenant.id}/versions/{active.id}/simulation?days=30",
             f"{new_home}versions/{active.id}/simulation?days=30")]:
        response = client.get(old)
        assert response.status_code == 301, old
        assert response.headers["Location"] == new, old

    page = client.get(new_home).text
    assert re.search(r'<a href="/admin/t/northwind/policy/"\s+aria-current="page">Policy</a>',
                     page)
    assert f'href="/admin/t/{tenant.slug}/people"' in page  # the tenant's other admin tabs


def test_an_unknown_tenant_in_a_policy_url_is_not_found(client, auth, admins):
    _tenant, author, _checker = admins
    auth.login(author.email)
    assert client.get("/admin/t/no-such-tenant/policy/").status_code == 404
    assert client.get("/admin/policy/999/versions/1").status_code == 404


def test_steps_are_checked_live_with_groups_quorums_and_owners_in_words(
        client, auth, admins, make_user):
    from app.admin.groups import create_group
    from app.unit_of_work import commit
    from tests.conftest import SYSTEM

    tenant, author, _checker = admins
    anna = make_user("anna@x.test", [tenant], roles=("approver",))
    create_group(SYSTEM, tenant, name="Treasury", member_ids=[anna.id])
    commit()
    auth.login(author.email)
    path = f"/admin/t/{tenant.slug}/policy/check-steps"
    page = f"/admin/t/{tenant.slug}/policy/"
    good = _post(client, auth, path, {"steps": 'all of group "Treasury" >= 5000\n'
                                               "owner account_owner_email else manager"}, page)
    assert ("✓ all of the members of Treasury, each with a limit of at least USD 5,000.00 "
            "(else a manager when too few may decide) (1 member today); then the account owner "
            "named on the item (else a manager)") in good.text.replace("&#39;", "'")
    unknown = _post(client, auth, path, {"steps": '2 of group "Deal desk"'}, page)
    assert "line 1: there is no approver group named “Deal desk”" in unknown.text
    too_few = _post(client, auth, path, {"steps": '2 of group "Treasury" else approver'}, page)
    assert "✓ 2 of the members of Treasury" in too_few.text
    assert ("⚠ Step 1: “Treasury” has 1 member who may decide it today: 2 of them can never "
            "approve, so it will go to one approver instead") in too_few.text
    escalating = _post(client, auth, path, {
        "steps": 'approver >= 1000, escalate after 2 business days to manager then group '
                 '"Treasury"'}, page)
    assert ("✓ an approver, with a limit of at least USD 1,000.00; escalates after 2 business "
            "days to the approver&#39;s manager, then Treasury") in escalating.text
    field = _post(client, auth, path, {"steps": "owner favourite_colour else manager"}, page)
    assert "the owner field must be one of" in field.text
