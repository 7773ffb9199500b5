"""Expiry: an approval nobody decides within its policy's expiry is closed as expired by the SLA
sweep, its steps cancelled and its links revoked, and the requester is told."""
from datetime import timedelta

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.models import WorkItem
from app.policy import evaluation, versions
from app.sla.jobs import refresh_sla_states
from app.types import utcnow
from app.unit_of_work import commit
from tests.approvals.conftest import run_worker
from tests.conftest import arrange
from tests.policy.conftest import admins, make_policy  # noqa: F401 (fixtures)

ROUTE = ("Everything to approvers", "amount > 0", "steps", "approver >= 0")


def _routed(tenant, make_item, requester, age_days):
    item = make_item(tenant, amount="300.00", requester=requester)
    evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [item.id])
    commit()
    arrange(db.session.get(WorkItem, item.id), created_at=utcnow() - timedelta(days=age_days))
    return item.id


def test_the_sweep_expires_approvals_past_the_policys_expiry_and_tells_the_requester(
        relaying, inbox, admins, make_policy, make_item, make_user):  # noqa: F811
    tenant, author, checker = admins
    requester = make_user("rita@x.test", [tenant], roles=("requester",), name="Rita")
    make_user("ann@x.test", [tenant], roles=("approver",))
    make_policy(tenant, author, checker, [ROUTE], expire_after_days="3")
    old = _routed(tenant, make_item, requester, age_days=4)
    young = _routed(tenant, make_item, requester, age_days=1)
    counts = refresh_sla_states()
    assert counts.get("expired") == 1
    db.session.expire_all()
    expired = db.session.get(WorkItem, old)
    assert expired.state == "expired" and expired.resolved_at is not None
    assert [s.state for s in expired.steps] == ["cancelled"]
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == old, AuditEvent.action == "item.expire")).one()
    assert event.actor_type == "system" and event.data["expire_after_days"] == 3
    assert db.session.get(WorkItem, young).state == "pending"
    assert refresh_sla_states().get("expired") is None  # once
    run_worker(relaying)
    told = [m for m in inbox.to("rita@x.test") if "expired" in m["Subject"]]
    assert len(told) == 1
    assert "Nobody decided it within the policy's time" in inbox.text(told[0])


def test_approvals_of_a_policy_without_expiry_never_expire(
        admins, make_policy, make_item, make_user):  # noqa: F811
    tenant, author, checker = admins
    requester = make_user("rita@x.test", [tenant], roles=("requester",))
    make_user("ann@x.test", [tenant], roles=("approver",))
    make_policy(tenant, author, checker, [ROUTE])
    item_id = _routed(tenant, make_item, requester, age_days=400)
    refresh_sla_states()
    db.session.expire_all()
    assert db.session.get(WorkItem, item_id).state == "pending"


def test_the_expiry_is_a_whole_number_of_days_in_the_settings(admins):  # noqa: F811
    import pytest

    from app.errors import ValidationFailed
    from tests.conftest import actor

    tenant, author, _checker = admins
    draft = versions.create_draft(actor(author), tenant.id)
    with pytest.raises(ValidationFailed) as refused:
        versions.save_settings(actor(author), tenant.id, draft.id, max_auto_amount="",
                               daily_auto_count="", daily_auto_amount="", qa_sample_pct="0",
                               qa_role="manager", fallback_steps_text="approver",
                               expire_after_days="soon")
    assert refused.value.fields["expire_after_days"] == "must be a whole number"
