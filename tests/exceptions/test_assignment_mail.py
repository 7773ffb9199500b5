"""The "assigned to you" mail of billing exceptions and settlement disputes, end to end: the
write path (a manager's reassign in the browser, a bulk reassign, a policy rule's assignment)
writes the outbox message in its transaction, a real `rq worker` process sends the mail to a
real SMTP server (aiosmtpd), and the admins' mail log shows it."""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.actors import Actor
from app.admin.delegation import set_delegation
from app.extensions import db
from app.mail.models import SentMail
from app.models import WorkItem
from app.outbox.models import OutboxMessage
from app.outbox.services import relay
from app.queues.services import bulk_act
from app.types import utcnow
from app.unit_of_work import commit
from app.web import localtime
from app.work.actions import perform
from app.work.services import create_items
from tests.approvals.conftest import run_worker
from tests.conftest import actor, csrf_from

ITEM_URL = re.compile(r"http://cleardesk\.test/items/(\d+)")


@pytest.fixture
def desk(make_tenant, make_user):
    tenant = make_tenant()
    tenant.brand_name, tenant.brand_color = "Northwind Finance", "#0f766e"
    commit()
    return {
        "tenant": tenant,
        "manager": make_user("max@x.test", [tenant], roles=("manager",), name="Max Manager"),
        "analyst": make_user("ava@x.test", [tenant], roles=("analyst",), name="Ava Analyst"),
        "other": make_user("olly@x.test", [tenant], roles=("analyst",), name="Olly Other"),
        "admin": make_user("ada@x.test", [tenant], roles=("admin",), name="Ada Admin"),
    }


def _exception(make_item, tenant, amount="1200.00", at_risk="950.00", **extra):
    return make_item(tenant, kind="billing_exception", amount=amount, amount_at_risk=at_risk,
                     **extra)


def _assigned_topics() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(OutboxMessage)
                             .where(OutboxMessage.topic == "work.assigned"))


def test_a_managers_reassign_mails_the_analyst_once_with_the_item_and_logs_it(
        relaying, inbox, desk, make_item, client, auth):
    tenant, analyst = desk["tenant"], desk["analyst"]
    item = _exception(make_item, tenant)
    auth.login("max@x.test")
    page = client.get(f"/items/{item.id}")
    response = client.post(f"/items/{item.id}/act", data={
        "csrf_token": csrf_from(page.text), "action": "reassign",
        "assignee_id": str(analyst.id)})
    assert response.status_code == 303
    run_worker(relaying)

    [mail] = inbox.messages
    assert analyst.email in mail["To"]
    assert mail["Subject"] == (f"Assigned to you: {item.title} — USD 950.00 "
                               f"(Northwind Finance)")
    text, html = inbox.text(mail), inbox.html(mail)
    db.session.expire_all()
    item = db.session.get(WorkItem, item.id)
    due = localtime(item.sla_due_at, tenant)
    assert due.endswith(("EST", "EDT"))  # the tenant's timezone, not UTC
    for body in (text, html):
        assert "Northwind Finance" in body
        assert "Billing exception: Payment failed" in body
        assert "Amount at risk" in body and "USD 950.00" in body
        assert f"SLA due" in body and due in body
        assert "Reassigned by Max Manager" in body
        assert f"http://cleardesk.test/items/{item.id}" in body
    assert "#0f766e" in html  # the shared frame in the tenant's brand
    # The admins' mail log shows it like any other mail.
    [logged] = db.session.scalars(select(SentMail).where(SentMail.kind == "assigned")).all()
    assert (logged.item_id, logged.recipient_id) == (item.id, analyst.id)
    auth.login("ada@x.test")
    log_page = client.get("/admin/mail/")
    assert log_page.status_code == 200 and "Assigned to you: " in log_page.text


def test_a_bulk_reassign_of_several_items_sends_one_mail_listing_them_all(
        relaying, inbox, desk, make_item, client, auth):
    tenant, analyst = desk["tenant"], desk["analyst"]
    items = [_exception(make_item, tenant, at_risk=f"{100 * n}.00") for n in range(1, 4)]
    items.append(make_item(tenant, kind="settlement_dispute", amount="10000.00",
                           calculated_amount="7000.00"))
    auth.login("max@x.test")
    token = auth.csrf("/queues/unassigned")
    response = client.post("/queues/unassigned/bulk", data={
        "csrf_token": token, "action": "reassign", "assignee_id": str(analyst.id),
        "selected_ids": [str(i.id) for i in items], "queue": "unassigned", "filters": ""})
    assert response.status_code == 303
    assert _assigned_topics() == 1  # one message for the whole unit of work
    run_worker(relaying)

    [mail] = inbox.messages
    assert analyst.email in mail["To"]
    assert mail["Subject"] == "4 items assigned to you (Northwind Finance)"
    text = inbox.text(mail)
    assert sorted(int(i) for i in set(ITEM_URL.findall(text))) == sorted(i.id for i in items)
    assert "Delta USD 3,000.00" in text and "Amount at risk USD 300.00" in text
    assert text.count("Reassigned by Max Manager") == 4
    assert "http://cleardesk.test/queues/mine" in text
    assert db.session.scalar(select(func.count()).select_from(SentMail)) == 1


