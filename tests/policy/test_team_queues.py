"""Named team queues: an item the policy routes to queue "X" is in team queue "X" in the queue
pages (listed, counted, filterable, keyset-paged) for the people who work its kind, claimable
and decidable there, with its approval steps; rules for billing exceptions and settlement
disputes (team queue, assignee, priority; never auto-approval)."""
import re
from decimal import Decimal
from urllib.parse import quote

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.audit.services import verify_all
from app.errors import ValidationFailed
from app.extensions import db
from app.models import WorkItem
from app.policy import evaluation, versions
from app.policy.models import PolicyDecision
from app.queues.filters import QueueFilters
from app.queues.queries import queue_items
from app.unit_of_work import commit
from tests.conftest import actor, csrf_from

DEAL_DESK = {"name": "Non-standard terms", "condition": 'subtype == "non_standard_terms"',
             "outcome": "queue", "queue": "Deal desk",
             "steps_text": "approver >= 1000\nmanager >= amount"}
LEAKAGE = {"name": "Large leakage", "kind": "billing_exception",
           "condition": "amount_at_risk > 20000", "outcome": "queue",
           "queue": "Revenue assurance", "set_priority": "urgent"}
DISPUTES = {"name": "Big deltas to analysts", "kind": "settlement_dispute",
            "condition": "delta > 5000", "outcome": "assign", "assign_role": "analyst",
            "set_priority": "high"}


@pytest.fixture
def team(admins, make_user):
    tenant, author, checker = admins
    return {
        "requester": make_user("req@example.com", [tenant], roles=("requester",)),
        "approver": make_user("ann@example.com", [tenant], roles=("approver",), limit="100000"),
        "manager": make_user("max@example.com", [tenant], roles=("manager",), limit="1000000"),
        "analyst": make_user("ava@example.com", [tenant], roles=("analyst",)),
        "analyst2": make_user("abe@example.com", [tenant], roles=("analyst",)),
    }


def _evaluate(tenant, *items):
    counts = evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [i.id for i in items])
    commit()
    db.session.expire_all()
    return counts


@pytest.fixture
def routed(admins, team, make_policy, make_item):
    """route(rules, *items): activate a policy of `rules`, make the items (dicts of make_item's
    keywords; approvals are the team requester's) and let the policy evaluate them. Answers
    the evaluation's counts and the items as they are after it."""
    tenant, author, checker = admins

    def route(rules, *specs):
        make_policy(tenant, author, checker, rules)
        items = [make_item(tenant, **({"requester": team["requester"]}
                                      if spec.get("kind", "approval") == "approval" else {}),
                           **spec) for spec in specs]
        counts = _evaluate(tenant, *items)
        return counts, [db.session.get(WorkItem, i.id) for i in items]

    return route


def _ids(html):
    return [int(i) for i in re.findall(r'id="row-(\d+)"', html)]


def _deal(amount="8000.00"):
    return {"amount": amount, "subtype": "non_standard_terms"}


LEAK = {"kind": "billing_exception", "amount": "40000.00", "amount_at_risk": "30000.00"}
BIG_DELTA = {"kind": "settlement_dispute", "amount": "20000.00", "calculated_amount": "1000.00"}


def test_a_queue_rule_puts_the_item_in_that_team_queue_with_the_rule_steps(routed):
    counts, [item] = routed([DEAL_DESK], _deal())
    assert counts == {"queued": 1, "skipped": 0}
    assert item.team_queue == "Deal desk" and item.state == "pending"
    assert [(s.role, s.min_limit, s.state) for s in item.steps] == [
        ("approver", Decimal("1000.00"), "open"), ("manager", Decimal("8000.00"), "waiting")]
    receipt = db.session.get(PolicyDecision, item.id)
    assert (receipt.outcome, receipt.queue) == ("queued", "Deal desk")


def test_the_team_queue_page_lists_counts_and_opens_its_items_for_the_kind_workers(
        routed, client, auth):
    _counts, [queued, other] = routed([DEAL_DESK], _deal(), {"amount": "700.00"})
    auth.login("ann@example.com")
    page = client.get("/queues/@Deal desk")
    assert page.status_code == 200
    assert "<h1>Deal desk" in page.text and _ids(page.text) == [queued.id]
    assert re.search(r'data-queue="@Deal desk">1<', page.text)  # in the nav, counted
    # The row elsewhere names its team queue, and the filter finds it.
    approvals = client.get("/queues/approvals").text
    assert set(_ids(approvals)) == {queued.id, other.id}
    assert re.search(rf'id="row-{queued.id}".*?queue-tag[^>]*>Deal desk<', approvals, re.S)
    filtered = client.get("/queues/approvals?team_queue=" + quote("Deal desk")).text
    assert _ids(filtered) == [queued.id]
    detail = client.get(f"/items/{queued.id}").text
    assert "Team queue" in detail and "Deal desk" in detail
    # An analyst works no approvals: the queue is not theirs (and does not say it exists).
    auth.login("ava@example.com")
    assert client.get("/queues/@Deal desk").status_code == 404
    assert "Deal desk" not in client.get("/queues/mine").text


