"""The command line of DESIGN §9: seed-demo, create-user, create-token and audit verify."""
import hashlib
import os
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from app import create_app
from app.audit.models import AuditEvent
from app.demo.journeys import JOURNEYS
from app.extensions import db
from app.models import ApiToken, Membership, Tenant, User, WorkItem
from app.types import utcnow
from app.unit_of_work import commit
from app.work import kinds
from app.work.services import add_comment
from app.work.states import FINAL_STATES
from tests.conftest import FreshContextClient, SYSTEM, csrf_from

# Enough items that every subtype of every kind appears (18 subtypes; the rarest kind,
# settlement disputes, gets about a fifth of the items), yet seeded in a second or two.
DEMO_ITEMS = 300

DEMO_TENANTS = {
    "northwind": ("USD", "America/New_York"),
    "contoso": ("EUR", "Europe/Berlin"),
    "fabrikam": ("GBP", "Europe/London"),
}
ALL = set(DEMO_TENANTS)
DEMO_USERS = {
    "admin@cleardesk.demo": ("admin", ALL),
    "approver@cleardesk.demo": ("approver", ALL),
    "analyst@cleardesk.demo": ("analyst", ALL),
    "manager@cleardesk.demo": ("manager", ALL),
    "auditor@cleardesk.demo": ("auditor", ALL),
    "requester@cleardesk.demo": ("requester", ALL),
    "approver.contoso@cleardesk.demo": ("approver", {"contoso"}),
}


def _sign_in(app, email: str, password: str):
    app.test_client_class = FreshContextClient
    client = app.test_client()
    page = client.get("/login")
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": csrf_from(page.text)})
    return client, response


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def _counts() -> dict:
    return {m.__name__: _count(m) for m in (Tenant, User, Membership, WorkItem, AuditEvent)}


@pytest.fixture
def seeded(runner):
    result = runner.invoke(args=["seed-demo", "--items", str(DEMO_ITEMS)])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    return result


# ---------------------------------------------------------------------------------------------
# seed-demo


def test_seed_demo_creates_the_three_demo_tenants(seeded):
    tenants = {t.slug: (t.currency, t.timezone) for t in db.session.scalars(select(Tenant))}
    assert tenants == DEMO_TENANTS


def test_seed_demo_creates_the_seven_demo_users_with_their_roles(seeded):
    users = {}
    for user in db.session.scalars(select(User)):
        roles = {m.tenant.slug: m.role_set for m in user.memberships}
        (role,) = set().union(*roles.values())
        users[user.email] = (role, set(roles))
    assert users == DEMO_USERS
    assert "Demo users" in seeded.output


def test_seed_demo_creates_the_requested_items_of_every_kind_and_subtype(seeded):
    # The bulk of the history, and the demo requester's journeys made through the write path.
    assert _count(WorkItem) == DEMO_ITEMS + len(JOURNEYS)
    present = set(db.session.execute(select(WorkItem.kind, WorkItem.subtype).distinct()))
    expected = {(kind, subtype) for kind, subtypes in kinds.SUBTYPES.items()
                for subtype in subtypes}
    assert present == expected
    per_tenant = dict(db.session.execute(
        select(Tenant.slug, func.count(WorkItem.id)).join(WorkItem.tenant)
        .group_by(Tenant.slug)).all())
    assert per_tenant == {slug: DEMO_ITEMS // 3 + (len(JOURNEYS) if slug == "northwind" else 0)
                          for slug in DEMO_TENANTS}


def test_seed_demo_shows_the_requesters_journey_in_every_state(seeded):
    requester = db.session.scalars(select(User).where(
        User.email == "requester@cleardesk.demo")).one()
    made = db.session.scalars(select(WorkItem).where(WorkItem.source_system == "cleardesk",
                                                     WorkItem.requester_id == requester.id)).all()
    states = {(i.state, i.decided_by_type) for i in made}
    assert {("info_requested", None), ("pending", None), ("approved", "user"),
            ("approved", "policy"), ("rejected", "user"), ("withdrawn", "user")} <= states
    two_step = [i for i in made if len(i.steps) == 2 and i.state == "pending"]
    assert two_step and two_step[0].current_step().role == "manager"
    # One waited past its owner's window and went up the reporting line.
    manager = db.session.scalars(select(User).where(
        User.email == "manager@cleardesk.demo")).one()
    [escalated] = [i for i in made if i.steps and i.steps[0].escalation_level]
    assert escalated.state == "pending" and escalated.steps[0].approver_id == manager.id


