"""Demo data: the tenants and people of DESIGN §9, and realistic work with 90 days of history.

Items are generated day by day per tenant, with their later events (claims, decisions) kept
in future-day buckets, so a day's events are written in time order and hash-chained as they
go. Rows leave in large batches (COPY on PostgreSQL), which keeps a million items in minutes.
"""
from __future__ import annotations

import json
import multiprocessing
import random
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import holidays
from sqlalchemy import func, insert, select, text

from app.audit.chain import values_hash
from app.types import jsonable
from app.audit.models import GENESIS_HASH, GLOBAL_CHAIN, AuditChainHead, AuditEvent
from app.auth.passwords import hash_password
from app.extensions import db
from app.models import (
    ApprovalStep,
    Kind,
    Membership,
    MembershipRole,
    Role,
    StepState,
    Tenant,
    User,
    WorkItem,
)
from app.work.sla_clock import sla_due_at, sla_state_at, sla_target
from app.work import kinds
from app.work.ledger import issued_by_ledger
from app.unit_of_work import unit_of_work
from app.work.rollups import RollupTotals, rebuild_rollups, rollup_totals, write_rollups
from app.demo.policies import (
    BUDGETS,
    DECISION_DELAY,
    RECEIPTS,
    DemoDecider,
    seed_groups,
    seed_policies,
)
from app.policy import engine
from app.work.states import FINAL_STATES

DEMO_PASSWORD = "demo-password"
REPORTS_TO_MANAGER = ("approver@cleardesk.demo", "approver.contoso@cleardesk.demo")

TENANTS = [
    dict(slug="northwind", name="Northwind Traders", currency="USD",
         timezone="America/New_York", calendar_country="US", is_reseller=False),
    dict(slug="contoso", name="Contoso GmbH", currency="EUR",
         timezone="Europe/Berlin", calendar_country="DE", is_reseller=False),
    dict(slug="fabrikam", name="Fabrikam Reseller Channel", currency="GBP",
         timezone="Europe/London", calendar_country="GB", is_reseller=True,
         brand_name="Fabrikam Partner Desk", brand_color="#7c3aed"),
]

# email, name, role, approval limit, tenants (None = all three)
USERS = [
    ("admin@cleardesk.demo", "Ada Admin", Role.ADMIN, "0", None),
    ("approver@cleardesk.demo", "Avery Approver", Role.APPROVER, "50000", None),
    ("analyst@cleardesk.demo", "Ana Analyst", Role.ANALYST, "0", None),
    ("manager@cleardesk.demo", "Morgan Manager", Role.MANAGER, "1000000", None),
    ("auditor@cleardesk.demo", "Aud Auditor", Role.AUDITOR, "0", None),
    ("requester@cleardesk.demo", "Riley Requester", Role.REQUESTER, "0", None),
    ("approver.contoso@cleardesk.demo", "Claus Approver", Role.APPROVER, "25000", ["contoso"]),
]

REGIONS = ["NA", "EMEA", "APAC", "LATAM"]
PRODUCT_LINES = ["Core Platform", "Analytics", "Payments", "Support Plans"]
PARTNER_TYPES = ["reseller", "referral", "marketplace", "systems_integrator"]
COMPANY_A = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
             "Tyrell", "Cyberdyne", "Soylent", "Wonka", "Gringotts", "Oceanic", "Massive"]
COMPANY_B = ["Labs", "Industries", "Systems", "Holdings", "Logistics", "Media", "Health",
             "Retail", "Energy", "Bank"]
SOURCES = {
    Kind.APPROVAL.value: ["salesforce", "coupa", "netsuite"],
    Kind.BILLING_EXCEPTION.value: ["zuora", "stripe-billing", "chargebee"],
    Kind.SETTLEMENT_DISPUTE.value: ["partner-portal", "ingram-statement"],
}
KIND_MIX = [(Kind.APPROVAL.value, 0.5), (Kind.BILLING_EXCEPTION.value, 0.3),
            (Kind.SETTLEMENT_DISPUTE.value, 0.2)]


class SeedRefused(RuntimeError):
    pass


