"""Every queue's page is read along an index in the page's order, so it stops after one page
whatever the backlog (PostgreSQL's plans: EXPLAIN of the real statements)."""
import pytest
from sqlalchemy import select, text
from werkzeug.datastructures import MultiDict

from app.extensions import db
from app.models import User
from app.queues import queries
from app.queues.filters import SORTS, QueueFilters
from tests.conftest import DATABASE, actor

pytestmark = [pytest.mark.postgres_only,
              pytest.mark.skipif(DATABASE != "postgresql", reason="PostgreSQL's planner")]


@pytest.fixture
def seeded(runner):
    result = runner.invoke(args=["seed-demo", "--items", "400"])
    assert result.exit_code == 0, result.output
    db.session.execute(text("ANALYZE"))


def _plan(viewer, queue: str, sort: str, **args) -> str:
    filters = QueueFilters.parse(MultiDict({"sort": sort, **args}), viewer.tenant_ids())
    query = (queries._base(viewer, queue, None, filters.status)
             .where(*filters.conditions(viewer.user_id))
             .with_only_columns(*queries.ROW_COLUMNS).order_by(*filters.order_by())
             .limit(queries.PAGE_SIZE + 1))
    sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with queries.read_in_index_order(filters.status):
        rows = db.session.connection().exec_driver_sql("EXPLAIN " + sql)
        return "\n".join(row[0] for row in rows)


def _queues_of(email: str):
    user = db.session.scalars(select(User).where(User.email == email)).one()
    viewer = actor(user)
    # My work joins two sources (assigned, routed to me) whose union no one index orders;
    # it is bounded by one person's work, not by the backlog.
    return viewer, [q.name for q in queries.queues_for(viewer, None) if q.name != "mine"]


@pytest.mark.parametrize("email", ["approver@cleardesk.demo", "manager@cleardesk.demo",
                                   "analyst@cleardesk.demo"])
@pytest.mark.parametrize("sort", sorted(SORTS))
def test_every_queue_and_sort_reads_an_index_in_order_without_sorting(seeded, email, sort):
    viewer, queues = _queues_of(email)
    assert queues
    for queue in queues:
        plan = _plan(viewer, queue, sort)
        assert "Sort" not in plan, (queue, plan)
        assert "Seq Scan on work_items" not in plan, (queue, plan)
        assert "Index Scan" in plan, (queue, plan)


def test_a_filtered_queue_and_the_next_page_still_read_in_order(seeded):
    viewer, _ = _queues_of("approver@cleardesk.demo")
    plan = _plan(viewer, "approvals", "amount", min_amount="1000", subtype="discount")
    assert "Sort" not in plan and "Index Scan" in plan, plan


def test_outside_a_page_read_the_planner_keeps_its_own_settings(seeded):
    viewer, _ = _queues_of("approver@cleardesk.demo")
    _plan(viewer, "approvals", "sla")
    assert db.session.scalar(text("SHOW enable_sort")) == "on"
    assert db.session.scalar(text("SHOW enable_hashjoin")) == "on"


def test_an_error_inside_a_page_read_is_the_error_raised_and_the_planner_recovers(app):
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError) as raised:
        with queries.read_in_index_order(None):
            db.session.execute(text("SELECT 1 / 0"))
    assert "division by zero" in str(raised.value)
    db.session.rollback()
    assert db.session.scalar(text("SHOW enable_sort")) == "on"