def test_seed_demo_requests_carry_evidence_files_a_viewer_opens(seeded):
    import filetype

    from app.work.attachments import Attachment, AttachmentBlob

    files = {a.file_name: a for a in db.session.scalars(select(Attachment))}
    assert set(files) == {"outage-credit-agreement.pdf", "november-charges.csv"}
    assert files["outage-credit-agreement.pdf"].content_type == "application/pdf"
    assert files["november-charges.csv"].content_type == "text/csv"
    pdf = db.session.get(AttachmentBlob, files["outage-credit-agreement.pdf"].sha256).data
    assert filetype.guess(bytes(pdf)).mime == "application/pdf" and b"startxref" in pdf
    added = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "attachment.added")).all()
    assert {e.data["sha256"] for e in added} == {a.sha256 for a in files.values()}


def test_seed_demo_items_carry_90_days_of_history(seeded):
    now = utcnow()
    created = list(db.session.scalars(select(WorkItem.created_at)))
    oldest, newest = min(created), max(created)
    assert timedelta(days=86) <= now - oldest <= timedelta(days=91)
    assert now - newest <= timedelta(days=5)
    assert newest <= now
    assert len({c.date() for c in created}) >= 50  # spread over the period, not bunched

    items = db.session.scalars(select(WorkItem)).all()
    closed = [i for i in items if i.state in FINAL_STATES[i.kind]]
    still_open = [i for i in items if i.state not in FINAL_STATES[i.kind]]
    assert closed and still_open
    assert all(i.resolved_at and i.created_at <= i.resolved_at <= now for i in closed)
    # Each item's history is in its tenant's audit chain: created, and claimed/decided (or
    # created and auto-approved by the policy).
    events = dict(db.session.execute(
        select(AuditEvent.item_id, func.count()).where(AuditEvent.item_id.is_not(None))
        .group_by(AuditEvent.item_id)).all())
    # (Claimed and decided by a person; the policy engine decides without claiming.)
    assert all(events.get(i.id, 0) >= (2 if i.decided_by_type == "policy" else 3)
               for i in closed)
    assert all(events.get(i.id, 0) >= 1 for i in still_open)


def test_seed_demo_history_shows_the_policy_deciding_and_routing(seeded):
    from app.policy.models import PolicyDecision, PolicyVersion

    assert {p.state for p in db.session.scalars(select(PolicyVersion))} == {"active"}
    thresholds = {p.tenant.slug: p.max_auto_amount for p in db.session.scalars(
        select(PolicyVersion))}
    assert len(set(thresholds.values())) == 3  # each tenant its own guard rails
    outcomes = dict(db.session.execute(select(PolicyDecision.outcome, func.count())
                                       .group_by(PolicyDecision.outcome)).all())
    assert outcomes["auto_approved"] > 0 and outcomes["routed"] > 0
    approvals = db.session.scalar(select(func.count()).select_from(WorkItem)
                                  .where(WorkItem.kind == "approval"))
    decided_approvals = db.session.scalar(
        select(func.count()).select_from(PolicyDecision)
        .join(WorkItem, WorkItem.id == PolicyDecision.item_id)
        .where(WorkItem.kind == "approval"))
    assert decided_approvals == approvals
    # Exceptions and disputes are routed too (never approved), into named team queues.
    assert outcomes["queued"] > 0 and outcomes.get("assigned", 0) + outcomes["prioritized"] > 0
    queues = dict(db.session.execute(
        select(WorkItem.team_queue, func.count()).where(WorkItem.team_queue.is_not(None))
        .group_by(WorkItem.team_queue)).all())
    assert {"Revenue assurance", "Partner disputes"} <= set(queues)
    assert not db.session.scalar(select(func.count()).select_from(WorkItem).where(
        WorkItem.kind != "approval", WorkItem.decided_by_type == "policy"))
    by_policy = db.session.scalars(select(AuditEvent).where(
        AuditEvent.actor_type == "policy", AuditEvent.action == "item.approve").limit(1)).one()
    assert by_policy.data["policy_version"] == 1 and by_policy.data["rule_name"]


