"""Money rules of the write path, on every channel: the sign a kind and subtype allow, the
currency's decimals and the tenant's ceiling are checked where the item is written (API, CSV
import, services), and thresholds and limits weigh magnitudes, so no item needs less approval
than the same item with a larger magnitude (a property test over kinds, subtypes, signs and
magnitudes, under every demo tenant's policy and under no policy)."""
from __future__ import annotations

import os
from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.demo.policies import DEMO_POLICIES, FALLBACK
from app.errors import ValidationFailed
from app.extensions import db
from app.models import WorkItem
from app.policy import engine
from app.policy.models import PolicyRule, PolicyState, PolicyVersion
from app.unit_of_work import commit
from app.work import kinds
from app.work.money import clean_item_amounts, item_amounts
from app.work.services import create_item
from tests.api.conftest import BearerClient, api, item_payload, make_token  # noqa: F401 (fixtures)
from tests.conftest import csrf_from
from tests.imports.test_imports import BILLING_HEADER, _errors, _upload

EXAMPLES = int(os.environ.get("MONEY_EXAMPLES", "300"))


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


REFUND = dict(kind="approval", subtype="refund", title="Refund", details={})


@pytest.mark.parametrize("body, field, words", [
    (dict(REFUND, amount="-900000.00"), "amount", "more than zero"),
    (dict(REFUND, amount="0.00"), "amount", "more than zero"),
    (dict(kind="approval", subtype="credit_memo", title="Credit", details={}, amount=-5),
     "amount", "more than zero"),
    (dict(amount="-10.00"), "amount", "zero or more"),
    (dict(amount="10.00", amount_at_risk="-10.00"), "amount_at_risk", "zero or more"),
    (dict(kind="settlement_dispute", subtype="rebate", title="Rebate", details={},
          amount="100.00", claimed_amount="100.00", calculated_amount="-400.00"),
     "calculated_amount", "zero or more"),
])
def test_the_api_refuses_an_amount_of_the_wrong_sign_and_writes_nothing(api, body, field, words):
    response = api.post("/api/v1/items", json=item_payload(**body))
    assert response.status_code == 422, response.text
    problem = response.get_json()
    assert words in str(problem), problem
    assert field in str(problem)
    assert _count(WorkItem) == 0
    assert not db.session.scalars(select(AuditEvent).where(AuditEvent.item_id.is_not(None))).all()


def test_a_positive_refund_and_a_zero_amount_exception_are_accepted(api):
    refund = api.post("/api/v1/items", json=item_payload(**REFUND, amount="900000.00",
                                                        external_ref="R-1"))
    assert refund.status_code == 201, refund.text
    waived = api.post("/api/v1/items", json=item_payload(amount="0.00", external_ref="E-0"))
    assert waived.status_code == 201, waived.text


def test_a_negative_delta_is_a_dispute_of_its_own_sign_routed_by_its_magnitude(api):
    body = item_payload(kind="settlement_dispute", subtype="rebate", title="Rebate", details={},
                        amount="100.00", claimed_amount="100.00", calculated_amount="9100.00")
    response = api.post("/api/v1/items", json=body)
    assert response.status_code == 201, response.text
    item = db.session.get(WorkItem, response.get_json()["id"])
    assert item.delta == Decimal("-9000.00")
    inputs = engine.case_inputs(item)
    assert inputs["delta_magnitude"] == Decimal("9000.00")
    assert inputs["delta_pct_magnitude"] == Decimal("98.90")


def test_an_amount_above_the_tenants_maximum_is_refused_on_every_channel(
        app, auth, client, make_tenant, make_user, make_token):
    tenant = make_tenant()
    make_user("admin@x.test", [tenant], roles=("admin", "analyst"))
    auth.login("admin@x.test")
    page = client.get("/admin/t/northwind/")
    form = {"csrf_token": csrf_from(page.text), "name": tenant.name, "currency": "USD",
            "timezone": tenant.timezone, "calendar_country": "US",
            "working_days": ["1", "2", "3", "4", "5"], "work_start": "09:00",
            "work_end": "17:00", "max_item_amount": "250000"}
    saved = client.post("/admin/t/northwind/", data=form)
    assert saved.status_code == 303, saved.text
    db.session.refresh(tenant)
    assert tenant.max_item_amount == Decimal("250000.00")
    event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "tenant.updated")).one()
    assert event.data["after"]["max_item_amount"] == "250000.00"

    api = BearerClient(client, make_token(tenant))
    over = api.post("/api/v1/items", json=item_payload(amount="250000.01"))
    assert over.status_code == 422 and "USD 250,000.00" in over.text
    at = api.post("/api/v1/items", json=item_payload(amount="-250000.00", external_ref="X"))
    assert at.status_code == 422  # the sign, not the size, refuses this one
    assert api.post("/api/v1/items", json=item_payload(amount="250000.00",
                                                       external_ref="OK")).status_code == 201

    text = BILLING_HEADER + "EX-9,INV-9,Acme,payment_failed,300000.00,USD,us\n"
    upload = _upload(client, text)
    rows = _errors(client.get(upload.headers["Location"]).text)
    assert rows == [("2", "amount", "at most USD 250,000.00")]