class SeedFailed(RuntimeError):
    pass


@dataclass
class Clock:
    """Working time of one tenant, for plausible event times."""

    tz: ZoneInfo
    closed: holidays.HolidayBase

    def is_working_day(self, d: date) -> bool:
        return d.weekday() < 5 and d not in self.closed

    def at(self, d: date, rng: random.Random) -> datetime:
        minutes = rng.randint(0, 8 * 60 - 1)
        local = datetime.combine(d, time(9, 0), self.tz) + timedelta(minutes=minutes,
                                                                    seconds=rng.randint(0, 59))
        return local.astimezone(UTC)

    def later(self, start: datetime, business_hours: float, rng: random.Random) -> datetime:
        """Roughly `business_hours` of working time after `start`, on a working day."""
        local = start.astimezone(self.tz)
        days, rest = divmod(business_hours, 8)
        d = local.date()
        while days > 0:
            d += timedelta(days=1)
            if self.is_working_day(d):
                days -= 1
        candidate = datetime.combine(d, local.time(), self.tz) + timedelta(hours=rest)
        if candidate.hour >= 17 or not self.is_working_day(candidate.date()):
            nd = candidate.date() + timedelta(days=1)
            while not self.is_working_day(nd):
                nd += timedelta(days=1)
            candidate = datetime.combine(nd, time(9, rng.randint(0, 59)), self.tz)
        return candidate.astimezone(UTC)


class BulkWriter:
    """Batches rows per table; COPY on PostgreSQL, executemany elsewhere."""

    def __init__(self, batch: int = 20000):
        self.connection = db.session.connection()
        self.postgres = self.connection.dialect.name == "postgresql"
        self.batch = batch
        self.rows: dict = defaultdict(list)

    def add(self, table, row: dict) -> None:
        self.rows[table].append(row)
        if len(self.rows[table]) >= self.batch:
            self.flush()

    def flush(self, table=None) -> None:
        # Parents before children: items before their steps.
        order = {"work_items": 0, "approval_steps": 1}
        tables = [table] if table is not None else sorted(
            self.rows, key=lambda t: order.get(t.name, 2))
        for t in tables:
            rows = self.rows.pop(t, [])
            if not rows:
                continue
            # The items are the ledger's to write: loaded here as a whole, their rollups are
            # rebuilt from them at the end (rebuild_rollups).
            with issued_by_ledger() if t is WorkItem.__table__ else nullcontext():
                if self.postgres:
                    self._copy(t, rows)
                else:
                    self.connection.execute(insert(t), rows)

    def _copy(self, table, rows: list[dict]) -> None:
        columns = list(rows[0].keys())
        json_columns = {c.name for c in table.columns if c.type.__class__.__name__ == "JSON"}
        raw = self.connection.connection.driver_connection
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([json.dumps(row[c]) if c in json_columns else row[c]
                                    for c in columns])


class Chain:
    """One tenant's audit chain, extended in time order."""

    def __init__(self, chain_id: int, tenant_id: int | None, writer: BulkWriter):
        self.chain_id, self.tenant_id, self.writer = chain_id, tenant_id, writer
        self.seq, self.prev = 0, GENESIS_HASH

    def append(self, when: datetime, actor: User | None, action: str, *, item_id=None,
               from_state=None, to_state=None, comment=None, data=None, actor_type="user",
               label=None) -> None:
        self.seq += 1
        fields = {
            "chain_id": self.chain_id, "seq": self.seq, "tenant_id": self.tenant_id,
            "occurred_at": when, "actor_type": actor_type,
            "actor_id": actor.id if actor else None,
            "actor_label": label or (actor.email if actor else actor_type),
            "on_behalf_of_id": None, "action": action, "item_id": item_id,
            "from_state": from_state, "to_state": to_state, "comment": comment,
            "data": jsonable(data or {}), "prev_hash": self.prev,
        }
        fields["hash"] = values_hash(**fields)  # event_hash's encoding, built faster
        self.prev = fields["hash"]
        self.writer.add(AuditEvent.__table__, fields)

    def close(self) -> None:
        if self.seq:
            self.writer.flush(AuditEvent.__table__)
            db.session.execute(insert(AuditChainHead).values(
                chain_id=self.chain_id, last_seq=self.seq, last_hash=self.prev))


