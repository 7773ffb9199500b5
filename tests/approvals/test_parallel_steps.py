"""Parallel approval steps: all, any one, or M of N members of a group (or holders of a role)
decide one step by their votes, under segregation of duties, with the policy routing them."""
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.admin.groups import create_group
from app.approvals.models import ApprovalStepMember, ApprovalVote
from app.approvals.services import approve_step, reject_approval
from app.audit.models import AuditEvent
from app.errors import Conflict, PermissionDenied, SegregationOfDuties
from app.extensions import db
from app.models import Membership, WorkItem
from app.policy import evaluation
from app.types import utcnow
from app.unit_of_work import commit
from tests.conftest import DATABASE, SYSTEM, actor
from tests.policy.conftest import make_policy  # noqa: F401 (the fixture)

EMEA = "Regional controllers EMEA"


@pytest.fixture
def org(make_tenant, make_user):
    tenant = make_tenant()
    people = {
        "author": make_user("author@x.test", [tenant], roles=("admin",), limit="0"),
        "checker": make_user("checker@x.test", [tenant], roles=("admin",), limit="0"),
        "requester": make_user("req@x.test", [tenant], roles=("requester", "approver"),
                               limit="1000000"),
        "anna": make_user("anna@x.test", [tenant], roles=("approver",), name="Anna"),
        "ben": make_user("ben@x.test", [tenant], roles=("approver",), name="Ben"),
        "cleo": make_user("cleo@x.test", [tenant], roles=("manager",), name="Cleo"),
        "outsider": make_user("out@x.test", [tenant], roles=("approver",)),
        "manager": make_user("mgr@x.test", [tenant], roles=("manager",), limit="1000000"),
    }
    group = create_group(SYSTEM, tenant, name=EMEA, member_ids=[
        people["anna"].id, people["ben"].id, people["cleo"].id, people["requester"].id])
    commit()
    return tenant, people, group


def _routed(org, make_policy, make_item, steps, amount="2000.00", **details):  # noqa: F811
    tenant, people, _group = org
    make_policy(tenant, people["author"], people["checker"],
                [("Parallel", "amount > 0", "steps", steps)])
    item = make_item(tenant, amount=amount, requester=people["requester"],
                     details=details or None)
    evaluation.evaluate_items(evaluation.policy_actor(tenant.id), [item.id])
    commit()
    db.session.expire_all()
    return db.session.get(WorkItem, item.id)


def _members(item):
    return set(db.session.scalars(select(ApprovalStepMember.user_id)
                                  .where(ApprovalStepMember.item_id == item.id)))


def _decide(user, item_id, how="approve"):
    if how == "approve":
        approve_step(actor(user), item_id)
    else:
        reject_approval(actor(user), item_id, reason="Not in budget")
    commit()
    db.session.expire_all()
    return db.session.get(WorkItem, item_id)


def test_two_of_a_group_opens_one_step_for_the_members_but_not_the_requester(
        org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'2 of group "{EMEA}"')
    [step] = item.steps
    assert step.state == "open" and step.need == "2" and step.quorum == 2
    assert _members(item) == {people["anna"].id, people["ben"].id, people["cleo"].id}
    with pytest.raises(SegregationOfDuties):
        approve_step(actor(people["requester"]), item.id)
    db.session.rollback()
    with pytest.raises(PermissionDenied, match=EMEA):
        approve_step(actor(people["outsider"]), item.id)


def test_the_vote_that_meets_the_quorum_approves_and_each_vote_is_audited(
        org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'2 of group "{EMEA}"')
    item = _decide(people["anna"], item.id)
    assert item.state == "pending" and item.steps[0].state == "open"
    [vote_event] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "approval.voted")).all()
    assert vote_event.data["approvals"] == 1 and vote_event.data["needed"] == 2
    item = _decide(people["cleo"], item.id)
    assert item.state == "approved" and item.steps[0].state == "approved"
    assert item.steps[0].decided_by_id == people["cleo"].id
    approve = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "item.approve")).one()
    assert approve.data["approvals"] == 2


