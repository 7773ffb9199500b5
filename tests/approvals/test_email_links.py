"""Approving from an email: a real SMTP server receives the mail from a real worker process;
the link parsed out of the real message is then used, refused, replayed and tampered with."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from app.approvals.models import ApprovalLinkToken
from app.audit.models import AuditEvent
from app.extensions import db
from app.mail.models import SentMail
from app.models import ApprovalAssignment, WorkItem
from app.types import utcnow
from app.unit_of_work import commit
from tests.approvals.conftest import run_worker
from tests.conftest import actor, arrange, csrf_from


def _path(link: str) -> str:
    return urlsplit(link).path


def _state():
    """Everything a GET must leave alone: events, links, items and their versions."""
    db.session.expire_all()
    return (
        db.session.scalar(select(func.count()).select_from(AuditEvent)),
        db.session.execute(select(ApprovalLinkToken.id, ApprovalLinkToken.used_at,
                                  ApprovalLinkToken.revoked_at)).all(),
        db.session.execute(select(WorkItem.id, WorkItem.state, WorkItem.version)).all(),
    )


def _mailed_link(app, inbox, team, amount="1200.00", to="ann@x.test", make_item=None):
    item = make_item(team["tenant"], amount=amount, requester=team["requester"],
                     details={"reason": "Renewal at risk; matching a competitor quote"})
    run_worker(app)
    [message] = inbox.to(to)
    return item, message, inbox.link(message)


def _csrf(client) -> str:
    """The session's CSRF token (a refused link's page has no form to take it from)."""
    return csrf_from(client.get("/login", follow_redirects=True).text)


def _decide(client, path, action, reason=None):
    page = client.get(path)
    data = {"action": action, "csrf_token": csrf_from(page.text)}
    if reason is not None:
        data["reason"] = reason
    return client.post(path, data=data)


@pytest.fixture
def mailed(relaying, inbox, team, make_item):
    item, message, link = _mailed_link(relaying, inbox, team, make_item=make_item)
    return {"item": item, "message": message, "link": link, "path": _path(link)}


def test_the_mail_carries_the_summary_in_the_tenants_branding(mailed, team, inbox):
    message = mailed["message"]
    text, html = inbox.text(message), inbox.html(message)
    assert "Approval needed" in message["Subject"] and "USD 1,200.00" in message["Subject"]
    assert "Northwind Finance" in message["From"] and message["To"].endswith("<ann@x.test>")
    for part in (text, html):
        assert "USD 1,200.00" in part and "Acme Labs" in part and "Rita Requester" in part
        assert "Renewal at risk; matching a competitor quote" in part
        assert mailed["link"] in part
    assert "#0f766e" in html and "Northwind Finance" in html
    # The SLA due time is shown in the tenant's timezone.
    assert ("EST" in text) or ("EDT" in text)


def test_the_link_is_stored_only_as_a_hash_and_the_mail_log_redacts_it(mailed):
    token = mailed["path"].rsplit("/", 1)[1]
    [row] = db.session.scalars(select(ApprovalLinkToken)).all()
    nonce = token.split(".")[0]
    assert row.nonce_hash != token and token not in row.nonce_hash
    assert len(row.nonce_hash) == 64 and row.item_version == mailed["item"].version
    assert row.expires_at - row.created_at == timedelta(hours=72)
    [sent] = db.session.scalars(select(SentMail)).all()
    assert sent.recipient == "ann@x.test" and sent.item_id == mailed["item"].id
    assert token not in sent.text_body and nonce not in sent.text_body
    assert "[link token redacted]" in sent.text_body


def test_get_and_head_change_nothing_and_post_approves_once(client, mailed, team):
    path = mailed["path"]
    before = _state()
    for _ in range(2):
        page = client.get(path)
        assert page.status_code == 200
        assert "Approve" in page.text and "Reject" in page.text
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert "no-store" in page.headers["Cache-Control"]
        head = client.head(path)
        assert head.status_code == 200 and head.data == b""
    assert _state() == before

    page = client.get(path)
    assert "https://" not in page.text and "//cdn" not in page.text  # nothing third-party
    done = client.post(path, data={"action": "approve", "csrf_token": csrf_from(page.text)},
                       headers={"User-Agent": "PhoneMail/1.0"},
                       environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert done.status_code == 200 and "Approved" in done.text
    db.session.expire_all()
    item = db.session.get(WorkItem, mailed["item"].id)
    assert item.state == "approved"
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "item.approve")).one()
    assert event.actor_type == "email_link" and event.actor_id == team["approver"].id
    assert event.data["ip"] == "203.0.113.9" and event.data["user_agent"] == "PhoneMail/1.0"
    row = db.session.scalars(select(ApprovalLinkToken)).one()
    assert row.used_at is not None and row.used_by_id == team["approver"].id

    again = client.post(path, data={"action": "approve", "csrf_token": _csrf(client)})
    assert again.status_code == 409
    assert "already been used" in again.text and "Ann Approver" in again.text
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "item.approve")) == 1


def test_a_tampered_link_is_refused(client, mailed):
    path = mailed["path"]
    token = path.rsplit("/", 1)[1]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (f"/a/{flipped}", f"/a/{token[:20]}", "/a/not-a-token-at-all-really"):
        page = client.get(bad)
        assert page.status_code == 400 and "This link is not valid" in page.text
    before = _state()
    csrf = csrf_from(client.get(path).text)
    refused = client.post(f"/a/{flipped}", data={"action": "approve", "csrf_token": csrf})
    assert refused.status_code == 400 and "not valid" in refused.text
    assert _state() == before


def test_an_expired_link_is_refused(client, mailed):
    row = db.session.scalars(select(ApprovalLinkToken)).one()
    row.expires_at = utcnow() - timedelta(minutes=1)  # time moved past the link's life
    commit()
    page = client.get(mailed["path"])
    assert page.status_code == 410 and "This link has expired" in page.text
    refused = client.post(mailed["path"], data={"action": "approve", "csrf_token": _csrf(client)})
    assert refused.status_code == 410
    db.session.expire_all()
    assert db.session.get(WorkItem, mailed["item"].id).state == "pending"


def test_a_new_amount_supersedes_the_link(client, mailed):
    item = db.session.get(WorkItem, mailed["item"].id)
    arrange(item, amount=Decimal("9800.00"))
    page = client.get(mailed["path"])
    assert page.status_code == 409 and "changed after this link was sent" in page.text
    assert "USD 9,800.00" in page.text and "USD 1,200.00" in page.text
    refused = client.post(mailed["path"], data={"action": "approve",
                                                "csrf_token": _csrf(client)})
    assert refused.status_code == 409
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "pending"
    row = db.session.scalars(select(ApprovalLinkToken)).one()
    assert row.used_at is None and row.revoked_reason == "superseded"
    refusal = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "approval.link_refused")).one()
    assert refusal.actor_type == "email_link" and refusal.data["reason"] == "superseded"


def test_claiming_commenting_and_reassigning_leave_the_link_good(client, mailed, team,
                                                                  make_user):
    from app.work.services import add_comment, claim_item, release_item

    item_id = mailed["item"].id
    claim_item(actor(team["approver"]), item_id)
    commit()
    add_comment(actor(team["manager"]), item_id, "Looks fine to me")
    commit()
    release_item(actor(team["approver"]), item_id)
    commit()
    page = client.get(mailed["path"])
    assert page.status_code == 200 and "changed after this link was sent" not in page.text
    approved = _decide(client, mailed["path"], "approve")
    assert approved.status_code in (200, 303), approved.text
    db.session.expire_all()
    assert db.session.get(WorkItem, item_id).state == "approved"


def test_an_amended_detail_supersedes_the_link(client, mailed):
    item = db.session.get(WorkItem, mailed["item"].id)
    arrange(item, details={**item.details, "discount_pct": "35"})
    page = client.get(mailed["path"])
    assert page.status_code == 409 and "changed after this link was sent" in page.text


def test_a_step_decided_in_the_browser_revokes_the_link(client, auth, mailed, team):
    item_id = mailed["item"].id
    auth.login("ann@x.test")
    detail = client.get(f"/items/{item_id}")
    acted = client.post(f"/items/{item_id}/act", data={
        "action": "approve", "csrf_token": csrf_from(detail.text),
        "version": detail.text.split('name="version" value="')[1].split('"')[0]})
    assert acted.status_code == 303
    client.delete_cookie("session")
    row = db.session.scalars(select(ApprovalLinkToken)).one()
    db.session.refresh(row)
    assert row.revoked_reason == "decided"
    page = client.get(mailed["path"])
    assert page.status_code == 409 and "already decided" in page.text
    assert "Ann Approver approved step 1" in page.text
    refused = client.post(mailed["path"], data={"action": "reject", "reason": "no",
                                                "csrf_token": _csrf(client)})
    assert refused.status_code == 409
    db.session.expire_all()
    assert db.session.get(WorkItem, item_id).state == "approved"


def test_reject_needs_a_reason_and_the_link_survives_a_missing_one(client, mailed):
    missing = _decide(client, mailed["path"], "reject", reason="  ")
    assert missing.status_code == 422 and "Give a reason" in missing.text
    row = db.session.scalars(select(ApprovalLinkToken)).one()
    assert row.used_at is None
    done = _decide(client, mailed["path"], "reject", reason="Competitor quote not attached")
    assert done.status_code == 200 and "Rejected" in done.text
    db.session.expire_all()
    item = db.session.get(WorkItem, mailed["item"].id)
    assert item.state == "rejected" and item.steps[0].comment == "Competitor quote not attached"


def test_a_lowered_limit_or_a_deactivated_account_is_no_longer_permitted(client, mailed, team):
    membership = team["approver"].membership_in(team["tenant"].id)
    membership.approval_limit = Decimal("100.00")
    commit()
    page = client.get(mailed["path"])
    assert page.status_code == 403 and "You can no longer decide this" in page.text
    assert "USD 100.00" in page.text
    membership.approval_limit = Decimal("60000.00")
    team["approver"].active = False
    commit()
    page = client.get(mailed["path"])
    assert page.status_code == 403 and "deactivated" in page.text
    refused = client.post(mailed["path"], data={"action": "approve",
                                                "csrf_token": _csrf(client)})
    assert refused.status_code == 403
    db.session.expire_all()
    assert db.session.get(WorkItem, mailed["item"].id).state == "pending"


def test_a_post_without_a_csrf_token_changes_nothing(client, mailed):
    before = _state()
    refused = client.post(mailed["path"], data={"action": "approve"})
    assert refused.status_code == 400 and "Nothing was changed" in refused.text
    assert _state() == before


def test_above_the_step_up_amount_only_the_signed_in_approver_decides(
        relaying, inbox, team, make_item, client, auth):
    relaying.config["EMAIL_LINK_STEP_UP_ABOVE"] = "1000"
    item, _message, link = _mailed_link(relaying, inbox, team, amount="5000.00",
                                        make_item=make_item)
    path = _path(link)
    page = client.get(path)
    assert page.status_code == 200 and "Sign in to decide" in page.text
    assert 'name="action"' not in page.text
    refused = client.post(path, data={"action": "approve", "csrf_token": _csrf(client)})
    assert refused.status_code == 401 and "Sign in to decide" in refused.text

    auth.login("max@x.test")  # a manager, but not the approver the link is for
    page = client.get(path)
    assert page.status_code == 403 and "This link is for someone else" in page.text
    refused = client.post(path, data={"action": "approve", "csrf_token": _csrf(client)})
    assert refused.status_code == 403
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "pending"

    auth.login("ann@x.test")
    done = _decide(client, path, "approve")
    assert done.status_code == 200 and "Approved" in done.text
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "approved"


def test_only_the_approver_the_step_names_is_mailed(relaying, inbox, make_tenant, make_user,
                                                    make_item):
    tenant = make_tenant()
    requester = make_user("req@x.test", [tenant], roles=("requester",))
    approvers = [make_user(f"a{n}@x.test", [tenant], roles=("approver",)) for n in range(3)]
    busy = make_item(tenant, amount="10.00", requester=requester)  # routed to a0
    item = make_item(tenant, amount="20.00", requester=requester)
    run_worker(relaying)
    named = {a.step_id: a.approver_id for a in db.session.scalars(select(ApprovalAssignment))}
    first, second = named[busy.steps[0].id], named[item.steps[0].id]
    assert first == approvers[0].id
    assert second == approvers[1].id  # the one with fewer open steps
    assert sorted(r for _f, rcpts in inbox.envelopes for r in rcpts) == ["a0@x.test",
                                                                           "a1@x.test"]
    assert inbox.to("a2@x.test") == []


def test_an_out_of_office_approver_routes_to_their_delegate_who_decides_on_their_behalf(
        relaying, inbox, team, make_item, make_user, client):
    today = utcnow().date()
    deputy = make_user("dee@x.test", [team["tenant"]], roles=("approver",), limit="60000",
                       name="Dee Deputy")
    away = team["approver"].membership_in(team["tenant"].id)
    away.delegate_id = deputy.id
    away.delegate_from, away.delegate_until = today - timedelta(days=1), today + timedelta(days=3)
    commit()
    item = make_item(team["tenant"], amount="300.00", requester=team["requester"])
    assignment = db.session.get(ApprovalAssignment, item.steps[0].id)
    assert assignment.approver_id == team["approver"].id  # fewest open steps, but away
    run_worker(relaying)
    assert inbox.to("ann@x.test") == []
    [message] = inbox.to("dee@x.test")
    assert "on behalf of Ann Approver" in inbox.text(message)
    path = _path(inbox.link(message))
    assert "On behalf of" in client.get(path).text
    assert _decide(client, path, "approve").status_code == 200
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == item.id, AuditEvent.action == "item.approve")).one()
    assert event.actor_id == deputy.id and event.on_behalf_of_id == team["approver"].id
    assert event.actor_type == "email_link"


def test_approving_step_one_by_link_routes_and_mails_step_two(relaying, inbox, team, make_item,
                                                              client):
    item, message, link = _mailed_link(relaying, inbox, team, amount="75000.00",
                                       make_item=make_item)
    done = _decide(client, _path(link), "approve")
    assert done.status_code == 200 and "Max Manager" in done.text
    run_worker(relaying)
    [manager_mail] = inbox.to("max@x.test")
    assert "Step 2 of 2" in inbox.text(manager_mail)
    step_approved = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "approval.step_approved")).one()
    assert step_approved.data["next_approver_id"] == team["manager"].id
    assert _decide(client, _path(inbox.link(manager_mail)), "approve").status_code == 200
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "approved"


def test_a_redis_outage_at_assignment_delays_the_mail_and_sends_it_once(
        relaying, inbox, team, make_item):
    from app.outbox.jobs import relay_pending

    good_url = relaying.config["REDIS_URL"]
    relaying.config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    relaying.extensions.pop("cleardesk_redis", None)
    item = make_item(team["tenant"], amount="400.00", requester=team["requester"])
    assert db.session.get(ApprovalAssignment, item.steps[0].id) is not None
    run_worker_env = dict(relaying.config)
    assert run_worker_env["REDIS_URL"].endswith(":1/0")
    assert inbox.messages == []

    relaying.config["REDIS_URL"] = good_url
    relaying.extensions.pop("cleardesk_redis", None)
    assert relay_pending() == 2  # item.created and approval.step_assigned
    run_worker(relaying)
    assert len(inbox.to("ann@x.test")) == 1
    assert relay_pending() == 0
    run_worker(relaying)
    assert len(inbox.messages) == 1


def test_the_mail_and_the_link_page_show_the_facts_decided_on(relaying, inbox, team, make_item,
                                                              client):
    item = make_item(team["tenant"], amount="1200.00", requester=team["requester"],
                     subtype="discount",
                     details={"reason": "Matching a competitor", "discount_pct": "12",
                              "contract_term_months": 24})
    run_worker(relaying)
    [message] = inbox.to("ann@x.test")
    text = inbox.text(message)
    assert "Discount:      12%" in text and "Contract term: 24 months" in text
    assert "Matching a competitor" in text
    page = client.get(_path(inbox.link(message))).text
    assert "<dt>Discount</dt><dd>12%</dd>" in page
    assert "<dt>Contract term</dt><dd>24 months</dd>" in page
    assert item.id


def test_a_policy_routed_approval_mail_names_the_rule_and_the_risk_score(
        relaying, inbox, team, make_item, make_user):
    from app.policy import versions as policy_versions
    from app.unit_of_work import commit as finish

    tenant = team["tenant"]
    author = make_user("author@x.test", [tenant], roles=("admin",), limit="0")
    checker = make_user("checker@x.test", [tenant], roles=("admin",), limit="0")
    draft = policy_versions.create_draft(actor(author), tenant.id)
    policy_versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None,
                              name="Discounts need an approver", condition="amount > 100",
                              outcome="steps", steps_text="approver >= amount", queue=None)
    policy_versions.save_settings(actor(author), tenant.id, draft.id, max_auto_amount="",
                                  daily_auto_count="", daily_auto_amount="", qa_sample_pct="0",
                                  qa_role="manager", fallback_steps_text="approver >= amount",
                                  risk={"base": 20})
    policy_versions.submit_version(actor(author), tenant.id, draft.id)
    finish()
    policy_versions.activate_version(actor(checker), tenant.id, draft.id)
    finish()
    make_item(tenant, amount="1200.00", requester=team["requester"])
    run_worker(relaying)
    [message] = inbox.to("ann@x.test")
    text = inbox.text(message)
    assert "Routed by:     Discounts need an approver, policy version 1" in text
    assert "Risk score:    20 / 100" in text
