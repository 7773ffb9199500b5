"""Approver groups: admins name them and choose their members, audited; policy steps name them."""
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.models import ApproverGroup
from tests.conftest import csrf_from


def _setup(make_tenant, make_user):
    tenant = make_tenant()
    admin = make_user("admin@x.test", [tenant], roles=("admin",), limit="0")
    anna = make_user("anna@x.test", [tenant], roles=("approver",), name="Anna")
    ben = make_user("ben@x.test", [tenant], roles=("approver",), name="Ben")
    return tenant, admin, anna, ben


def test_an_admin_creates_and_edits_a_group_and_each_change_is_audited(
        client, auth, make_tenant, make_user):
    tenant, admin, anna, ben = _setup(make_tenant, make_user)
    auth.login(admin.email)
    page = client.get(f"/admin/t/{tenant.slug}/groups")
    assert page.status_code == 200 and "No approver groups yet" in page.text
    response = client.post(f"/admin/t/{tenant.slug}/groups", data={
        "csrf_token": csrf_from(page.text), "name": "Regional controllers EMEA",
        "members": [anna.id]})
    assert response.status_code == 303
    group = db.session.scalars(select(ApproverGroup)).one()
    assert group.name == "Regional controllers EMEA" and group.member_ids == {anna.id}
    page = client.get(f"/admin/t/{tenant.slug}/groups/{group.id}")
    assert "Edit “Regional controllers EMEA”" in page.text
    client.post(f"/admin/t/{tenant.slug}/groups/{group.id}", data={
        "csrf_token": csrf_from(page.text), "name": "Regional controllers EMEA",
        "members": [anna.id, ben.id]})
    db.session.expire_all()
    assert db.session.get(ApproverGroup, group.id).member_ids == {anna.id, ben.id}
    events = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action.like("approver_group.%")).order_by(AuditEvent.seq)).all()
    assert [e.action for e in events] == ["approver_group.created", "approver_group.updated"]
    assert events[1].data["before"]["members"] == [anna.id]
    assert events[1].data["after"]["members"] == sorted([anna.id, ben.id])


def test_a_group_name_taken_in_the_tenant_is_refused(client, auth, make_tenant, make_user):
    tenant, admin, anna, ben = _setup(make_tenant, make_user)
    auth.login(admin.email)
    for expected in (303, 422):
        page = client.get(f"/admin/t/{tenant.slug}/groups")
        response = client.post(f"/admin/t/{tenant.slug}/groups", data={
            "csrf_token": csrf_from(page.text), "name": "treasury  ", "members": []})
        assert response.status_code == expected
    assert "another group has it" in response.text


def test_a_group_of_another_tenant_is_not_found(client, auth, make_tenant, make_user):
    tenant, admin, anna, ben = _setup(make_tenant, make_user)
    other = make_tenant("contoso", "EUR", "Europe/Berlin", "DE")
    from app.admin.groups import create_group
    from app.unit_of_work import commit
    from tests.conftest import SYSTEM

    theirs = create_group(SYSTEM, other, name="Treasury")
    commit()
    auth.login(admin.email)
    assert client.get(f"/admin/t/{tenant.slug}/groups/{theirs.id}").status_code == 404


def test_a_policy_step_naming_an_unknown_group_is_refused_with_the_reason(
        make_tenant, make_user):
    import pytest

    from app.errors import ValidationFailed
    from app.policy.versions import clean_steps

    with pytest.raises(ValidationFailed) as refused:
        clean_steps('2 of group "Treasury"', groups={"deal desk"})
    assert "no approver group named “Treasury”" in refused.value.fields["steps"]
    assert clean_steps('all of group "Deal desk" >= 5000, reject when quorum lost',
                       groups={"deal desk"}) == [
        {"role": "approver", "min_limit": "5000.00", "need": "all", "group": "Deal desk",
         "reject_when": "quorum"}]