def seed_demo(items: int = 3000, seed: int = 20261127, now: datetime | None = None,
              progress=None) -> dict:
    """Create the demo tenants, users and `items` work items. Refuses a database that already
    has tenants, and production."""
    from flask import current_app

    if current_app.config["APP_ENV"] == "production":
        raise SeedRefused("seed-demo is refused when APP_ENV=production.")
    if db.session.scalar(select(func.count()).select_from(Tenant)):
        raise SeedRefused("The database already has tenants; seed-demo only fills an empty one.")
    now = now or datetime.now(UTC)
    writer = BulkWriter()
    global_chain = Chain(GLOBAL_CHAIN, None, writer)
    seeded_at = now - timedelta(days=91)

    tenants = {}
    for spec in TENANTS:
        tenant = Tenant(**spec)
        db.session.add(tenant)
        tenants[spec["slug"]] = tenant
    password_hash = hash_password(DEMO_PASSWORD)
    users: dict[str, User] = {}
    for email, name, _role, _limit, _scope in USERS:
        user = User(email=email, name=name, password_hash=password_hash)
        db.session.add(user)
        users[email] = user
    db.session.flush()
    chains = {slug: Chain(t.id, t.id, writer) for slug, t in tenants.items()}
    for email, user in users.items():
        global_chain.append(seeded_at, None, "user.created", actor_type="system",
                            data={"user_id": user.id, "email": email})
    for email, _name, role, limit, scope in USERS:
        for slug in scope or list(tenants):
            membership = Membership(user=users[email], tenant=tenants[slug],
                                    approval_limit=Decimal(limit),
                                    roles=[MembershipRole(role=role.value)])
            db.session.add(membership)
            chains[slug].append(seeded_at, None, "membership.granted", actor_type="system",
                                data={"user_id": users[email].id, "roles": [role.value],
                                      "approval_limit": Decimal(limit)})
    db.session.flush()
    # Reporting lines: the approvers report to the demo manager, the first level their
    # waiting approvals escalate to.
    for membership in db.session.scalars(select(Membership).where(Membership.user_id.in_(
            [users[e].id for e in REPORTS_TO_MANAGER if e in users]))):
        membership.manager_id = users["manager@cleardesk.demo"].id
        chains[membership.tenant.slug].append(
            seeded_at, None, "membership.manager_set", actor_type="system",
            data={"user_id": membership.user_id, "before": None,
                  "after": membership.manager_id})
    db.session.flush()
    for slug, groups in seed_groups(tenants, users).items():
        for group in groups:
            chains[slug].append(seeded_at, None, "approver_group.created", actor_type="system",
                                data={"group_id": group.id, "name": group.name,
                                      "members": sorted(group.member_ids)})
    policies = seed_policies(tenants, users["admin@cleardesk.demo"], seeded_at)
    for slug, policy in policies.items():
        chains[slug].append(seeded_at, None, "policy.activated", actor_type="system",
                            data={"policy_id": policy.id, "version": policy.version,
                                  "author_id": policy.author_id,
                                  "effective_from": policy.effective_from, "retires": []})
    decider = DemoDecider(policies, tenants)

    next_id = (db.session.scalar(select(func.max(WorkItem.id))) or 0) + 1
    next_step_id = (db.session.scalar(select(func.max(ApprovalStep.id))) or 0) + 1
    # Each tenant's items from its own random stream and its own ranges of ids, so tenants can
    # be made one after another or side by side (a process each) with the same result.
    plans = []
    for (slug, tenant), count in zip(tenants.items(), _split(items, len(tenants))):
        plans.append(TenantPlan(slug, count, next_id, next_step_id))
        next_id += count
        next_step_id += count * MAX_STEPS
    global_chain.close()
    state = SeedState(seed=seed, now=now, chains=chains, decider=decider, progress=progress,
                      total=items)
    # The items go in by COPY, not one change at a time through the ledger: their rollups
    # are computed from them in one go (in each tenant's process, when there are processes).
    if writer.postgres and items >= PARALLEL_FROM:
        writer.flush()
        made, totals = _in_processes(state, plans)
        write_rollups(db.session, totals)
    else:
        made = sum(_seed_tenant(state, plan, tenants[plan.slug], users, writer)
                   for plan in plans)
        writer.flush()
        rebuild_rollups(db.session)
    if writer.postgres:
        # Fresh statistics: the planner picks the queue indexes only if it knows the table.
        for table in ("work_items", "approval_steps", "audit_events", "memberships",
                      "dashboard_daily", "dashboard_open"):
            db.session.execute(text(f"ANALYZE {table}"))
        for table in ("work_items", "approval_steps", "audit_events"):
            db.session.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE((SELECT MAX(id) FROM {table}), 1))"))
    return {"tenants": len(tenants), "users": len(users), "items": made}


