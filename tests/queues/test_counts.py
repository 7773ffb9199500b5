"""The queue side bar's counts come from counters the ledger keeps (and a capped count of what
only the viewer may decide), and say the same as a pass over the items would."""
import re

import pytest
from sqlalchemy import select

from app.actors import Actor, ActorType
from app.extensions import db
from app.models import Tenant, User
from app.policy.evaluation import evaluate_items, policy_actor
from app.queues import queries
from app.queues.queries import _scanned_counts, queue_counts, queues_for
from app.unit_of_work import commit
from app.work.services import claim_item, create_item, transition
from app.work.queries import get_item
from tests.conftest import SYSTEM, actor, statements_sent


@pytest.fixture
def seeded(runner):
    result = runner.invoke(args=["seed-demo", "--items", "400"])
    assert result.exit_code == 0, result.output
    db.session.expire_all()


def _every_view():
    """Each demo person, across all their tenants and in each tenant on its own."""
    tenants = [None, *db.session.scalars(select(Tenant.id).order_by(Tenant.id))]
    for user in db.session.scalars(select(User).order_by(User.id)):
        viewer = actor(user)
        for tenant_id in tenants:
            if tenant_id is None or tenant_id in viewer.tenant_ids():
                yield user.email, viewer, tenant_id


def _agree():
    for email, viewer, tenant_id in _every_view():
        counted = queue_counts(viewer, tenant_id)
        scanned = _scanned_counts(viewer, tenant_id, queues_for(viewer, tenant_id))
        assert counted == scanned, (email, tenant_id)


def test_counts_from_the_counters_equal_a_pass_over_the_items_for_every_demo_person(seeded):
    _agree()
    approver = db.session.scalars(select(User).where(
        User.email == "approver@cleardesk.demo")).one()
    assert sum(queue_counts(actor(approver), None).values()) > 0  # the demo has open work


def test_counts_stay_equal_after_claims_decisions_and_policy_moves(seeded, make_item):
    analyst = db.session.scalars(select(User).where(User.email == "analyst@cleardesk.demo")).one()
    approver = db.session.scalars(select(User).where(
        User.email == "approver@cleardesk.demo")).one()
    open_exception = db.session.scalars(
        queries._base(actor(analyst), "unassigned", None)
        .where(queries.WorkItem.kind == "billing_exception").limit(1)).first()
    if open_exception is None:
        # The demo's history is relative to the moment it is seeded: at some hours a seed of
        # 400 items has every billing exception resolved. One more arrives, as a source
        # system would send it.
        open_exception, _existing = create_item(
            SYSTEM, tenant_id=analyst.memberships[0].tenant_id, kind="billing_exception",
            subtype="payment_failed", title="Card declined", external_ref="EX-COUNTS",
            source_system="billing", counterparty="Acme", amount="120.00")
        commit()
    claim_item(actor(analyst), open_exception.id)
    # Two approvals arrive for the approver (the seed's few open ones may all be waiting on
    # their requesters at this hour): one is approved, the other expires.
    first, second = (_routed_approval(approver, make_item) for _ in range(2))
    waiting = {i.id for i in db.session.scalars(queries._base(actor(approver), "approvals", None))}
    assert {first.id, second.id} <= waiting
    transition(actor(approver), get_item(actor(approver), first.id), "approve")
    system = Actor(ActorType.SYSTEM, label="test")
    transition(system, get_item(system, second.id), "expire")
    commit()
    db.session.expire_all()
    _agree()


def test_a_count_of_what_the_viewer_may_decide_stops_at_the_cap_and_says_so(
        seeded, client, auth, monkeypatch):
    approver = db.session.scalars(select(User).where(
        User.email == "approver@cleardesk.demo")).one()
    exact = queue_counts(actor(approver), None)["approvals"]
    assert exact > 1
    cap = exact - 1
    monkeypatch.setattr(queries, "COUNT_CAP", cap)
    capped = queue_counts(actor(approver), None)["approvals"]
    assert int(capped) == cap and capped.capped
    auth.login("approver@cleardesk.demo", "demo-password")
    body = client.get("/queues/counts").text
    assert re.search(rf'data-queue="approvals">{cap}\+<', body)


def _statements_reading_items(run) -> list[str]:
    """The statements `run()` sends that read items or their counters."""
    return [s for s in statements_sent(run) if "work_items" in s or "queue_open_counts" in s]


def _approver() -> User:
    return db.session.scalars(select(User).where(User.email == "approver@cleardesk.demo")).one()


def _unassigned_for(viewer, make_item):
    """An open item nobody has claimed that the viewer may work: one of the seed's, or (at an
    hour when the seed's few open items are all claimed) one more, as a source system sends."""
    item = db.session.scalars(queries._base(viewer, "unassigned", None).limit(1)).first()
    if item is None:
        item = _routed_approval(viewer.user, make_item)
        db.session.expire_all()
    return item


def _routed_approval(approver: User, make_item):
    """An approval an analyst asks for, routed by the policy to the approver's role."""
    analyst = db.session.scalars(select(User).where(User.email == "analyst@cleardesk.demo")).one()
    tenant = db.session.get(Tenant, approver.memberships[0].tenant_id)
    item = make_item(tenant, amount="4000.00", requester=analyst)
    evaluate_items(policy_actor(tenant.id), [item.id])
    commit()
    return item


def test_counts_are_kept_for_the_viewer_until_something_changes_in_their_tenants(seeded):
    viewer = actor(_approver())
    first = queue_counts(viewer, None)
    again: dict = {}
    assert _statements_reading_items(lambda: again.update(queue_counts(viewer, None))) == []
    assert again == first
    assert again["approvals"].capped == first["approvals"].capped


def test_a_claim_by_someone_else_reaches_the_viewers_kept_counts_at_once(seeded, make_item):
    approver = _approver()
    viewer = actor(approver)
    item = _unassigned_for(viewer, make_item)
    before = queue_counts(viewer, None)
    claim_item(actor(approver), item.id)  # as from another page: committed, then counted
    commit()
    after = queue_counts(viewer, None)
    assert after["mine"] == before["mine"] + 1
    assert after == _scanned_counts(viewer, None, queues_for(viewer, None))


def test_a_lowered_approval_limit_is_counted_at_once(seeded):
    from app.admin.people import change_membership

    approver = _approver()
    before = queue_counts(actor(approver), None)["approvals"]
    admin = db.session.scalars(select(User).where(User.email == "admin@cleardesk.demo")).one()
    for membership in approver.memberships:
        change_membership(actor(admin), membership.tenant, user=approver,
                          roles=["approver"], approval_limit="0")
    commit()
    db.session.expire_all()
    viewer = actor(approver)
    assert queue_counts(viewer, None)["approvals"] < before  # only steps needing no limit
    assert queue_counts(viewer, None) == _scanned_counts(viewer, None, queues_for(viewer, None))


def test_counts_with_redis_out_of_reach_are_counted_from_the_database(seeded, app, make_item):
    from tests.approvals.conftest import free_port

    viewer = actor(_approver())
    item = _unassigned_for(viewer, make_item)
    expected = _scanned_counts(viewer, None, queues_for(viewer, None))
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app.extensions.pop("cleardesk_redis", None)
    assert queue_counts(viewer, None) == expected
    claim_item(viewer, item.id)
    commit()  # committed, though the counts' caches could not be told
    assert queue_counts(viewer, None) == _scanned_counts(viewer, None, queues_for(viewer, None))
