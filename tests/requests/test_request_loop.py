"""The request-info loop always comes back, and the requester hears every outcome: a real
worker process mails a real SMTP server. A requester is asked, answers on the item page and
resubmits, the step's approver gets a fresh link, decides, and the requester is told; an
item from a source system is asked through a webhook event and answered through the API."""
from __future__ import annotations

from sqlalchemy import select

from app.approvals.services import approve_step, reject_approval, request_info
from app.extensions import db
from app.models import WorkItem
from app.outbox.models import OutboxMessage
from app.unit_of_work import commit
from tests.api.conftest import BearerClient, item_payload, make_token  # noqa: F401 (a fixture)
from tests.approvals.conftest import inbox, relaying, run_worker, team  # noqa: F401 (fixtures)
from tests.conftest import actor, csrf_from


def _fresh(item_id):
    db.session.rollback()
    return db.session.get(WorkItem, item_id)


def test_asked_answered_resubmitted_approved_and_told(relaying, inbox, team, make_item, auth,
                                                       client):
    item = make_item(team["tenant"], amount="1200.00", requester=team["requester"],
                     details={"reason": "Renewal at risk"})
    run_worker(relaying)
    assert len(inbox.to("ann@x.test")) == 1  # the approver's request mail

    request_info(actor(team["approver"]), item.id, question="Which contract does this cover?")
    commit()
    run_worker(relaying)
    [question] = inbox.to("req@x.test")
    assert "Question about your request" in question["Subject"]
    text = inbox.text(question)
    assert "Which contract does this cover?" in text and "Ann Approver" in text
    assert f"/items/{item.id}" in text
    assert _fresh(item.id).sla_state == "paused"

    # The requester answers on the item page; the item goes back to the same approver.
    auth.login("req@x.test")
    page = client.get(f"/items/{item.id}")
    assert "Your answer" in page.text
    answered = client.post(f"/items/{item.id}/act", data={
        "csrf_token": csrf_from(page.text), "action": "resubmit", "version": _fresh(item.id).version,
        "comment": "The 2027 renewal, contract C-88."})
    assert answered.status_code == 303
    resubmitted = _fresh(item.id)
    assert resubmitted.state == "pending" and resubmitted.sla_state != "paused"
    run_worker(relaying)
    assert len(inbox.to("ann@x.test")) == 2  # a fresh link for the routed approver

    approve_step(actor(team["approver"]), item.id)
    commit()
    run_worker(relaying)
    outcome = [m for m in inbox.to("req@x.test") if "was approved" in m["Subject"]]
    assert len(outcome) == 1 and "Decided by Ann Approver" in inbox.text(outcome[0])
    run_worker(relaying)  # a second run mails nobody twice
    assert len([m for m in inbox.to("req@x.test") if "was approved" in m["Subject"]]) == 1


def test_a_rejection_tells_the_requester_the_reason(relaying, inbox, team, make_item):
    item = make_item(team["tenant"], amount="300.00", requester=team["requester"])
    reject_approval(actor(team["approver"]), item.id, reason="Outside the refund policy")
    commit()
    run_worker(relaying)
    [told] = [m for m in inbox.to("req@x.test") if "was rejected" in m["Subject"]]
    assert "Outside the refund policy" in inbox.text(told)


def test_a_source_system_is_asked_by_webhook_event_and_answers_through_the_api(
        relaying, team, client, make_token):
    api = BearerClient(client, make_token(team["tenant"]))
    created = api.post("/api/v1/items", json=item_payload(
        kind="approval", subtype="credit_memo", title="Credit for Acme", details={},
        amount="800.00", external_ref="BILL-7"))
    item_id = created.get_json()["id"]
    request_info(actor(team["approver"]), item_id, question="Which invoice?")
    commit()
    message = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "item.info_requested")).one()
    assert message.payload["question"] == "Which invoice?"
    answered = api.post(f"/api/v1/items/{item_id}/resubmit", json={"answer": "INV-2026-114"})
    assert answered.status_code == 200, answered.text
    assert answered.get_json()["state"] == "pending"
    assert _fresh(item_id).sla_state != "paused"


def test_the_api_cannot_answer_for_a_human_requester(relaying, team, client, make_token,
                                                      make_item):
    item = make_item(team["tenant"], amount="800.00", requester=team["requester"])
    request_info(actor(team["approver"]), item.id, question="Which invoice?")
    commit()
    api = BearerClient(client, make_token(team["tenant"]))
    refused = api.post(f"/api/v1/items/{item.id}/resubmit", json={"answer": "INV-1"})
    assert refused.status_code == 409 and "requester" in refused.text
    assert _fresh(item.id).state == "info_requested"


def test_an_answer_may_lower_the_amount_audited_and_never_raise_it(team, make_item):
    from app.approvals.services import resubmit
    from app.audit.models import AuditEvent
    from app.errors import ValidationFailed

    item = make_item(team["tenant"], amount="1200.00", requester=team["requester"])
    request_info(actor(team["approver"]), item.id, question="Is 1,200 right?")
    commit()
    try:
        resubmit(actor(team["requester"]), item.id, answer="It is 1,500", amount="1500.00")
    except ValidationFailed as refused:
        assert "new one" in refused.message and "amount" in refused.fields
    else:
        raise AssertionError("a larger amount was taken on resubmit")
    db.session.rollback()
    resubmit(actor(team["requester"]), item.id, answer="1,150 after the credit",
             amount="1150.00")
    commit()
    amended = _fresh(item.id)
    assert amended.state == "pending" and str(amended.amount) == "1150.00"
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "item.resubmit")).one()
    assert event.data["amended"] == {"amount": {"before": "1200.00", "after": "1150.00"}}