# From this many items on PostgreSQL, each tenant is made by a process of its own (a million in
# a few minutes on two CPUs); fewer, or SQLite, in this process and transaction.
PARALLEL_FROM = 50_000
# Room for each item's approval steps in its tenant's range of step ids (a chain has one to
# three steps; the range's unused ids stay unused).
MAX_STEPS = 4


@dataclass(frozen=True)
class TenantPlan:
    slug: str
    items: int
    first_item_id: int
    first_step_id: int


@dataclass
class SeedState:
    seed: int
    now: datetime
    chains: dict
    decider: object
    progress: object
    total: int
    made: object = None  # a counter shared by the processes (multiprocessing.Value)
    made_here: int = 0  # the count when every tenant is made in this process


def _seed_tenant(state: SeedState, plan: TenantPlan, tenant: Tenant, users: dict,
                 writer: BulkWriter) -> int:
    """Make one tenant's items, day by day over 90 days, with their steps, receipts and audit
    chain; return how many."""
    rng = random.Random(f"{state.seed}:{plan.slug}")
    now, today = state.now, state.now.date()
    chain = state.chains[plan.slug]
    chain.writer = writer
    decider = state.decider
    counterparties = [f"{a} {b}" for a in COMPANY_A for b in COMPANY_B]
    people = _people(users, plan.slug)
    clock = Clock(ZoneInfo(tenant.timezone),
                  holidays.country_holidays(tenant.calendar_country,
                                            years=range(today.year - 1, today.year + 1)))
    days = [today - timedelta(days=n) for n in range(90, -1, -1)]
    working = [d for d in days if clock.is_working_day(d)] or days
    pending: dict[date, list] = defaultdict(list)
    item_id, step_id = plan.first_item_id, plan.first_step_id
    step_limit = plan.first_step_id + plan.items * MAX_STEPS
    for d, n in zip(working, _split(plan.items, len(working))):
        # Everything due by this day, a weekend's or a holiday's included: the chain stays in
        # time order.
        todays = [event for day in sorted(k for k in pending if k <= d)
                  for event in pending.pop(day)]
        for _ in range(n):
            events, steps = _make_item(rng, item_id, tenant, people, clock, d, now,
                                       counterparties, step_id, writer, decider)
            item_id += 1
            step_id += steps
            if step_id > step_limit:
                raise RuntimeError(f"more than {MAX_STEPS} steps an item in {plan.slug}")
            for when, event in events:
                event_day = when.astimezone(clock.tz).date()
                if event_day <= d:
                    todays.append((when, event))
                else:
                    pending[min(event_day, today)].append((when, event))
        _write_day(chain, todays)
        _count(state, n)
    for d in sorted(pending):
        _write_day(chain, pending[d])
    for row in decider.budget_rows():
        if row["tenant_id"] == tenant.id:
            writer.add(BUDGETS, row)
    writer.flush()
    chain.close()
    return plan.items


def _count(state: SeedState, n: int) -> None:
    """Report progress every 10,000 items (in whichever process made them)."""
    if state.made is None:
        before = state.made_here
        state.made_here = after = before + n
    else:
        with state.made.get_lock():
            before = state.made.value
            state.made.value = after = before + n
    if state.progress and after // 10000 > before // 10000:
        state.progress(after, state.total)


