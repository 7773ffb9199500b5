"""What a unit of work's commit leaves loaded: a request keeps the signed-in person (their
memberships and tenants), which its answer reads again; everything else is read afresh."""
from sqlalchemy import inspect

from app.unit_of_work import SIGNED_IN, unit_of_work
from app.work.services import add_comment
from tests.conftest import actor


def test_a_requests_commit_keeps_the_signed_in_person_and_expires_the_rest(
        make_tenant, make_user, make_item):
    tenant = make_tenant()
    user = make_user("approver@example.com", tenants=[tenant])
    item = make_item(tenant)
    memberships = list(user.memberships)
    add_comment(actor(user), item.id, "Looked at it")
    unit_of_work().finish(keep=SIGNED_IN)

    assert not inspect(user).expired_attributes
    assert all(not inspect(m).expired_attributes for m in memberships)
    assert not inspect(memberships[0].tenant).expired_attributes
    assert "version" in inspect(item).expired_attributes  # the item is read again
    assert item.title and not inspect(item).expired_attributes


def test_a_jobs_commit_expires_everything(make_tenant, make_user, make_item):
    tenant = make_tenant()
    user = make_user("approver@example.com", tenants=[tenant])
    item = make_item(tenant)
    add_comment(actor(user), item.id, "Looked at it")
    unit_of_work().finish()

    assert inspect(user).expired_attributes
    assert "version" in inspect(item).expired_attributes