def test_a_digest_lists_at_most_fifty_items_and_points_to_my_work_for_the_rest(
        relaying, inbox, desk, make_item):
    tenant, analyst, manager = desk["tenant"], desk["analyst"], desk["manager"]
    ids = [_exception(make_item, tenant).id for _ in range(53)]
    result = bulk_act(actor(manager), ids, "reassign", assignee_id=analyst.id)
    commit()
    assert len(result.done) == 53
    run_worker(relaying)

    [mail] = inbox.messages
    assert mail["Subject"] == "53 items assigned to you (Northwind Finance)"
    text, html = inbox.text(mail), inbox.html(mail)
    assert len(set(ITEM_URL.findall(text))) == 50
    assert "... and 3 more from Northwind Finance." in text
    assert "… and 3 more" in html and "http://cleardesk.test/queues/mine" in html


def test_claiming_or_taking_work_yourself_mails_nobody(relaying, inbox, desk, make_item):
    tenant, analyst, manager = desk["tenant"], desk["analyst"], desk["manager"]
    claimed = _exception(make_item, tenant)
    taken = _exception(make_item, tenant)
    perform(actor(analyst), claimed.id, "claim")
    perform(actor(manager), taken.id, "reassign", assignee_id=manager.id)
    commit()
    assert _assigned_topics() == 0
    run_worker(relaying)
    assert inbox.messages == []


def test_approvals_reassigned_are_left_to_their_step_mails(relaying, inbox, desk, make_item,
                                                           make_user):
    tenant, manager = desk["tenant"], desk["manager"]
    approver = make_user("ann@x.test", [tenant], roles=("approver",), limit="60000")
    item = make_item(tenant, kind="approval", amount="500.00")
    perform(actor(manager), item.id, "reassign", assignee_id=approver.id)
    commit()
    assert _assigned_topics() == 0


def test_a_policy_rule_assignment_through_a_real_worker_mails_naming_the_rule(
        relaying, inbox, admins, make_policy, make_user, make_item):
    tenant, author, checker = admins
    analyst = make_user("ava@x.test", [tenant], roles=("analyst",), name="Ava Analyst")
    policy = make_policy(tenant, author, checker, [
        {"name": "Tax failures to an analyst", "kind": "billing_exception",
         "condition": 'subtype == "tax_validation_failed"', "outcome": "assign",
         "assign_role": "analyst"}])
    tax = make_item(tenant, kind="billing_exception", subtype="tax_validation_failed",
                    amount="1200.00", amount_at_risk="1200.00")
    run_worker(relaying)

    db.session.expire_all()
    assert db.session.get(WorkItem, tax.id).assignee_id == analyst.id
    [mail] = inbox.messages
    assert analyst.email in mail["To"]
    text = inbox.text(mail)
    assert (f'Routed by policy version {policy.version}, rule 1 '
            f'"Tax failures to an analyst"') in text
    assert f"http://cleardesk.test/items/{tax.id}" in text


def test_a_policy_batch_mails_each_assignee_once_for_all_their_items(
        relaying, inbox, admins, make_policy, make_user):
    tenant, author, checker = admins
    analyst = make_user("ava@x.test", [tenant], roles=("analyst",), name="Ava Analyst")
    make_policy(tenant, author, checker, [
        {"name": "Tax failures to an analyst", "kind": "billing_exception",
         "condition": 'subtype == "tax_validation_failed"', "outcome": "assign",
         "assign_role": "analyst"}])
    ids, _ = create_items(Actor.system("billing import"), tenant.id, [
        {"kind": "billing_exception", "subtype": "tax_validation_failed",
         "title": f"Tax check {n}", "external_ref": f"TX-{n}", "source_system": "billing",
         "counterparty": "Acme Labs", "amount": "400.00"} for n in range(6)])
    commit()
    run_worker(relaying)

    db.session.expire_all()
    assert {db.session.get(WorkItem, i).assignee_id for i in ids} == {analyst.id}
    [mail] = inbox.messages
    assert mail["Subject"].startswith("6 items assigned to you")
    assert sorted(int(i) for i in set(ITEM_URL.findall(inbox.text(mail)))) == sorted(ids)