def _open_mix(now) -> dict:
    items = db.session.scalars(select(WorkItem).where(WorkItem.resolved_at.is_(None),
                                                      WorkItem.source_system != "cleardesk"))
    mix = {"on_track": 0, "at_risk": 0, "breached": 0, "oldest_breach": timedelta(0)}
    for item in items:
        mix[item.sla_state] += 1
        if item.sla_state == "breached":
            mix["oldest_breach"] = max(mix["oldest_breach"], now - item.sla_due_at)
    return mix


def _assert_a_normal_working_day(mix: dict) -> None:
    open_items = mix["on_track"] + mix["at_risk"] + mix["breached"]
    assert open_items >= 30  # a backlog, not an empty desk
    assert open_items <= 0.1 * 3000  # one a team can clear, not a wall
    assert mix["on_track"] >= 0.6 * open_items
    assert mix["breached"] <= 0.15 * open_items
    assert mix["oldest_breach"] <= timedelta(days=21)  # late by days, never by months


def test_seed_demo_open_work_looks_like_a_normal_working_day(runner):
    result = runner.invoke(args=["seed-demo", "--items", "3000"])
    assert result.exit_code == 0, result.output

    _assert_a_normal_working_day(_open_mix(utcnow()))


@pytest.mark.parametrize("moment", [
    "2026-12-08T15:30:00+00:00",  # a Tuesday afternoon in Europe, morning in New York
    "2026-12-07T04:00:00+00:00",  # a Monday before anyone is at work
    "2026-12-12T12:00:00+00:00",  # a Saturday
    "2026-12-24T16:00:00+00:00",  # Christmas Eve, a holiday in Berlin
])
def test_seed_demo_mix_holds_whenever_it_is_seeded(app, moment):
    from datetime import datetime

    from app.demo.seed import seed_demo
    from app.work.sla_clock import sla_due_at

    now = datetime.fromisoformat(moment)
    seed_demo(items=3000, now=now)

    _assert_a_normal_working_day(_open_mix(now))
    # The due times are the tenant calendar's own (the SLA code), not made up.
    for item in db.session.scalars(select(WorkItem).limit(50)):
        assert item.sla_due_at == sla_due_at(item.tenant, item.kind, item.priority,
                                             item.created_at)
    resolved = db.session.scalars(select(WorkItem).where(WorkItem.resolved_at.is_not(None)))
    met = [i.sla_state == "met" for i in resolved]
    assert 0.8 <= sum(met) / len(met) <= 0.95  # a believable attainment, not perfect
    # Each tenant's chain reads in time order, also across weekends and holidays.
    for tenant_id in db.session.scalars(select(Tenant.id)):
        times = db.session.scalars(select(AuditEvent.occurred_at).where(
            AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.seq)).all()
        assert times == sorted(times)


def test_audit_verify_passes_after_seed_demo(seeded, runner):
    result = runner.invoke(args=["audit", "verify"])

    assert result.exit_code == 0, result.output
    for slug in DEMO_TENANTS:
        assert f"{slug}:" in result.output
    assert "BROKEN" not in result.output


def test_every_demo_user_signs_in_through_the_form_with_demo_password(seeded, app):
    for email in DEMO_USERS:
        client, response = _sign_in(app, email, "demo-password")
        assert response.status_code == 303, email
        assert client.get("/queues/mine").status_code == 200, email


def test_demo_passwords_are_argon2_hashes(seeded):
    hashes = set(db.session.scalars(select(User.password_hash)))
    assert all(h.startswith("$argon2id$") for h in hashes)


def test_a_second_seed_demo_is_refused_and_adds_nothing(seeded, runner):
    before = _counts()

    result = runner.invoke(args=["seed-demo", "--items", "10"])

    assert result.exit_code != 0
    assert "already has tenants" in result.output
    db.session.rollback()
    assert _counts() == before


def test_seed_demo_if_empty_succeeds_and_adds_nothing_when_there_is_data(seeded, runner):
    before = _counts()

    result = runner.invoke(args=["seed-demo", "--items", "10", "--if-empty"])

    assert result.exit_code == 0, result.output
    assert "not seeded" in result.output
    db.session.rollback()
    assert _counts() == before