_FORKED: SeedState | None = None  # what a forked process starts from (fork copies it)


def _in_processes(state: SeedState, plans: list[TenantPlan]) -> tuple[int, RollupTotals]:
    """Make each tenant's items in a process of its own, each in its own transaction, and
    work out their rollups there (summed here: the caller writes them). What
    came before (tenants, people, policies) is committed first, so they can see it; a process
    that fails leaves the database part-seeded (the error says to start from an empty one)."""
    global _FORKED
    # Everything kept loaded, not expired by the commit: the policies the decider holds are
    # read (never changed) in the processes, without a session of theirs.
    unit_of_work().finish(keep=(object,))
    # No connection crosses the fork: each process opens its own.
    db.session.remove()
    db.engine.dispose()
    context = multiprocessing.get_context("fork")
    state.made = context.Value("q", 0)
    _FORKED = state
    try:
        with context.Pool(len(plans)) as pool:
            made = pool.map(_seed_in_process, plans, chunksize=1)
    except Exception as exc:
        raise SeedFailed(f"Seeding failed ({exc}); the database is part-seeded: start again "
                         "from an empty one.") from exc
    finally:
        _FORKED = None
    totals = RollupTotals()
    for _made, part in made:
        totals.add(part)
    return sum(m for m, _part in made), totals


def _seed_in_process(plan: TenantPlan) -> tuple[int, RollupTotals]:
    state = _FORKED
    try:
        tenant = db.session.scalars(select(Tenant).where(Tenant.slug == plan.slug)).one()
        users = {u.email: u for u in db.session.scalars(select(User))}
        made = _seed_tenant(state, plan, tenant, users, BulkWriter())
        db.session.commit()
        return made, rollup_totals(db.session, [tenant.id])
    finally:
        db.session.remove()
        db.engine.dispose()


def _write_day(chain: Chain, events: list) -> None:
    events.sort(key=lambda e: e[0])
    for when, (actor, action, kwargs) in events:
        chain.append(when, actor, action, **kwargs)


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _people(users: dict[str, User], slug: str) -> dict[str, list[User]]:
    approvers = [users["approver@cleardesk.demo"]]
    if slug == "contoso":
        approvers.append(users["approver.contoso@cleardesk.demo"])
    return {
        "requester": [users["requester@cleardesk.demo"]],
        "approver": approvers,
        "analyst": [users["analyst@cleardesk.demo"]],
        "manager": [users["manager@cleardesk.demo"]],
    }


def _amount(rng: random.Random, kind: str) -> Decimal:
    # Log-uniform: many small items, a long tail of large ones.
    low, high = {"approval": (200, 250000), "billing_exception": (50, 80000),
                 "settlement_dispute": (300, 120000)}[kind]
    value = low * (high / low) ** rng.random()
    return Decimal(str(round(value, 2))).quantize(Decimal("0.01"))


