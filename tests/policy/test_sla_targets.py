"""SLA targets come from the tenant's policy in force, with the defaults where it is silent."""
from datetime import timedelta

from app.policy.models import PolicyVersion
from app.work.calendar import calendar_for
from app.work.sla_clock import DEFAULT_TARGETS, sla_target
from app.unit_of_work import commit


def test_the_policy_in_force_sets_sla_targets_per_kind_and_priority(admins, make_policy,
                                                                    make_item):
    tenant, author, checker = admins
    assert sla_target("approval", "normal", tenant) == DEFAULT_TARGETS["approval"]
    make_policy(tenant, author, checker, [],
                sla_targets={"approval": {"normal": 2, "urgent": 0.5},
                             "billing_exception": {"high": 6}})
    commit()  # a new transaction reads the new policy
    assert sla_target("approval", "normal", tenant) == timedelta(hours=2)
    assert sla_target("approval", "urgent", tenant) == timedelta(minutes=30)
    assert sla_target("billing_exception", "high", tenant) == timedelta(hours=6)
    # Not named by the policy: the default for the kind and priority.
    assert sla_target("settlement_dispute", "normal", tenant) == DEFAULT_TARGETS[
        "settlement_dispute"]
    item = make_item(tenant, kind="billing_exception", priority="high")
    assert item.sla_due_at == calendar_for(tenant).add(item.created_at, timedelta(hours=6))


def test_without_a_policy_the_default_targets_apply(make_tenant):
    tenant = make_tenant()
    assert sla_target("approval", "high", tenant) == DEFAULT_TARGETS["approval"] * 0.5
    assert PolicyVersion.in_force(tenant.id) is None
