"""The SLA clock on real items: paused while waiting outside, and a sweep that marks and
escalates breaches exactly once."""
from datetime import timedelta

from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.exceptions.services import act_on_exception
from app.extensions import db
from app.outbox.models import OutboxMessage
from app.work.calendar import calendar_for
from app.sla.jobs import refresh_sla_states
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import actor, arrange


def test_waiting_on_the_customer_moves_the_due_time_by_exactly_the_business_time_waited(
        make_tenant, make_user, make_item):
    tenant = make_tenant()
    analyst = make_user("ana@x.test", [tenant], roles=("analyst",))
    item = make_item(tenant, kind="billing_exception")
    act_on_exception(actor(analyst), item.id, "wait_on_customer", comment="Asked for the PO")
    commit()
    assert item.sla_state == "paused" and item.sla_paused_at is not None
    due_before = item.sla_due_at
    # Three days of waiting (moved back in time rather than slept through).
    arrange(item, sla_paused_at=item.sla_paused_at - timedelta(days=3))
    paused_at = item.sla_paused_at
    act_on_exception(actor(analyst), item.id, "investigate")
    commit()
    db.session.refresh(item)
    calendar = calendar_for(tenant)
    waited = calendar.between(paused_at, item.last_action_at)
    assert waited > timedelta(0)
    assert calendar.between(due_before, item.sla_due_at) == waited
    assert item.sla_paused_at is None and item.sla_state in ("on_track", "at_risk", "breached")


def _events(action):
    return db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == action))


def test_the_sweep_marks_breaches_and_escalates_each_once(make_tenant, make_item):
    tenant = make_tenant()
    late = make_item(tenant, kind="settlement_dispute")
    fine = make_item(tenant, kind="settlement_dispute")
    paused = make_item(tenant, kind="billing_exception")
    arrange(late, sla_due_at=utcnow() - timedelta(hours=1))
    arrange(paused, sla_due_at=utcnow() - timedelta(hours=1), state="waiting_on_customer",
            sla_state="paused", sla_paused_at=utcnow())
    version = late.version
    assert refresh_sla_states() == {"breached": 1}
    db.session.expire_all()
    assert (late.sla_state, fine.sla_state, paused.sla_state) == ("breached", "on_track", "paused")
    assert late.version == version  # derived state: open forms on the item stay valid
    assert _events("item.sla_breached") == 1
    # Its managers hear of it in the sweep's one digest.
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)
                             .where(OutboxMessage.topic == "sla.digest")) == 1
    assert refresh_sla_states() == {}  # running it again changes nothing more
    assert _events("item.sla_breached") == 1