def _make_item(rng, item_id, tenant, people, clock, day, now, counterparties, step_id, writer,
               decider=None):
    kind = rng.choices([k for k, _ in KIND_MIX], [w for _, w in KIND_MIX])[0]
    subtype = rng.choice(list(kinds.SUBTYPES[kind]))
    created = clock.at(day, rng)
    if created > now:
        created = now - timedelta(minutes=rng.randint(1, 120))
    amount = _amount(rng, kind)
    counterparty = rng.choice(counterparties)
    source = rng.choice(SOURCES[kind])
    priority = rng.choices(["low", "normal", "high", "urgent"], [2, 6, 2, 0.5])[0]
    sla = sla_target(kind, priority, tenant)
    due = sla_due_at(tenant, kind, priority, created)
    requester = people["requester"][0]
    worker_pool = people["approver"] if kind == Kind.APPROVAL.value else people["analyst"]
    manager = people["manager"][0]
    subtype_label = kinds.SUBTYPES[kind][subtype]
    row = dict(
        id=item_id, tenant_id=tenant.id, kind=kind, subtype=subtype,
        title=f"{subtype_label} for {counterparty}", external_ref=f"{source[:3].upper()}-{item_id:08d}",
        source_system=source, counterparty=counterparty, region=rng.choice(REGIONS),
        product_line=rng.choice(PRODUCT_LINES),
        partner_type=(rng.choice(PARTNER_TYPES) if kind == Kind.SETTLEMENT_DISPUTE.value
                      or (tenant.is_reseller and kind == Kind.APPROVAL.value)
                      or rng.random() < 0.3 else None),
        amount=amount, currency=tenant.currency,
        priority=priority,
        risk_score=rng.randint(1, 100), state=None,
        requester_id=requester.id if kind == Kind.APPROVAL.value else None,
        assignee_id=None, created_at=created, claimed_at=None, first_action_at=None,
        resolved_at=None, sla_due_at=due, sla_state="on_track", policy_version=None,
        details={}, team_queue=None, amount_at_risk=None, claimed_amount=None,
        calculated_amount=None,
        adjustment_amount=None, resolution_code=None, decided_by_type=None, last_actor_id=None,
        last_action_at=created, version=1,
    )
    creator = requester if kind == Kind.APPROVAL.value else None
    events = [(created, (creator, "item.created", dict(
        item_id=item_id, to_state=None, actor_type="user" if creator else "api",
        label=None if creator else f"api:{source}",
        data={"kind": kind, "subtype": subtype, "amount": amount, "currency": tenant.currency,
              "external_ref": row["external_ref"], "source_system": source})))]
    if kind == Kind.APPROVAL.value:
        standard = 30
        row["details"] = {"discount_pct": str(Decimal(rng.randint(5, 45))),
                          "payment_terms_days": rng.choice([30, 45, 60, 90]),
                          "standard_terms_days": standard,
                          "reason": rng.choice(["Competitive deal", "Renewal at risk",
                                                "Multi-year commitment", "Service outage credit",
                                                "Budgeted purchase"])}
    elif kind == Kind.BILLING_EXCEPTION.value:
        row["amount_at_risk"] = (amount * Decimal(rng.uniform(0.3, 1.0))).quantize(Decimal("0.01"))
        row["details"] = {"invoice_number": f"INV-{rng.randint(100000, 999999)}",
                          "failing_check": subtype.replace("_", " "),
                          "source_record": f"{source}:{rng.randint(10**6, 10**7)}"}
    else:
        row["claimed_amount"] = amount
        row["calculated_amount"] = (amount * Decimal(rng.uniform(0.5, 0.98))).quantize(Decimal("0.01"))
        month = (day.replace(day=1) - timedelta(days=1))
        row["details"] = {"period": month.strftime("%Y-%m"), "partner_id": f"P-{rng.randint(1000, 9999)}",
                          "statement_ref": f"ST-{rng.randint(10000, 99999)}"}
    events[0][1][2]["to_state"] = "pending" if kind == Kind.APPROVAL.value else "open"
    case_verdict = None
    if decider is not None and kind != Kind.APPROVAL.value:
        # Exceptions and disputes: the policy routes them at arrival, as the worker does.
        case_verdict = decider.decide_case(tenant.id, row)
        if case_verdict is not None and case_verdict.outcome == engine.UNROUTED:
            # The worker leaves them be; only its receipt says so.
            judged = created + DECISION_DELAY
            writer.add(RECEIPTS, decider.receipt(tenant.id, item_id, case_verdict, created,
                                                 judged))
            case_verdict = None
        if case_verdict is not None:
            row.update(risk_score=case_verdict.risk_score, policy_version=1,
                       team_queue=case_verdict.queue)
            if case_verdict.priority and case_verdict.priority != priority:
                # Due sooner; the people's pace below keeps to the arrival priority's target
                # (so the random history stays the same draw for draw).
                priority = row["priority"] = case_verdict.priority
                due = row["sla_due_at"] = sla_due_at(tenant, kind, priority, created)

    # Approvals: the policy decides at arrival, as the worker does; its chain, or the default.
    steps = []
    verdict = None
    if kind == Kind.APPROVAL.value:
        judged = created + DECISION_DELAY
        if decider is not None:
            verdict = decider.decide(tenant.id, item_id, row, judged)
            row["risk_score"] = verdict.risk_score
            row["policy_version"] = 1
            writer.add(RECEIPTS, decider.receipt(tenant.id, item_id, verdict, created, judged))
        if verdict is not None:
            row["team_queue"] = verdict.queue
        if verdict is not None and verdict.outcome == engine.AUTO_APPROVED:
            events.append((judged, (None, "item.approve", dict(
                item_id=item_id, from_state="pending", to_state="approved", actor_type="policy",
                label="policy", data=decider.event_data(tenant.id, verdict, amount)))))
            row.update(state="approved", resolved_at=judged, last_action_at=judged,
                       first_action_at=judged, version=2, decided_by_type="policy",
                       sla_state="breached" if judged > due else "met")
            writer.add(WorkItem.__table__, row)
            return events, 0
        chain = verdict.steps if verdict is not None else engine.default_chain(amount)
        for position, (role, limit) in enumerate(chain, start=1):
            steps.append(dict(id=step_id + position - 1, item_id=item_id, position=position,
                              role=role, min_limit=limit,
                              state=StepState.OPEN.value if position == 1
                              else StepState.WAITING.value, approver_id=None,
                              decided_by_id=None, on_behalf_of_id=None, decided_at=None,
                              comment=None))
        if verdict is not None:
            events.append((judged, (None, "policy.routed", dict(
                item_id=item_id, from_state="pending", to_state="pending", actor_type="policy",
                label="policy", data=decider.event_data(tenant.id, verdict)))))

    worker = rng.choice(worker_pool)
    if kind == Kind.APPROVAL.value:
        # The approver must have the limit for step 1; the contoso approver's is lower.
        eligible = [u for u in worker_pool if u.email != "approver.contoso@cleardesk.demo"
                    or amount <= Decimal("25000")]
        worker = rng.choice(eligible) if steps[0]["role"] == "approver" else manager
    if case_verdict is not None:
        judged = created + DECISION_DELAY
        assignee = worker.id if case_verdict.assign_role else None
        if assignee is not None:
            row.update(assignee_id=assignee, claimed_at=judged)
        writer.add(RECEIPTS, decider.receipt(tenant.id, item_id, case_verdict, created, judged,
                                             assignee))
        events.append((judged, (None, "policy.routed", dict(
            item_id=item_id, from_state="open", to_state="open", actor_type="policy",
            label="policy", data={**decider.event_data(tenant.id, case_verdict),
                                  "assign_role": case_verdict.assign_role,
                                  "assignee_id": assignee}))))
        verdict = case_verdict  # the routing changed the item (its version)
    late = rng.random() < 0.12
    # Business hours from arrival to decision: most within the target, about one in eight late.
    target_hours = sla.total_seconds() / 3600
    hours = rng.uniform(0.3, target_hours * 0.9) if not late else rng.uniform(
        target_hours * 1.05, target_hours * 2.5)
    claimed = clock.later(created, rng.uniform(0.1, max(0.2, hours / 2)), rng)
    decided = clock.later(claimed, hours / 2 + 0.1, rng)
    version = 2 if verdict is not None else 1  # routing by the policy changed the item
    state = "pending" if kind == Kind.APPROVAL.value else "open"
    # Open is whatever the team has not got to yet: an item stays open when its decision falls
    # after now. So the open work is the last day or so of arrivals, mostly within its target,
    # with the late few (above) breached by hours or days, not months; what the queues and the
    # dashboard show is a normal working day whenever the demo is seeded.
    stays_open = decided > now
    latest = now - timedelta(minutes=1)
    if stays_open:
        if claimed <= now and rng.random() < 0.7:
            row.update(assignee_id=worker.id, claimed_at=claimed, last_actor_id=worker.id,
                       last_action_at=claimed, first_action_at=claimed)
            events.append((claimed, (worker, "item.claimed", dict(item_id=item_id,
                                                                  data={"assignee_id": worker.id}))))
            version += 1
            looked_at = clock.later(claimed, rng.uniform(0.1, 1.5), rng)  # in working hours
            if kind != Kind.APPROVAL.value and looked_at <= min(now, decided):
                to = "investigating" if kind == Kind.BILLING_EXCEPTION.value else "under_review"
                action = "investigate" if kind == Kind.BILLING_EXCEPTION.value else "review"
                events.append((looked_at, (worker, f"item.{action}", dict(
                    item_id=item_id, from_state=state, to_state=to))))
                state, version = to, version + 1
                row.update(last_actor_id=worker.id, last_action_at=looked_at)
        row["state"] = state
        # The due time came from the tenant's business calendar (sla_due_at); so does the state.
        row["sla_state"] = sla_state_at(tenant, kind, priority, due, now)
    else:
        claimed = min(claimed, decided)
        row.update(assignee_id=worker.id, claimed_at=claimed, first_action_at=claimed)
        events.append((claimed, (worker, "item.claimed", dict(item_id=item_id,
                                                              data={"assignee_id": worker.id}))))
        version += 1
        final, action, comment, extra = _decision(rng, kind, row)
        if decider is not None and kind == Kind.APPROVAL.value and final == "rejected":
            decider.rejected(tenant.id, counterparty)
        decider = worker
        if kind == Kind.APPROVAL.value and final == "approved" and len(steps) == 2:
            steps[0].update(state="approved", decided_by_id=worker.id, decided_at=decided)
            events.append((decided, (worker, "approval.step_approved", dict(
                item_id=item_id, from_state="pending", to_state="pending",
                data={"step": 1, "amount": amount}))))
            version += 1
            decided = max(decided, min(clock.later(decided, rng.uniform(0.5, 6), rng), latest))
            decider = manager
            steps[1].update(state="approved", decided_by_id=manager.id, decided_at=decided)
        elif kind == Kind.APPROVAL.value:
            steps[0].update(state="approved" if final == "approved" else "rejected",
                            decided_by_id=worker.id, decided_at=decided, comment=comment)
            if len(steps) == 2:
                steps[1]["state"] = StepState.CANCELLED.value
        events.append((decided, (decider, f"item.{action}", dict(
            item_id=item_id, from_state=state, to_state=final, comment=comment, data=extra))))
        version += 1
        row.update(state=final, resolved_at=decided, last_actor_id=decider.id,
                   decided_by_type="user",
                   last_action_at=decided,
                   sla_state="breached" if decided > due else "met", **_final_fields(extra))
    row["version"] = version
    writer.add(WorkItem.__table__, row)
    for step in steps:
        writer.add(ApprovalStep.__table__, step)
    assert row["state"] in FINAL_STATES[kind] or stays_open
    return events, len(steps)


