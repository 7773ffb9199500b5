"""Reporting lines: an admin names whom a member reports to (the first level an approval
escalates to); themselves and loops are refused; every change is audited."""
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.models import Membership
from tests.conftest import csrf_from


def _setup(make_tenant, make_user):
    tenant = make_tenant()
    admin = make_user("admin@x.test", [tenant], roles=("admin",), limit="0")
    anna = make_user("anna@x.test", [tenant], roles=("approver",), name="Anna")
    mia = make_user("mia@x.test", [tenant], roles=("manager",), name="Mia")
    cleo = make_user("cleo@x.test", [tenant], roles=("manager",), name="Cleo")
    return tenant, admin, anna, mia, cleo


def _manager_of(tenant, user):
    db.session.expire_all()
    return db.session.scalars(select(Membership.manager_id).where(
        Membership.tenant_id == tenant.id, Membership.user_id == user.id)).one()


def _set(client, tenant, user, manager_id):
    page = client.get(f"/admin/t/{tenant.slug}/people/{user.id}")
    return client.post(f"/admin/t/{tenant.slug}/people/{user.id}/manager", data={
        "csrf_token": csrf_from(page.text), "manager_id": manager_id or ""})


def test_an_admin_sets_whom_a_member_reports_to_on_the_person_page_and_it_is_audited(
        client, auth, make_tenant, make_user):
    tenant, admin, anna, mia, _cleo = _setup(make_tenant, make_user)
    auth.login(admin.email)
    assert _set(client, tenant, anna, mia.id).status_code == 303
    assert _manager_of(tenant, anna) == mia.id
    page = client.get(f"/admin/t/{tenant.slug}/people/{anna.id}")
    assert f'<option value="{mia.id}" selected>Mia</option>' in page.text
    assert _set(client, tenant, anna, None).status_code == 303
    assert _manager_of(tenant, anna) is None
    events = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "membership.manager_set").order_by(AuditEvent.seq)).all()
    assert [(e.data["before"], e.data["after"]) for e in events] == [(None, mia.id),
                                                                      (mia.id, None)]


def test_a_member_cannot_report_to_themselves(client, auth, make_tenant, make_user):
    tenant, admin, anna, _mia, _cleo = _setup(make_tenant, make_user)
    auth.login(admin.email)
    response = _set(client, tenant, anna, anna.id)
    assert response.status_code == 422 and "someone other than this person" in response.text
    assert _manager_of(tenant, anna) is None


def test_a_reporting_loop_is_refused_however_long(client, auth, make_tenant, make_user):
    tenant, admin, anna, mia, cleo = _setup(make_tenant, make_user)
    auth.login(admin.email)
    assert _set(client, tenant, anna, mia.id).status_code == 303
    assert _set(client, tenant, mia, cleo.id).status_code == 303
    response = _set(client, tenant, cleo, anna.id)  # anna → mia → cleo → anna
    assert response.status_code == 422
    assert "reports to this person already" in response.text
    assert _manager_of(tenant, cleo) is None


def test_the_manager_must_be_an_active_member_who_decides_approvals(
        client, auth, make_tenant, make_user):
    tenant, admin, anna, _mia, _cleo = _setup(make_tenant, make_user)
    other = make_tenant("contoso", "EUR", "Europe/Berlin", "DE")
    outsider = make_user("out@x.test", [other], roles=("manager",))
    auth.login(admin.email)
    response = _set(client, tenant, anna, outsider.id)
    assert response.status_code == 422 and "not an active member of this tenant" in response.text
    response = _set(client, tenant, anna, admin.id)
    assert response.status_code == 422 and "holds no role that decides approvals" in response.text