@pytest.mark.parametrize("value, words", [
    ("-1", "more than zero"), ("0", "more than zero"), ("ten", "must be a number"),
    ("1.005", "at most two decimals")])
def test_the_tenant_maximum_itself_must_be_a_positive_amount(auth, client, make_tenant, make_user,
                                                             value, words):
    tenant = make_tenant()
    make_user("admin@x.test", [tenant], roles=("admin",))
    auth.login("admin@x.test")
    page = client.get("/admin/t/northwind/")
    response = client.post("/admin/t/northwind/", data={
        "csrf_token": csrf_from(page.text), "name": tenant.name, "currency": "USD",
        "timezone": tenant.timezone, "calendar_country": "US", "working_days": ["1"],
        "work_start": "09:00", "work_end": "17:00", "max_item_amount": value})
    assert response.status_code == 422 and words in response.text
    db.session.refresh(tenant)
    assert tenant.max_item_amount is None


@pytest.mark.parametrize("currency, words", [
    ("KWD", "KWD has 3 decimals"), ("XYZ", "not an ISO 4217 currency")])
def test_a_tenant_cannot_work_in_a_currency_the_storage_cannot_hold(
        auth, client, make_tenant, make_user, currency, words):
    make_user("admin@x.test", [make_tenant()], roles=("admin",))
    auth.login("admin@x.test")
    page = client.get("/admin/tenants/new")
    response = client.post("/admin/tenants/new", data={
        "csrf_token": csrf_from(page.text), "slug": "kuwait", "name": "Kuwait", "currency": currency,
        "timezone": "Asia/Kuwait", "calendar_country": "US", "working_days": ["1"],
        "work_start": "09:00", "work_end": "17:00"})
    assert response.status_code == 422 and words in response.text


def test_csv_rows_of_the_wrong_sign_are_refused_at_upload_naming_their_column(
        auth, client, make_tenant, make_user):
    make_user("analyst@x.test", [make_tenant()], roles=("analyst",))
    auth.login("analyst@x.test")
    text = BILLING_HEADER + "\n".join([
        "EX-1,INV-1,Acme,payment_failed,120.00,USD,us",
        "EX-2,INV-2,Acme,payment_failed,-120.00,USD,us"]) + "\n"
    rows = _errors(client.get(_upload(client, text).headers["Location"]).text)
    assert rows == [("3", "amount", "must be zero or more")]
    statement = ("statement_ref,line_id,partner,claim_type,claimed_amount,calculated_amount\n"
                 "ST-1,1,Partner,rebate,-50.00,10.00\n")
    rows = _errors(client.get(_upload(client, statement, fmt="partner_statement")
                              .headers["Location"]).text)
    assert rows == [("2", "claimed_amount", "must be zero or more")]
    assert _count(WorkItem) == 0


def test_a_yen_tenant_takes_whole_yen_only(make_tenant, make_user):
    tenant = make_tenant(slug="tokyo", currency="JPY", timezone="Asia/Tokyo", country="JP")
    analyst = make_user("analyst@x.test", [tenant], roles=("analyst",))
    from tests.conftest import actor

    fields = dict(kind="billing_exception", subtype="payment_failed", title="Card",
                  source_system="billing", counterparty="Acme")
    with pytest.raises(ValidationFailed) as refused:
        create_item(actor(analyst), tenant_id=tenant.id, external_ref="J-1", amount="1050.50",
                    **fields)
    assert refused.value.fields == {"amount": "no decimals"}
    item, created = create_item(actor(analyst), tenant_id=tenant.id, external_ref="J-2",
                                amount="1050", **fields)
    commit()
    assert created and item.amount == Decimal("1050.00")


def test_the_engine_weighs_a_negative_amount_by_its_magnitude():
    """Defence in depth: should a negative approval ever reach the engine (an old row), its
    steps and guard rails weigh its size, not its sign."""
    compiled = _compiled("contoso")
    row = _row("approval", "refund", Decimal("-900000.00"))
    negative = engine.decide(compiled, 7, engine.item_inputs(row), kill_switch=False, budget=None)
    positive = engine.decide(compiled, 7, engine.item_inputs(_row("approval", "refund",
                                                                   Decimal("900000.00"))),
                             kill_switch=False, budget=None)
    assert negative.outcome == positive.outcome == engine.ROUTED
    assert negative.steps == positive.steps
    assert all(limit >= 0 for _role, limit in negative.steps)
    assert kinds.default_chain(Decimal("-60000")) == kinds.default_chain(Decimal("60000"))