def test_no_one_counts_twice_on_one_step(org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'all of group "{EMEA}"')
    _decide(people["anna"], item.id)
    with pytest.raises(SegregationOfDuties, match="counts once"):
        approve_step(actor(people["anna"]), item.id)
    db.session.rollback()
    votes = db.session.scalar(select(func.count()).select_from(ApprovalVote)
                              .where(ApprovalVote.item_id == item.id))
    assert votes == 1


def test_all_of_a_group_needs_every_member(org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'all of group "{EMEA}"')
    assert item.steps[0].quorum == 3
    for name in ("anna", "ben"):
        item = _decide(people[name], item.id)
        assert item.state == "pending"
    assert _decide(people["cleo"], item.id).state == "approved"


def test_any_one_member_of_a_group_decides_the_step(org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'any of group "{EMEA}"')
    assert _decide(people["ben"], item.id).state == "approved"


def test_a_members_rejection_rejects_by_default(org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'2 of group "{EMEA}"')
    _decide(people["anna"], item.id)
    item = _decide(people["ben"], item.id, "reject")
    assert item.state == "rejected" and item.steps[0].state == "rejected"


def test_a_rejection_waits_while_the_quorum_can_still_be_met_when_the_step_says_so(
        org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item,
                   f'2 of group "{EMEA}", reject when quorum lost')
    assert item.steps[0].reject_when == "quorum"
    item = _decide(people["anna"], item.id, "reject")
    assert item.state == "pending"  # Ben and Cleo can still make two
    item = _decide(people["ben"], item.id, "reject")
    assert item.state == "rejected"  # only Cleo is left: two can no longer approve


def test_a_member_who_approved_an_earlier_step_does_not_vote_on_a_later_one(
        org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item,
                   f'approver >= 0\n2 of group "{EMEA}"')
    item = _decide(people["anna"], item.id)
    second = item.steps[1]
    assert second.state == "open" and second.quorum == 2
    assert _members(item) == {people["ben"].id, people["cleo"].id}
    with pytest.raises(PermissionDenied):
        approve_step(actor(people["anna"]), item.id)
    db.session.rollback()
    _decide(people["ben"], item.id)
    assert _decide(people["cleo"], item.id).state == "approved"


def test_an_approver_of_a_parallel_step_does_not_decide_the_next_step(
        org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'any of group "{EMEA}"\nmanager >= 0')
    item = _decide(people["cleo"], item.id)
    assert item.steps[1].state == "open"
    with pytest.raises(SegregationOfDuties, match="step 1"):
        approve_step(actor(people["cleo"]), item.id)
    db.session.rollback()
    assert _decide(people["manager"], item.id).state == "approved"


def test_two_of_a_role_counts_distinct_holders(org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, "2 of manager >= 0")
    assert _members(item) == {people["cleo"].id, people["manager"].id}
    item = _decide(people["manager"], item.id)
    assert item.state == "pending"
    assert _decide(people["cleo"], item.id).state == "approved"


def test_an_out_of_office_members_delegate_votes_on_their_behalf(
        org, make_policy, make_item):
    tenant, people, _group = org
    away = db.session.scalars(select(Membership).where(
        Membership.tenant_id == tenant.id, Membership.user_id == people["anna"].id)).one()
    today = utcnow().date()
    away.delegate_id, away.delegate_from = people["outsider"].id, today - timedelta(days=1)
    away.delegate_until = today + timedelta(days=3)
    commit()
    item = _routed(org, make_policy, make_item, f'2 of group "{EMEA}"')
    _decide(people["outsider"], item.id)
    vote = db.session.scalars(select(ApprovalVote).where(ApprovalVote.item_id == item.id)).one()
    assert (vote.member_id, vote.decided_by_id) == (people["anna"].id, people["outsider"].id)
    with pytest.raises(SegregationOfDuties):
        approve_step(actor(people["anna"]), item.id)  # her vote is cast
    db.session.rollback()


def test_a_page_read_before_another_members_vote_is_told_to_reload(
        org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'all of group "{EMEA}"')
    version = item.version
    _decide(people["anna"], item.id)
    with pytest.raises(Conflict):
        approve_step(actor(people["ben"]), item.id, expected_version=version)