def test_an_item_is_claimed_and_its_steps_decided_from_the_team_queue(
        routed, team, client, auth):
    _counts, [item] = routed([DEAL_DESK], _deal())
    queue = "@Deal desk"
    auth.login("ann@example.com")
    token = auth.csrf("/queues/" + quote(queue))
    claimed = client.post("/queues/" + quote(queue) + "/bulk",
                          data={"csrf_token": token, "action": "claim",
                                "selected_ids": [str(item.id)], "queue": queue, "filters": ""})
    assert claimed.status_code == 303
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).assignee_id == team["approver"].id
    response = client.post(f"/items/{item.id}/act",
                           headers={"HX-Request": "true", "X-CSRFToken": token},
                           data={"action": "approve", "comment": "terms ok", "queue": queue,
                                 "filters": ""})
    assert response.status_code == 200
    # The row stays in the team queue (its manager step is open now), with fresh counts.
    assert f'id="row-{item.id}"' in response.text and 'data-queue="@Deal desk">1<' in response.text
    db.session.expire_all()
    item = db.session.get(WorkItem, item.id)
    assert [s.state for s in item.steps] == ["approved", "open"]
    auth.login("max@example.com")
    token = auth.csrf("/queues/" + quote(queue))
    client.post(f"/items/{item.id}/act", headers={"HX-Request": "true", "X-CSRFToken": token},
                data={"action": "approve", "comment": "", "queue": queue, "filters": ""})
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "approved"
    assert "Deal desk" in client.get("/queues/" + quote(queue)).text
    assert _ids(client.get("/queues/" + quote(queue)).text) == []  # decided: out of the queue


def test_the_team_queue_pages_by_keyset_in_each_sort_order(admins, team, routed):
    tenant = admins[0]
    _counts, items = routed([DEAL_DESK], *(_deal(f"{2000 + n * 10}.00") for n in range(5)))
    viewer = actor(team["approver"])
    for sort in ("sla", "amount", "age"):
        filters = QueueFilters(sort=sort, tenant_ids=frozenset({tenant.id}))
        seen, cursor = [], None
        while True:
            page = queue_items(viewer, "@Deal desk", None, filters, cursor, limit=2)
            seen += [r.id for r in page]
            if len(page) < 2:
                break
            cursor = filters.cursor_for(page[-1])
        assert sorted(seen) == sorted(i.id for i in items) and len(seen) == 5
        if sort == "amount":
            assert seen == [i.id for i in reversed(items)]


def test_a_queue_name_is_checked_and_the_qa_queue_name_is_the_policy_own(admins):
    tenant, author, _checker = admins
    draft = versions.create_draft(actor(author), tenant.id)
    for name, problem in (("QA Sample", "QA sample's own queue"), ("", "name the queue"),
                          ("a/b", "letters, digits")):
        with pytest.raises(ValidationFailed) as refused:
            versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="Q",
                               condition="amount > 0", outcome="queue", queue=name)
        assert problem in refused.value.fields["queue"]


@pytest.mark.parametrize("kind", ["billing_exception", "settlement_dispute"])
def test_an_exception_rule_that_auto_approves_is_refused_with_the_reason(admins, kind):
    tenant, author, _checker = admins
    draft = versions.create_draft(actor(author), tenant.id)
    with pytest.raises(ValidationFailed) as refused:
        versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="Wave through",
                           kind=kind, condition="amount < 100", outcome="auto_approve")
    assert "never auto-approved" in refused.value.fields["outcome"]
    assert "never auto-approved" in refused.value.message
    with pytest.raises(ValidationFailed) as steps:
        versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="Chain",
                           kind=kind, condition="amount < 100", outcome="steps",
                           steps_text="approver >= 0")
    assert "for approvals" in steps.value.fields["outcome"]


