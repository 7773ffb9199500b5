"""The outbox's handler table: filled by the modules that own the handlers, complete in every
process that builds the app, and loud about a topic nobody handles."""
import pytest
from sqlalchemy import select

from app.extensions import db
from app.jobs import TOPIC_URGENCY
from app.outbox.jobs import deliver_message
from app.outbox.models import OutboxMessage
from app.outbox.services import HANDLERS, add_message
from app.unit_of_work import commit


def _names(handlers) -> list[str]:
    return [f"{handler.__module__}.{handler.__name__}" for handler in handlers]


def test_the_app_registers_a_handler_for_every_topic_routed_to_a_queue(app):
    assert set(HANDLERS) == set(TOPIC_URGENCY)
    # The policy decides an arrival before source systems hear of it, whatever the import order.
    assert _names(HANDLERS["item.created"]) == ["app.policy.jobs.evaluate_arrival",
                                                "app.webhooks.services.fan_out"]
    assert _names(HANDLERS["items.created"])[0] == "app.policy.jobs.evaluate_arrivals"


def test_a_message_whose_topic_has_no_handler_fails_its_delivery_and_stays_unprocessed(app):
    db.session.add(OutboxMessage(topic="nobody.listens", payload={}, tenant_id=None))
    commit()
    message_id = db.session.scalars(select(OutboxMessage.id)).one()

    with pytest.raises(LookupError, match="no outbox handler is registered for topic "
                                          "'nobody.listens'"):
        deliver_message(message_id)
    db.session.expire_all()
    message = db.session.get(OutboxMessage, message_id)
    assert message.processed_at is None  # the sweep relays it again; RQ keeps the failed job


def test_writing_a_message_of_a_topic_without_a_handler_is_refused(app):
    with pytest.raises(ValueError, match="no handler is registered"):
        add_message("nobody.listens", {}, None)