def _race(app, calls):
    """Each call in its own thread, app context and database connection; every thread has
    read the item before any decides."""
    import threading

    barrier = threading.Barrier(len(calls), timeout=20)
    results = [None] * len(calls)

    def run(index, call):
        with app.app_context():
            try:
                call(barrier)
                commit()
                results[index] = "ok"
            except (Conflict, SegregationOfDuties) as refused:
                db.session.rollback()
                results[index] = refused
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _racer(user_id, item_id, how="approve"):
    from app.models import User
    from app.work.queries import get_item

    def call(barrier):
        user = db.session.get(User, user_id)
        get_item(actor(user), item_id)  # the item as each member's page shows it
        barrier.wait()
        if how == "approve":
            approve_step(actor(user), item_id)
        else:
            reject_approval(actor(user), item_id, reason="No")
    return call


postgres_only = pytest.mark.skipif(
    DATABASE != "postgresql",
    reason="SQLite runs one writer at a time: the race is PostgreSQL's")


@postgres_only
def test_members_approving_at_once_count_each_vote_once_and_approve_once(
        app, org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'2 of group "{EMEA}"')
    results = _race(app, [_racer(people[n].id, item.id) for n in ("anna", "ben", "cleo")])
    db.session.expire_all()
    # Two votes meet the quorum; the third finds the item approved and is told by whom.
    assert sorted(r == "ok" for r in results) == [False, True, True], results
    loser = next(r for r in results if r != "ok")
    assert isinstance(loser, Conflict) and "Already approved by" in loser.message
    votes = db.session.scalars(select(ApprovalVote).where(ApprovalVote.item_id == item.id)).all()
    assert len(votes) == 2 and len({v.member_id for v in votes}) == 2
    item = db.session.get(WorkItem, item.id)
    assert item.state == "approved"
    approvals = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "item.approve"))
    assert approvals == 1


@postgres_only
def test_all_members_approving_at_once_each_count_and_the_last_approves(
        app, org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'all of group "{EMEA}"')
    results = _race(app, [_racer(people[n].id, item.id) for n in ("anna", "ben", "cleo")])
    assert results == ["ok", "ok", "ok"]
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "approved"
    events = db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.item_id == item.id,
        AuditEvent.action.in_(("approval.voted", "item.approve")))).all()
    assert sorted(events) == ["approval.voted", "approval.voted", "item.approve"]


@postgres_only
def test_an_approval_and_a_rejection_at_once_have_one_outcome(
        app, org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'any of group "{EMEA}"')
    results = _race(app, [_racer(people["anna"].id, item.id),
                          _racer(people["ben"].id, item.id, "reject")])
    assert sorted(r == "ok" for r in results) == [False, True], results
    db.session.expire_all()
    item = db.session.get(WorkItem, item.id)
    finals = db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.item_id == item.id,
        AuditEvent.action.in_(("item.approve", "item.reject")))).all()
    assert finals == [f"item.{'approve' if item.state == 'approved' else 'reject'}"]
    assert db.session.scalar(select(func.count()).select_from(ApprovalVote)
                             .where(ApprovalVote.item_id == item.id)) == 1


# ---------------------------------------------------------------------------------------------
# Approvers named by a field of the item, with the fallback role.

OWNER_STEP = "owner account_owner_email else manager >= 1000"


def test_an_owner_step_is_reserved_for_the_person_the_item_names(org, make_policy, make_item):
    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, OWNER_STEP, account_owner_email="Anna@X.test")
    [step] = item.steps
    assert step.approver_id == people["anna"].id and step.source_field == "account_owner_email"
    with pytest.raises(PermissionDenied, match="assigned to Anna"):
        approve_step(actor(people["ben"]), item.id)
    db.session.rollback()
    assert _decide(people["anna"], item.id).state == "approved"


@pytest.mark.parametrize("owner", [None, "nobody@x.test", "req@x.test", "inactive"])
def test_an_owner_step_falls_back_to_its_role_when_the_owner_cannot_decide(
        org, make_policy, make_item, owner):
    tenant, people, _group = org
    if owner == "inactive":
        from app.admin.deactivation import deactivate_user

        deactivate_user(SYSTEM, tenant, people["ben"].id)
        commit()
        owner = "ben@x.test"
    details = {"account_owner_email": owner} if owner else {}
    item = _routed(org, make_policy, make_item, OWNER_STEP, **details)
    [step] = item.steps
    assert step.approver_id is None and step.role == "manager"
    assert _decide(people["manager"], item.id).state == "approved"