def test_the_same_message_delivered_twice_sends_one_mail(relaying, inbox, desk, make_item):
    tenant, analyst, manager = desk["tenant"], desk["analyst"], desk["manager"]
    item = _exception(make_item, tenant)
    perform(actor(manager), item.id, "reassign", assignee_id=analyst.id)
    commit()
    run_worker(relaying)
    assert len(inbox.messages) == 1
    # As if the worker died after the mail's commit and before marking the message done.
    message = db.session.scalars(select(OutboxMessage)
                                 .where(OutboxMessage.topic == "work.assigned")).one()
    message.processed_at = None
    commit()
    assert relay([message.id]) == 1
    run_worker(relaying)
    db.session.expire_all()
    assert db.session.get(OutboxMessage, message.id).processed_at is not None
    assert len(inbox.messages) == 1


def test_a_deactivated_assignee_gets_no_mail(relaying, inbox, desk, make_item):
    tenant, analyst, manager = desk["tenant"], desk["analyst"], desk["manager"]
    item = _exception(make_item, tenant)
    perform(actor(manager), item.id, "reassign", assignee_id=analyst.id)
    commit()
    # Deactivated before the worker got to the mail.
    analyst = db.session.get(type(analyst), analyst.id)
    analyst.active = False
    commit()
    run_worker(relaying)
    assert inbox.messages == []
    assert db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "work.assigned")).one().processed_at is not None


def test_an_item_reassigned_again_before_the_mail_goes_only_to_its_holder(
        relaying, inbox, desk, make_item):
    tenant, analyst, other, manager = (desk["tenant"], desk["analyst"], desk["other"],
                                       desk["manager"])
    item = _exception(make_item, tenant)
    app = relaying
    app.config["OUTBOX_RELAY_ON_COMMIT"] = False  # both messages wait for the worker
    perform(actor(manager), item.id, "reassign", assignee_id=analyst.id)
    commit()
    perform(actor(manager), item.id, "reassign", assignee_id=other.id)
    commit()
    ids = list(db.session.scalars(select(OutboxMessage.id)
                                  .where(OutboxMessage.topic == "work.assigned")))
    assert relay(ids) == 2
    run_worker(relaying)
    assert [m["To"] for m in inbox.messages] == ["Olly Other <olly@x.test>"]


def test_an_assignee_out_of_office_is_told_who_stands_in_for_them(
        relaying, inbox, desk, make_item):
    tenant, analyst, manager = desk["tenant"], desk["analyst"], desk["manager"]
    today = utcnow().date()
    # The delegation code lets only approvers and managers stand in (it was made for steps).
    set_delegation(actor(desk["admin"]), tenant.id, analyst.id, delegate_id=manager.id,
                   first_day=today - timedelta(days=1), last_day=today + timedelta(days=2))
    commit()
    item = _exception(make_item, tenant)
    perform(actor(manager), item.id, "reassign", assignee_id=analyst.id)
    commit()
    run_worker(relaying)
    [mail] = inbox.messages
    until = (today + timedelta(days=2)).isoformat()
    assert (f"You are out of office until {until}; Max Manager stands in for you on it."
            in inbox.text(mail))
    assert Decimal("950.00") == db.session.get(WorkItem, item.id).amount_at_risk


def test_a_reassign_rolled_back_leaves_no_notice_behind(relaying, inbox, desk, make_item):
    tenant, analyst, manager = desk["tenant"], desk["analyst"], desk["manager"]
    item = _exception(make_item, tenant)
    perform(actor(manager), item.id, "reassign", assignee_id=analyst.id)
    db.session.rollback()  # the request failed after the reassign
    perform(actor(analyst), _exception(make_item, tenant).id, "claim")
    commit()  # the next unit of work on the same session writes only its own
    assert _assigned_topics() == 0
    run_worker(relaying)
    assert inbox.messages == []


def test_a_bulk_reassign_across_tenants_is_still_one_mail_with_a_section_per_tenant(
        relaying, inbox, make_tenant, make_user, make_item):
    northwind = make_tenant()
    contoso = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    manager = make_user("max@x.test", [northwind, contoso], roles=("manager",))
    analyst = make_user("ava@x.test", [northwind, contoso], roles=("analyst",))
    ids = [_exception(make_item, northwind).id, _exception(make_item, contoso).id]
    bulk_act(actor(manager), ids, "reassign", assignee_id=analyst.id)
    commit()
    run_worker(relaying)

    [mail] = inbox.messages
    assert mail["Subject"] == "2 items assigned to you (2 tenants)"
    text = inbox.text(mail)
    assert "== Contoso (1) ==" in text and "== Northwind (1) ==" in text
    assert "EUR 950.00" in text and "USD 950.00" in text
    assert re.search(r"SLA due \S+ \S+ CE[S]?T", text)  # Berlin time for Contoso's item
    assert text.rstrip().endswith("— Cleardesk")  # no one tenant's brand on a shared mail