def test_an_exception_rule_sees_its_kind_fields_and_not_an_approval_field(admins):
    tenant, author, _checker = admins
    draft = versions.create_draft(actor(author), tenant.id)
    with pytest.raises(ValidationFailed) as refused:
        versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="Discounts?",
                           kind="billing_exception", condition="discount_pct > 10",
                           outcome="prioritize", set_priority="high")
    assert refused.value.fields["condition"].startswith(
        "Unknown field “discount_pct” of billing exceptions.")
    with pytest.raises(ValidationFailed) as approval_field:
        versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="Delta?",
                           condition="delta > 10", outcome="auto_approve")
    assert "Unknown field “delta”" in approval_field.value.fields["condition"]
    with pytest.raises(ValidationFailed) as no_priority:
        versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name="P",
                           kind="settlement_dispute", condition="delta > 10",
                           outcome="prioritize")
    assert "choose the priority" in no_priority.value.fields["set_priority"]


def test_exception_and_dispute_rules_route_set_priority_and_assign(
        admins, team, make_policy, make_item):
    tenant, author, checker = admins
    policy = make_policy(tenant, author, checker, [LEAKAGE, DISPUTES])
    leak = make_item(tenant, kind="billing_exception", amount="40000.00",
                     amount_at_risk="30000.00")
    small = make_item(tenant, kind="billing_exception", amount="900.00")
    dispute = make_item(tenant, kind="settlement_dispute", amount="20000.00",
                        calculated_amount="12000.00")
    due_before = leak.sla_due_at
    counts = _evaluate(tenant, leak, small, dispute)
    assert counts == {"queued": 1, "unrouted": 1, "assigned": 1, "skipped": 0}
    leak, small, dispute = (db.session.get(WorkItem, i.id) for i in (leak, small, dispute))
    assert (leak.team_queue, leak.priority, leak.state) == ("Revenue assurance", "urgent", "open")
    assert leak.sla_due_at < due_before  # urgent: due sooner
    assert leak.policy_version == policy.version
    assert small.team_queue is None and small.priority == "normal" and small.version == 1
    assert dispute.assignee_id in {team["analyst"].id, team["analyst2"].id}
    assert dispute.priority == "high" and dispute.state == "open"
    receipt = db.session.get(PolicyDecision, dispute.id)
    assert (receipt.outcome, receipt.assign_role, receipt.assignee_id, receipt.priority) == (
        "assigned", "analyst", dispute.assignee_id, "high")
    assert receipt.inputs["delta"] == "8000.00"
    [event] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == leak.id, AuditEvent.action == "policy.routed")).all()
    assert event.actor_type == "policy" and event.data["queue"] == "Revenue assurance"
    assert event.data["priority"] == {"from": "normal", "to": "urgent"}
    assert all(r.ok for r in verify_all())


def test_exceptions_created_in_a_batch_are_held_and_routed_as_single_ones_are(
        admins, team, make_policy):
    from app.work.services import create_items

    tenant, author, checker = admins
    policy = make_policy(tenant, author, checker, [LEAKAGE])
    rows = [{"kind": "billing_exception", "subtype": "payment_failed", "title": f"Leak {n}",
             "external_ref": f"EX-{n}", "source_system": "billing", "counterparty": "Acme",
             "amount": amount, "amount_at_risk": amount}
            for n, amount in enumerate(("40000.00", "900.00"))]
    ids, _existing = create_items(actor(team["analyst"]), tenant.id, rows)
    commit()
    receipts = [db.session.get(PolicyDecision, i) for i in ids]
    assert all(r is not None and r.outcome is None for r in receipts)  # waiting, as one by one
    created = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "item.created", AuditEvent.item_id.in_(ids))).all()
    assert {e.data["awaiting_policy_version"] for e in created} == {policy.version}
    counts = _evaluate(tenant, *(db.session.get(WorkItem, i) for i in ids))
    assert {outcome: n for outcome, n in counts.items() if n} == {"queued": 1, "unrouted": 1}
    leak, small = (db.session.get(WorkItem, i) for i in ids)
    assert (leak.team_queue, leak.priority) == ("Revenue assurance", "urgent")
    assert small.team_queue is None


def test_assignment_goes_to_the_least_loaded_holder_of_the_role(team, routed):
    _counts, disputes = routed([DISPUTES], *[BIG_DELTA] * 4)
    assignees = [d.assignee_id for d in disputes]
    assert sorted(assignees) == sorted([team["analyst"].id] * 2 + [team["analyst2"].id] * 2)


def test_one_batch_counts_the_open_work_people_hold_and_what_it_assigns_itself(
        admins, team, make_item, routed):
    """Ava already holds three open items: a batch of five goes three to Abe first, then
    alternates from the tie (to the lower id first), as one-by-one evaluation would."""
    from app.work.services import claim_item

    tenant, _author, _checker = admins
    for _ in range(3):
        held = make_item(tenant, kind="billing_exception", amount="100.00")
        claim_item(actor(team["analyst"]), held.id)
    commit()
    _counts, disputes = routed([DISPUTES], *[BIG_DELTA] * 5)
    assert [d.assignee_id for d in disputes] == [team["analyst2"].id] * 3 + [
        team["analyst"].id, team["analyst2"].id]


