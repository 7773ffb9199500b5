"""Real concurrent connections: one winner per race, and a gapless chain under load."""
import threading

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app.approvals.services import approve_step
from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.errors import Conflict
from app.extensions import db
from app.models import User
from app.unit_of_work import commit
from app.work.services import add_comment, claim_item
from tests.conftest import actor


def _race(app, calls, barrier_before_flush=True):
    """Run each call in its own thread, app context and database connection. With
    `barrier_before_flush`, every thread has read the item before any thread writes."""
    barrier = threading.Barrier(len(calls), timeout=20)
    results = [None] * len(calls)
    armed = threading.local()

    def wait_at_flush(session, flush_context, instances):
        if getattr(armed, "on", False):
            armed.on = False
            barrier.wait()

    def run(index, call):
        with app.app_context():
            armed.on = barrier_before_flush
            try:
                call()
                commit()
                results[index] = "ok"
            except Conflict as conflict:
                db.session.rollback()
                results[index] = conflict
            except threading.BrokenBarrierError:
                db.session.rollback()
                results[index] = "barrier"
            finally:
                db.session.remove()

    event.listen(Session, "before_flush", wait_at_flush)
    try:
        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        event.remove(Session, "before_flush", wait_at_flush)
    return results


def _user(app, user_id):
    return db.session.get(User, user_id)


@pytest.fixture
def pair(make_tenant, make_user, make_item):
    tenant = make_tenant()
    requester = make_user("r@x.test", [tenant], roles=("requester",))
    a = make_user("alice@x.test", [tenant], roles=("approver",), name="Alice")
    b = make_user("bob@x.test", [tenant], roles=("approver",), name="Bob")
    item = make_item(tenant, amount="500.00", requester=requester)
    return tenant, item.id, a.id, b.id


def test_two_approvals_racing_on_one_item_have_exactly_one_winner(app, pair):
    tenant, item_id, a_id, b_id = pair
    results = _race(app, [
        lambda: approve_step(actor(_user(app, a_id)), item_id),
        lambda: approve_step(actor(_user(app, b_id)), item_id),
    ])
    assert sorted(r == "ok" for r in results) == [False, True], results
    loser = next(r for r in results if r != "ok")
    assert isinstance(loser, Conflict)
    assert "Already approved by" in loser.message and " at " in loser.message
    db.session.expire_all()
    approvals = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.item_id == item_id, AuditEvent.action == "item.approve"))
    assert approvals == 1
    assert verify_chain(tenant.id).ok


def test_two_claims_racing_have_one_winner_and_the_loser_is_told_who(app, pair):
    tenant, item_id, a_id, b_id = pair
    results = _race(app, [
        lambda: claim_item(actor(_user(app, a_id)), item_id),
        lambda: claim_item(actor(_user(app, b_id)), item_id),
    ])
    assert sorted(r == "ok" for r in results) == [False, True], results
    loser = next(r for r in results if r != "ok")
    winner_name = "Alice" if results[0] == "ok" else "Bob"
    assert f"Already claimed by {winner_name}" in loser.message


def test_chain_stays_gapless_and_valid_under_concurrent_writers(app, pair):
    tenant, item_id, a_id, b_id = pair
    before = db.session.scalar(select(func.count()).select_from(AuditEvent)
                               .where(AuditEvent.chain_id == tenant.id))
    writers, per_writer = 8, 15

    def writer(n):
        def call():
            for i in range(per_writer):
                add_comment(actor(_user(app, a_id if n % 2 else b_id)), item_id,
                            f"note {n}-{i}")
                commit()
        return call

    results = _race(app, [writer(n) for n in range(writers)], barrier_before_flush=False)
    assert results == ["ok"] * writers
    db.session.expire_all()
    seqs = db.session.scalars(select(AuditEvent.seq).where(AuditEvent.chain_id == tenant.id)
                              .order_by(AuditEvent.seq)).all()
    assert len(seqs) == before + writers * per_writer
    assert seqs == list(range(1, len(seqs) + 1))
    report = verify_chain(tenant.id)
    assert report.ok, report.problem


def test_every_loser_of_a_many_way_race_is_told_who_approved_and_when(
        app, make_tenant, make_user, make_item):
    """Six approvers on each of four items at once, reading whenever they get there: each item
    is approved once, and every loser, however far its reads got, hears who won."""
    tenant = make_tenant()
    requester = make_user("r@x.test", [tenant], roles=("requester",))
    approvers = [make_user(f"a{n}@x.test", [tenant], roles=("approver",), name=f"Approver {n}")
                 .id for n in range(6)]
    items = [make_item(tenant, amount="500.00", requester=requester).id for _ in range(4)]
    for item_id in items:
        results = _race(app, [
            (lambda user_id=user_id: approve_step(actor(_user(app, user_id)), item_id))
            for user_id in approvers], barrier_before_flush=False)
        assert results.count("ok") == 1, results
        losers = [r for r in results if r != "ok"]
        assert all(isinstance(r, Conflict) and r.message.startswith("Already approved by ")
                   and " at " in r.message for r in losers), [str(r) for r in losers]
    db.session.expire_all()
    approvals = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "item.approve"))
    assert approvals == len(items)
