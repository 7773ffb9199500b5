"""Events wait in the transaction and are chained when it commits: rolled-back work leaves
no event and no gap, a rolled-back savepoint drops only its own events, and the chain's head
is not held while the rest of a unit of work runs."""
import threading

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.extensions import db
from app.unit_of_work import commit
from app.work.ledger import change_item
from app.work.services import add_comment
from tests.conftest import DATABASE, SYSTEM


def _comments(tenant_id: int) -> list[tuple[int, str]]:
    return db.session.execute(
        select(AuditEvent.seq, AuditEvent.comment)
        .where(AuditEvent.chain_id == tenant_id, AuditEvent.action == "item.commented")
        .order_by(AuditEvent.seq)).all()


@pytest.fixture
def item(make_tenant, make_item):
    return make_item(make_tenant())


def test_an_event_is_written_only_when_its_transaction_commits(item):
    add_comment(SYSTEM, item.id, "first")
    assert _comments(item.tenant_id) == []  # not before the commit
    commit()
    assert [c for _, c in _comments(item.tenant_id)] == ["first"]


def test_a_rolled_back_transaction_leaves_no_event_and_no_gap(item):
    add_comment(SYSTEM, item.id, "kept 1")
    commit()
    add_comment(SYSTEM, item.id, "rolled back")
    db.session.rollback()
    add_comment(SYSTEM, item.id, "kept 2")
    commit()
    comments = _comments(item.tenant_id)
    assert [c for _, c in comments] == ["kept 1", "kept 2"]
    assert comments[1][0] == comments[0][0] + 1
    assert verify_chain(item.tenant_id).ok


def test_a_rolled_back_savepoint_drops_only_its_own_events(item):
    add_comment(SYSTEM, item.id, "before")
    with db.session.begin_nested():
        add_comment(SYSTEM, item.id, "released savepoint")
    try:
        with db.session.begin_nested():
            add_comment(SYSTEM, item.id, "failed savepoint")
            with db.session.begin_nested():
                add_comment(SYSTEM, item.id, "inside the failed one")
            raise RuntimeError("this item of a bulk action fails")
    except RuntimeError:
        pass
    add_comment(SYSTEM, item.id, "after")
    commit()
    assert [c for _, c in _comments(item.tenant_id)] == [
        "before", "released savepoint", "after"]
    assert verify_chain(item.tenant_id).ok


def test_events_of_two_tenants_in_one_transaction_each_join_their_own_chain(
        make_tenant, make_item):
    first = make_item(make_tenant())
    second = make_item(make_tenant("contoso", "EUR", "Europe/Berlin", "DE"))
    for n in range(3):
        add_comment(SYSTEM, second.id, f"second {n}")
        add_comment(SYSTEM, first.id, f"first {n}")
    commit()
    assert [c for _, c in _comments(first.tenant_id)] == ["first 0", "first 1", "first 2"]
    assert [c for _, c in _comments(second.tenant_id)] == ["second 0", "second 1", "second 2"]
    assert verify_chain(first.tenant_id).ok and verify_chain(second.tenant_id).ok


def test_a_transaction_recording_thousands_of_events_commits_them_in_order(item):
    for n in range(4500):  # more than one INSERT's worth of parameters
        add_comment(SYSTEM, item.id, f"note {n}")
    commit()
    comments = _comments(item.tenant_id)
    assert len(comments) == 4500
    assert [c for _, c in comments[:2]] == ["note 0", "note 1"]
    assert [s for s, _ in comments] == list(range(comments[0][0], comments[0][0] + 4500))
    assert verify_chain(item.tenant_id).ok


@pytest.mark.skipif(DATABASE != "postgresql", reason="SQLite has one writer at a time anyway")
def test_an_open_unit_of_work_does_not_hold_up_other_writers_of_its_tenant(app, item):
    """The first transaction has recorded its event but not committed; a second writer of the
    same tenant commits meanwhile (with a short lock timeout, so waiting would fail it)."""
    item_id, tenant_id = item.id, item.tenant_id
    add_comment(SYSTEM, item_id, "slow unit of work")
    db.session.flush()
    outcome = []

    def other_writer():
        with app.app_context():
            try:
                db.session.execute(db.text("SET lock_timeout = '2s'"))
                add_comment(SYSTEM, item_id, "quick one")
                commit()
                outcome.append("committed")
            except Exception as exc:  # the assertion below names it
                outcome.append(repr(exc))
            finally:
                db.session.remove()

    thread = threading.Thread(target=other_writer)
    thread.start()
    thread.join(30)
    assert outcome == ["committed"]
    commit()
    assert [c for _, c in _comments(tenant_id)] == ["quick one", "slow unit of work"]
    assert verify_chain(tenant_id).ok


def test_a_released_savepoint_commits_nothing_until_the_unit_of_work_does(item):
    """On SQLite a SAVEPOINT outside a transaction acts as BEGIN and its release as COMMIT;
    savepoint() opens the real transaction first, so a rollback after it undoes everything."""
    from app.models import WorkItem
    from app.unit_of_work import savepoint

    with savepoint():
        change_item(SYSTEM, db.session.get(WorkItem, item.id), {"title": "changed in a savepoint"})
    add_comment(SYSTEM, item.id, "in the same unit of work")
    db.session.rollback()
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).title != "changed in a savepoint"
    assert _comments(item.tenant_id) == []