def test_an_exception_already_claimed_is_left_to_its_person(
        admins, team, make_policy, make_item):
    from app.work.services import claim_item

    tenant, author, checker = admins
    make_policy(tenant, author, checker, [LEAKAGE])
    leak = make_item(tenant, **LEAK)
    claim_item(actor(team["analyst"]), leak.id)
    commit()
    assert _evaluate(tenant, leak) == {"skipped": 1}
    leak = db.session.get(WorkItem, leak.id)
    assert leak.team_queue is None and leak.assignee_id == team["analyst"].id


def test_exceptions_of_a_tenant_whose_policy_has_no_rules_for_them_are_not_held(
        admins, make_policy, make_item):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [DEAL_DESK])
    item = make_item(tenant, kind="billing_exception", amount="40000.00")
    assert db.session.get(PolicyDecision, item.id) is None


def test_an_exception_team_queue_is_worked_by_analysts_not_approvers(routed, client, auth):
    _counts, [leak] = routed([LEAKAGE], LEAK)
    auth.login("ava@example.com")
    page = client.get("/queues/" + quote("@Revenue assurance"))
    assert page.status_code == 200 and _ids(page.text) == [leak.id]
    token = csrf_from(page.text)
    response = client.post(f"/items/{leak.id}/act",
                           headers={"HX-Request": "true", "X-CSRFToken": token},
                           data={"action": "investigate", "comment": "",
                                 "queue": "@Revenue assurance", "filters": ""})
    assert response.status_code == 200
    db.session.expire_all()
    assert db.session.get(WorkItem, leak.id).state == "investigating"
    auth.login("ann@example.com")
    assert client.get("/queues/" + quote("@Revenue assurance")).status_code == 404


def test_a_team_queue_page_is_one_ordered_scan_of_its_own_index(admins, team, routed):
    """The team queue's keyset query can read its partial index in order and stop after a
    page (the planner prefers it once the queue is large; on a few rows every ordered index
    costs the same, so on PostgreSQL the others are dropped inside the test's transaction and
    sorting is forbidden, to see that the team queue's own index answers the query)."""
    from sqlalchemy import text

    from app.queues.queries import _base
    from app.models import WorkItem

    tenant = admins[0]
    routed([DEAL_DESK], *(_deal(f"{2000 + n}.00") for n in range(3)))
    viewer = actor(team["approver"])
    dialect = db.session.get_bind().dialect.name
    for sort, index in (("sla", "ix_work_items_team_queue_sla"),
                        ("amount", "ix_work_items_team_queue_amount"),
                        ("age", "ix_work_items_team_queue_created")):
        filters = QueueFilters(sort=sort, tenant_ids=frozenset({tenant.id}))
        first = queue_items(viewer, "@Deal desk", None, filters, None, limit=1)
        query = (_base(viewer, "@Deal desk", None)
                 .where(*filters.conditions(viewer.user_id),
                        *filters.after(filters.cursor_for(first[0])))
                 .with_only_columns(WorkItem.id).order_by(*filters.order_by()).limit(50))
        sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
        if dialect == "postgresql":
            for name in db.session.execute(text(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'work_items' "
                    "AND indexname LIKE 'ix_work_items_%' "
                    "AND indexname NOT LIKE 'ix_work_items_team_queue_%'")).scalars():
                db.session.execute(text(f'DROP INDEX "{name}"'))
            db.session.execute(text("SET LOCAL enable_sort = off"))
            db.session.execute(text("SET LOCAL enable_bitmapscan = off"))
            plan = "\n".join(db.session.execute(text("EXPLAIN " + sql)).scalars())
        else:
            plan = "\n".join(str(r[-1]) for r in db.session.execute(
                text("EXPLAIN QUERY PLAN " + sql)))
            if index not in plan:  # SQLite may pick another index; it must not sort then
                assert "TEMP B-TREE" not in plan, plan
                continue
        assert index in plan, plan
        assert "Sort" not in plan.replace("Sort Key", ""), plan
    db.session.rollback()


def test_no_qa_queue_where_no_version_samples(admins, team, make_policy, client, auth):
    tenant, author, checker = admins
    make_policy(tenant, author, checker, [DEAL_DESK], qa_sample_pct="0")
    auth.login("max@example.com")
    page = client.get("/queues/mine").text
    assert "@Deal desk" in page and "QA sample" not in page
    assert client.get("/queues/" + quote("@QA sample")).status_code == 404