@pytest.fixture
def production_app(config, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "a-production-secret-for-this-test-only")
    production = create_app({**config, "APP_ENV": "production"})
    yield production
    with production.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize("flags", [[], ["--if-empty"]], ids=["plain", "if-empty"])
def test_seed_demo_is_refused_in_production(app, production_app, flags):
    assert production_app.config["APP_ENV"] == "production"

    # `flask` pushes the app's context for a command; the test runner leaves that to us.
    with production_app.app_context():
        result = production_app.test_cli_runner().invoke(
            args=["seed-demo", "--items", "10", *flags])

    assert result.exit_code != 0
    assert "production" in result.output
    assert _count(Tenant) == 0 and _count(User) == 0


def test_production_needs_a_secret_key(config, monkeypatch):
    from app.config import ConfigError

    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({**config, "APP_ENV": "production"})


# ---------------------------------------------------------------------------------------------
# create-token


def test_create_token_prints_a_token_and_stores_only_its_sha256(runner, make_tenant):
    tenant = make_tenant("northwind")

    result = runner.invoke(args=["create-token", "--tenant", "northwind"])

    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.startswith("cd_") and len(token) > 40
    db.session.expire_all()
    row = db.session.scalars(select(ApiToken)).one()
    assert row.tenant_id == tenant.id
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    secret = token.split("_", 2)[2]
    stored = db.session.execute(text("SELECT * FROM api_tokens")).one()
    assert not any(secret in str(value) for value in stored)
    audit = db.session.execute(text("SELECT * FROM audit_events")).all()
    assert not any(secret in str(value) for row in audit for value in row)


def test_create_token_prints_a_different_token_each_time(runner, make_tenant):
    make_tenant("northwind")
    first = runner.invoke(args=["create-token", "--tenant", "northwind"]).output.strip()
    second = runner.invoke(args=["create-token", "--tenant", "northwind"]).output.strip()
    assert first != second
    assert _count(ApiToken) == 2


def test_create_token_for_an_unknown_tenant_fails_with_a_message(runner, make_tenant):
    make_tenant("northwind")

    result = runner.invoke(args=["create-token", "--tenant", "nowhere"])

    assert result.exit_code != 0
    assert "No tenant 'nowhere'" in result.output
    assert "cd_" not in result.output
    db.session.rollback()
    assert _count(ApiToken) == 0


# ---------------------------------------------------------------------------------------------
# create-user


def test_create_user_creates_a_member_who_can_sign_in(runner, app, make_tenant):
    tenant = make_tenant("northwind")
    password = "a long enough password"

    result = runner.invoke(args=[
        "create-user", "--email", "x@y.z", "--password", password,
        "--tenant", "northwind", "--role", "approver", "--limit", "5000"])

    assert result.exit_code == 0, result.output
    db.session.expire_all()
    user = db.session.scalars(select(User).where(User.email == "x@y.z")).one()
    (membership,) = user.memberships
    assert membership.tenant_id == tenant.id
    assert membership.role_set == {"approver"}
    assert membership.approval_limit == Decimal("5000.00")
    assert user.password_hash.startswith("$argon2")
    _client, response = _sign_in(app, "x@y.z", password)
    assert response.status_code == 303


def test_create_user_with_an_unknown_tenant_fails_and_creates_no_one(runner, make_tenant):
    make_tenant("northwind")

    result = runner.invoke(args=[
        "create-user", "--email", "x@y.z", "--password", "a long enough password",
        "--tenant", "nowhere", "--role", "approver"])

    assert result.exit_code != 0
    assert "No tenant 'nowhere'" in result.output
    # A real CLI process ends here and its transaction with it; so does this test's.
    db.session.rollback()
    assert _count(User) == 0


def test_create_user_refuses_a_short_password_with_a_message(runner):
    result = runner.invoke(args=["create-user", "--email", "x@y.z", "--password", "short"])
    assert result.exit_code != 0
    assert "12 characters" in result.output
    db.session.rollback()
    assert _count(User) == 0


# ---------------------------------------------------------------------------------------------
# audit verify