# ---------------------------------------------------------------------------------------------
# The property: over kinds, subtypes, signs and magnitudes, a larger magnitude never needs less.

REFUSED = (99, 0, Decimal(0))
PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "urgent": 3}


def _compiled(slug):
    if slug is None:
        return None
    policy_settings, rules = DEMO_POLICIES[slug]
    policy = PolicyVersion(
        id=hash(slug) % 1000, tenant_id=1, version=1, state=PolicyState.DRAFT.value,
        qa_role="manager", fallback_steps=FALLBACK, qa_sample_pct=policy_settings["qa_sample_pct"],
        max_auto_amount=policy_settings["max_auto_amount"], risk=policy_settings["risk"],
        daily_auto_count=None, daily_auto_amount=None,
        rules=[PolicyRule(position=n, name=name, condition=condition, outcome=outcome,
                          **(extra if isinstance(extra, dict) else {"steps": extra}))
               for n, (name, condition, outcome, extra) in enumerate(rules, start=1)])
    return engine.compile_policy(policy)


def _row(kind, subtype, amount, *, region=None, partner_type=None, discount_pct=None,
         calculated=Decimal("0"), priority="normal"):
    fields = item_amounts(kind, {"amount": amount, "calculated_amount": calculated})
    if kind == "settlement_dispute":
        fields["claimed_amount"] = calculated + amount  # `amount` is the signed delta here
        fields["amount"] = max(fields["claimed_amount"], Decimal(0))
    details = {} if discount_pct is None else {"discount_pct": str(discount_pct)}
    columns = dict(amount_at_risk=None, claimed_amount=None, calculated_amount=None)
    columns.update(fields)
    return SimpleNamespace(kind=kind, subtype=subtype, currency="USD", region=region,
                           product_line=None, partner_type=partner_type, priority=priority,
                           source_system="crm", counterparty="Acme", details=details, **columns)


def _need(compiled, row) -> tuple:
    """How much approval (approvals) or attention (cases) an item needs, ordered; REFUSED when
    the write path does not take it at all."""
    raw = {name: getattr(row, name) for name in ("amount", "amount_at_risk", "claimed_amount",
                                                  "calculated_amount")
           if getattr(row, name) is not None}
    try:
        clean_item_amounts(row.kind, row.subtype, raw, currency="USD", ceiling=None)
    except ValidationFailed:
        return REFUSED
    if row.kind == "approval":
        if compiled is None:
            steps = kinds.default_chain(row.amount)
        else:
            verdict = engine.decide(compiled, 42, engine.item_inputs(row), kill_switch=False,
                                    budget=None)
            if verdict.outcome == engine.AUTO_APPROVED:
                return (0, 0, Decimal(0))
            steps = verdict.steps
        return (1, len(steps), max(limit for _role, limit in steps))
    if compiled is None:
        return (0, 0, Decimal(0))
    verdict = engine.decide_case(compiled, row.kind, engine.case_inputs(row))
    routed = verdict.outcome in (engine.QUEUED, engine.ASSIGNED)
    return (int(routed), PRIORITY_RANK[verdict.priority or row.priority], Decimal(0))


KIND_SUBTYPES = [(kind, subtype) for kind, subtypes in kinds.SUBTYPES.items()
                 for subtype in subtypes]
cents = st.integers(min_value=1, max_value=10**11).map(lambda c: Decimal(c).scaleb(-2))


@pytest.mark.parametrize("slug", [*DEMO_POLICIES, None])
def test_no_item_needs_less_approval_than_the_same_item_with_a_larger_magnitude(slug):
    compiled = _compiled(slug)

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None)
    @given(kind_subtype=st.sampled_from(KIND_SUBTYPES), size=cents, more=cents,
           sign=st.sampled_from([1, -1]),
           region=st.sampled_from([None, "EMEA", "LATAM", "APAC", "NA"]),
           partner_type=st.sampled_from([None, "reseller", "referral", "marketplace"]),
           discount_pct=st.one_of(st.none(), st.integers(min_value=0, max_value=60)),
           calculated=cents)
    def check(kind_subtype, size, more, sign, region, partner_type, discount_pct, calculated):
        kind, subtype = kind_subtype
        same = dict(region=region, partner_type=partner_type, discount_pct=discount_pct,
                    calculated=calculated)
        smaller = _need(compiled, _row(kind, subtype, sign * size, **same))
        larger = _need(compiled, _row(kind, subtype, sign * (size + more), **same))
        assert smaller <= larger, (smaller, larger)
        # The sign never lowers it: a negative twin is refused or needs what the positive does.
        positive = _need(compiled, _row(kind, subtype, size, **same))
        negative = _need(compiled, _row(kind, subtype, -size, **same))
        assert negative == REFUSED or negative >= positive, (negative, positive)

    check()