def test_an_out_of_office_owners_delegate_decides_for_them(org, make_policy, make_item):
    tenant, people, _group = org
    away = db.session.scalars(select(Membership).where(
        Membership.tenant_id == tenant.id, Membership.user_id == people["anna"].id)).one()
    today = utcnow().date()
    away.delegate_id, away.delegate_from = people["ben"].id, today
    away.delegate_until = today + timedelta(days=3)
    commit()
    item = _routed(org, make_policy, make_item, OWNER_STEP, account_owner_email="anna@x.test")
    item = _decide(people["ben"], item.id)
    assert item.state == "approved"
    assert item.steps[0].on_behalf_of_id == people["anna"].id


def test_an_owner_email_that_is_not_an_address_is_refused(org, make_item):
    from app.errors import ValidationFailed

    tenant, people, _group = org
    with pytest.raises(ValidationFailed):
        make_item(tenant, details={"budget_holder_email": "the CFO"})


# ---------------------------------------------------------------------------------------------
# Email links: a link of its own for each member; a link of a step whose quorum is met is
# refused with that reason.


def test_each_member_is_mailed_their_own_link_and_a_link_after_the_quorum_is_refused(
        relaying, inbox, client, org, make_policy, make_item):
    from urllib.parse import urlsplit

    from tests.approvals.conftest import run_worker
    from tests.conftest import csrf_from

    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'2 of group "{EMEA}"')
    run_worker(relaying)
    links = {}
    for name in ("anna", "ben", "cleo"):
        [message] = inbox.to(people[name].email)
        links[name] = urlsplit(inbox.link(message)).path
    assert len(set(links.values())) == 3
    assert inbox.to(people["requester"].email) == []

    def decide(name):
        page = client.get(links[name])
        return client.post(links[name], data={"action": "approve",
                                              "csrf_token": csrf_from(page.text)})

    assert decide("anna").status_code == 200
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "pending"
    assert decide("ben").status_code == 200
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "approved"
    late = client.get(links["cleo"])
    assert late.status_code == 409
    assert "already has the approvals it needs" in late.text
    assert "quorum was met when Ben approved" in late.text
    votes = db.session.scalars(select(ApprovalVote.member_id)
                               .where(ApprovalVote.item_id == item.id)).all()
    assert sorted(votes) == sorted([people["anna"].id, people["ben"].id])


def test_the_item_page_and_the_api_show_who_decided_and_who_is_still_needed(
        client, auth, org, make_policy, make_item):
    from app.api.schemas import item_json

    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'all of group "{EMEA}"')
    _decide(people["anna"], item.id)
    auth.login(people["manager"].email)
    page = client.get(f"/items/{item.id}").text
    assert f"Needs all of the members of {EMEA}" in page
    assert "Anna approved" in page and "voted on a parallel step" in page
    assert "2 more approvals needed" in page and "still to decide: Ben, Cleo" in page
    [step] = item_json(db.session.get(WorkItem, item.id), [])["steps"]
    assert step["parallel"] and step["need"] == "all" and step["quorum"] == 3
    assert sorted(step["members"]) == ["anna@x.test", "ben@x.test", "cleo@x.test"]
    assert step["waiting_on"] == ["ben@x.test", "cleo@x.test"]
    assert [(v["member"], v["decision"]) for v in step["votes"]] == [("anna@x.test", "approve")]


def test_the_message_after_a_vote_says_what_the_step_still_needs(org, make_policy, make_item):
    from app.approvals.wording import outcome_message
    from app.work.actions import perform

    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'all of group "{EMEA}", reject when quorum lost')
    ref = item.external_ref
    done = perform(actor(people["anna"]), item.id, "approve")
    assert outcome_message(done, "approve") == (
        f"Your approval of {ref} is counted — step 1 needs 2 more approvals")
    commit()
    # All three must approve: one rejection already makes the quorum impossible.
    done = perform(actor(people["ben"]), item.id, "reject", comment="No budget")
    assert done.state == "rejected" and outcome_message(done, "reject") == f"Rejected {ref}"