def test_audit_verify_exits_1_and_names_an_event_whose_comment_was_edited(
        runner, make_tenant, make_item, without_audit_triggers):
    tenant = make_tenant("northwind")
    item = make_item(tenant)
    add_comment(SYSTEM, item.id, "Checked against the contract")
    commit()
    seq = db.session.scalar(select(AuditEvent.seq).where(AuditEvent.action == "item.commented"))
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0

    db.session.execute(text("UPDATE audit_events SET comment = 'Nothing to see here' "
                            "WHERE chain_id = :chain AND seq = :seq"),
                       {"chain": tenant.id, "seq": seq})
    commit()
    result = runner.invoke(args=["audit", "verify"])

    assert result.exit_code == 1
    assert f"event #{seq} was edited" in result.output
    broken = [line for line in result.output.splitlines() if "BROKEN" in line]
    assert len(broken) == 1 and "northwind" in broken[0]


def test_seed_demo_history_never_happens_in_the_future_and_keeps_its_order(runner):
    # Enough items that today's, decided within hours of now, are sure to be among them.
    result = runner.invoke(args=["seed-demo", "--items", "3000"])
    assert result.exit_code == 0, result.output
    now = utcnow()
    rows = db.session.execute(
        select(AuditEvent.item_id, AuditEvent.seq, AuditEvent.occurred_at)
        .where(AuditEvent.item_id.is_not(None)).order_by(AuditEvent.item_id, AuditEvent.seq)
    ).all()
    assert rows and all(when <= now for _item, _seq, when in rows)
    by_item: dict[int, list] = {}
    for item_id, _seq, when in rows:
        by_item.setdefault(item_id, []).append(when)
    # Within an item, the chain's order is the order things happened.
    assert all(times == sorted(times) for times in by_item.values())
    items = db.session.scalars(select(WorkItem)).all()
    assert all(i.claimed_at is None or i.created_at <= i.claimed_at <= now for i in items)


def _seeded_facts() -> tuple:
    """What a seed made, as one value: every item's and step's facts, and each audit chain's
    head (which hashes every event of it, in order)."""
    from app.models import ApprovalStep
    from tests.dashboard.recompute import stored_rollups

    items = db.session.execute(select(
        WorkItem.id, WorkItem.tenant_id, WorkItem.kind, WorkItem.subtype, WorkItem.amount,
        WorkItem.state, WorkItem.assignee_id, WorkItem.created_at, WorkItem.resolved_at,
        WorkItem.version).order_by(WorkItem.id)).all()
    steps = db.session.execute(select(
        ApprovalStep.id, ApprovalStep.item_id, ApprovalStep.state, ApprovalStep.decided_by_id)
        .order_by(ApprovalStep.id)).all()
    heads = db.session.execute(text(
        "SELECT chain_id, last_seq, last_hash FROM audit_chain_heads ORDER BY chain_id")).all()
    return items, steps, heads, stored_rollups()


@pytest.mark.skipif(os.environ.get("CLEARDESK_TEST_DB") != "postgresql",
                    reason="tenants are made in processes of their own on PostgreSQL only")
def test_seed_demo_with_a_process_per_tenant_makes_what_one_process_makes(app, monkeypatch):
    """A large seed makes each tenant in a process of its own; each tenant's items come from
    its own random stream and ranges of ids, so the result is the same, event for event."""
    from datetime import datetime

    from app.demo import seed
    from tests.conftest import _empty_tables
    from tests.dashboard.recompute import expected_rollups

    now = datetime.fromisoformat("2026-12-08T15:30:00+00:00")
    monkeypatch.setattr(seed, "PARALLEL_FROM", 10**9)
    seed.seed_demo(items=900, now=now)
    commit()
    one_process = _seeded_facts()
    db.session.remove()
    _empty_tables()

    monkeypatch.setattr(seed, "PARALLEL_FROM", 1)
    result = seed.seed_demo(items=900, now=now)
    commit()
    assert result["items"] == 900
    assert _seeded_facts() == one_process
    # The rollups, worked out in each tenant's process and summed, are what the items make.
    assert one_process[3] == expected_rollups()
    assert sum(row["decided"] for row in one_process[3][4].values()) > 0
    assert len(one_process[0]) == 900 and {row.tenant_id for row in one_process[0]} == {1, 2, 3}
    # This process's database connection still answers: none crossed into the others.
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) > 900
