"""seed-demo writes its items in bulk, past the flush listener, and then fills the rollups."""
from sqlalchemy import select

from app.exceptions.services import act_on_exception
from app.extensions import db
from app.models import User
from app.unit_of_work import commit
from app.work.queries import get_item
from tests.conftest import actor
from tests.dashboard.recompute import all_items, expected_rollups, stored_rollups


def test_seed_demo_fills_the_rollups_exactly(seeded):
    daily, backlog, due, queues, steps = stored_rollups()
    assert (daily, backlog, due, queues, steps) == expected_rollups()
    assert sum(v["decided"] for v in steps.values()) > 0  # the demo's decided approvals
    assert sum(v.get("auto_approved", 0) for v in daily.values()) > 0  # the demo has some
    assert sum(v["items"] for v in backlog.values()) > 0
    assert sum(v["items"] for v in due.values()) == sum(v["items"] for v in backlog.values())
    assert sum(v["items"] for v in queues.values()) == sum(v["items"] for v in backlog.values())


def test_after_the_seed_the_live_path_keeps_them_exact(seeded):
    analyst = db.session.scalars(select(User).where(User.email == "analyst@cleardesk.demo")).one()
    open_exception = next(i for i in all_items() if i.kind == "billing_exception"
                          and i.state in ("open", "investigating"))
    act_on_exception(actor(analyst), open_exception.id, "resolve",
                     resolution_code="customer_paid")
    commit()
    assert get_item(actor(analyst), open_exception.id).state == "resolved"
    assert stored_rollups() == expected_rollups()