def _decision(rng, kind, row):
    roll = rng.random()
    if kind == Kind.APPROVAL.value:
        if roll < 0.82:
            return "approved", "approve", None, {"amount": row["amount"]}
        return "rejected", "reject", rng.choice(["Discount above guidance",
                                                 "Missing business case",
                                                 "Duplicate of an earlier request"]), {}
    if kind == Kind.BILLING_EXCEPTION.value:
        code = rng.choice(list(kinds.RESOLUTION_CODES))
        return "resolved", "resolve", None, {"resolution_code": code,
                                             "amount_at_risk": row["amount_at_risk"]}
    if roll < 0.45:
        return "accepted", "accept", None, {}
    if roll < 0.75:
        delta = row["claimed_amount"] - row["calculated_amount"]
        adjustment = (delta * Decimal(rng.uniform(0.2, 0.8))).quantize(Decimal("0.01"))
        return "partially_accepted", "partially_accept", None, {"adjustment_amount": adjustment}
    return "rejected", "reject", "Claim does not match the partner statement", {}


def _final_fields(extra: dict) -> dict:
    out = {}
    if "resolution_code" in extra:
        out["resolution_code"] = extra["resolution_code"]
    if "adjustment_amount" in extra:
        out["adjustment_amount"] = extra["adjustment_amount"]
    return out
