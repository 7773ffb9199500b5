"""The outbox through a real Redis and a real `rq worker` process."""
from sqlalchemy import select

from app.extensions import db
from app.jobs import queue_of_topic
from app.outbox.jobs import relay_pending
from app.outbox.models import OutboxMessage
from app.outbox.services import outbox_job_id
from tests.approvals.conftest import relaying, run_worker  # noqa: F401  (fixture)


def _messages():
    db.session.expire_all()
    return db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()


def test_a_committed_change_is_relayed_and_processed_by_a_real_worker(relaying, make_tenant,
                                                                      make_item):
    tenant = make_tenant()
    make_item(tenant)
    [message] = _messages()
    assert message.topic == "item.created" and message.relayed_at is not None
    # A new arrival is urgent work (the policy decides it): it waits on the urgent queue.
    assert queue_of_topic("item.created").name == f"{relaying.config['RQ_QUEUE']}-urgent"
    assert queue_of_topic("item.created").fetch_job(outbox_job_id(message.id)) is not None
    run_worker(relaying)
    [message] = _messages()
    assert message.processed_at is not None and message.attempts == 1


def test_a_rolled_back_change_leaves_no_message(relaying, make_tenant, make_item):
    from app.actors import Actor
    from app.work.services import create_item

    tenant = make_tenant()
    create_item(Actor.system(), tenant_id=tenant.id, kind="approval", subtype="refund",
                title="x", external_ref="R-1", source_system="t", counterparty="c",
                amount="10.00")
    db.session.rollback()
    assert _messages() == []


def test_redis_outage_loses_nothing_the_sweep_relays_later(relaying, make_tenant, make_item):
    good_url = relaying.config["REDIS_URL"]
    relaying.config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    relaying.extensions.pop("cleardesk_redis", None)
    tenant = make_tenant()
    item = make_item(tenant)
    [message] = _messages()
    assert item.id is not None and message.relayed_at is None and message.processed_at is None

    relaying.config["REDIS_URL"] = good_url
    relaying.extensions.pop("cleardesk_redis", None)
    assert relay_pending() == 1
    assert relay_pending() == 0  # relayed once; not again until it goes stale
    run_worker(relaying)
    [message] = _messages()
    assert message.processed_at is not None


def test_delivering_a_message_twice_processes_it_once(relaying, make_tenant, make_item):
    from app.outbox.jobs import deliver_message

    tenant = make_tenant()
    make_item(tenant)
    [message] = _messages()
    assert deliver_message(message.id) == "processed"
    assert deliver_message(message.id) == "already processed"
    [message] = _messages()
    assert message.attempts == 1


def test_a_failed_savepoint_loses_only_its_own_messages_the_rest_are_relayed_at_commit(
        relaying, make_tenant):
    from app.outbox.services import add_message
    from app.unit_of_work import commit, savepoint

    tenant = make_tenant()
    add_message("item.created", {"n": 1}, tenant.id)
    try:
        with savepoint():
            add_message("item.created", {"n": 2}, tenant.id)
            db.session.flush()
            raise RuntimeError("this part fails alone")
    except RuntimeError:
        pass
    add_message("item.created", {"n": 3}, tenant.id)
    commit()
    messages = _messages()
    assert [m.payload["n"] for m in messages] == [1, 3]
    assert all(m.relayed_at is not None for m in messages)  # not left for the sweep
