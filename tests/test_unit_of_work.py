"""What a unit of work's commit leaves loaded: a request keeps the signed-in person (their
memberships and tenants), which its answer reads again; everything else is read afresh."""
from sqlalchemy import inspect

from app.extensions import db
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


def test_a_unit_first_opened_through_the_scoped_session_holds_the_session_itself(
        make_tenant, make_user, make_item):
    # The ledger opens the unit with db.session (the scoped proxy) when an item change is the
    # first thing a request does; keeping the signed-in person must still work, and the
    # session's own expire setting must be what it was afterwards.
    tenant = make_tenant()
    user = make_user("approver@example.com", tenants=[tenant])
    make_item(tenant)
    unit_of_work().finish()
    assert user.email  # loaded again after that commit expired it
    unit = unit_of_work(db.session)
    assert unit.session is db.session()
    expiring = db.session().expire_on_commit
    unit.finish(keep=SIGNED_IN)
    assert db.session().expire_on_commit is expiring
    assert not inspect(user).expired_attributes