def test_the_approvals_queue_lists_a_parallel_step_for_members_who_have_not_voted(
        org, make_policy, make_item):
    from app.queues.queries import decidable_now, waiting_on
    from app.work.queries import scoped_items

    tenant, people, _group = org
    item = _routed(org, make_policy, make_item, f'2 of group "{EMEA}"\nmanager >= 0')

    def decidable(user):
        who = actor(user)
        condition = decidable_now(who, {tenant.id: who.roles_in(tenant.id)}, approvals_only=True)
        return item.id in db.session.scalars(scoped_items(who).with_only_columns(
            WorkItem.id).where(condition)).all()

    assert decidable(people["anna"]) and decidable(people["cleo"])
    assert not decidable(people["outsider"])  # an approver, but not of the group
    assert item.id in waiting_on(actor(people["anna"]), tenant.id)
    _decide(people["anna"], item.id)
    assert not decidable(people["anna"]) and decidable(people["ben"])
    assert item.id not in waiting_on(actor(people["anna"]), tenant.id)
    _decide(people["cleo"], item.id)  # the step is approved; the manager step opens
    assert decidable(people["manager"])
    assert not decidable(people["cleo"])  # she is a manager, but approved step 1


def test_each_member_who_has_not_voted_is_reminded_once_and_gets_the_digest(
        inbox, org, make_policy, make_item):
    from datetime import UTC, datetime

    from app.approvals.jobs import send_daily_digests, send_sla_reminders
    from app.work.calendar import calendar_for
    from tests.conftest import arrange

    tenant, people, _group = org
    now = datetime(2026, 3, 10, 20, 0, tzinfo=UTC)  # a Tuesday, 16:00 in New York
    item = _routed(org, make_policy, make_item, f'2 of group "{EMEA}"')
    _decide(people["anna"], item.id)
    arrange(db.session.get(WorkItem, item.id),
            sla_due_at=calendar_for(tenant).add(now, timedelta(hours=1)))
    assert send_sla_reminders(now=now) == 2
    assert send_sla_reminders(now=now) == 0
    reminded = sorted(m["To"] for m in inbox.messages if m["Subject"].startswith("Reminder"))
    assert reminded == ["Ben <ben@x.test>", "Cleo <cleo@x.test>"]
    assert send_daily_digests(now=now) == 2
    digests = sorted(m["To"] for m in inbox.messages if "waiting for you" in m["Subject"])
    assert digests == ["Ben <ben@x.test>", "Cleo <cleo@x.test>"]


def test_a_group_step_with_fewer_who_may_decide_than_it_needs_goes_to_one_manager_and_says_why(
        org, make_policy, make_item):
    from app.approvals.services import named_approver_id

    tenant, people, _group = org
    # Anna, Ben and Cleo may decide (the requester may not): three, where four are needed.
    item = _routed(org, make_policy, make_item, f'4 of group "{EMEA}"')
    [step] = item.steps
    assert not step.parallel and step.role == "manager" and _members(item) == set()
    assert named_approver_id(step) in {people["manager"].id, people["cleo"].id}
    [event] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "approval.step_fell_back")).all()
    assert event.data["eligible"] == 3 and event.data["needed"] == 4
    assert event.data["why"] == (f"3 of the members of {EMEA} may decide it and it needs 4: "
                                 "it goes to one manager instead")
    _decide(people["manager"], item.id)
    assert db.session.get(WorkItem, item.id).state == "approved"


def test_a_short_group_step_opening_later_falls_back_to_the_role_the_policy_names(
        org, make_policy, make_item):
    from app.approvals.services import named_approver_id

    tenant, people, _group = org
    item = _routed(org, make_policy, make_item,
                   f'manager >= 0\n4 of group "{EMEA}" else approver')
    item = _decide(people["manager"], item.id)
    step = item.steps[1]
    assert step.state == "open" and not step.parallel and step.role == "approver"
    # One approver (never the requester, who is one too).
    assert named_approver_id(step) in {people[n].id for n in ("anna", "ben", "outsider")}
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "approval.step_fell_back")) == 1
