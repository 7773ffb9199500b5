"""The auditor pages: who may read which tenant's trail, search and paging, an item's
timeline, an event in full, the access review, and the admins' alerts."""
import csv
import io
import re
from datetime import date, timedelta

import pyotp
import pytest
from sqlalchemy import func, select

from app.audit.models import AuditAlert, AuditEvent
from app.audit.services import raise_alert, verify_chain
from app.audit.services import ChainReport
from app.auth.models import SecondFactor
from app.auth.second_factor import (
    confirm_enrolment,
    decrypt_secret,
    start_enrolment,
    verify_code,
)
from app.extensions import db
from app.models import Membership
from app.types import utcnow
from app.unit_of_work import commit
from app.work.services import add_comment
from tests.conftest import SYSTEM, actor


def _seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<td class="seq"><a href="/audit/events/\d+"[^>]*>(\d+)</a>',
                                       html)]


# ---------------------------------------------------------------------------------------------
# Who sees what.


@pytest.mark.parametrize("who", ["auditor", "admin"])
def test_auditors_and_admins_of_a_tenant_see_its_events(world, sign_in, who):
    client = sign_in(getattr(world, who))

    page = client.get(f"/audit/?tenant={world.northwind.id}")

    assert page.status_code == 200
    assert "Checked the contract" in page.text
    assert "Contoso only" not in page.text
    assert _seqs(page.text)[0] == db.session.scalar(
        select(func.max(AuditEvent.seq)).where(AuditEvent.chain_id == world.northwind.id))


def test_a_member_who_neither_audits_nor_administers_is_refused(world, sign_in):
    client = sign_in(world.approver)
    assert client.get(f"/audit/?tenant={world.northwind.id}").status_code == 403
    assert client.get("/audit/").status_code == 403
    assert client.get(f"/audit/items/{world.item.id}").status_code == 403
    assert client.get(f"/audit/access-review?tenant={world.northwind.id}").status_code == 403
    assert client.get(f"/audit/access-review.csv?tenant={world.northwind.id}").status_code == 403


def test_another_tenants_trail_does_not_exist_for_an_auditor(world, sign_in):
    client = sign_in(world.auditor)
    foreign_event = db.session.scalar(select(AuditEvent.id).where(
        AuditEvent.chain_id == world.contoso.id))

    assert client.get(f"/audit/?tenant={world.contoso.id}").status_code == 404
    assert client.get(f"/audit/items/{world.foreign_item.id}").status_code == 404
    assert client.get(f"/audit/events/{foreign_event}").status_code == 404
    assert client.get(f"/audit/access-review?tenant={world.contoso.id}").status_code == 404
    assert client.get("/audit/items/999999").status_code == 404


def test_signed_out_visitors_are_sent_to_sign_in(client, world):
    response = client.get("/audit/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_audit_link_is_in_the_nav_only_for_auditors_and_admins(world, sign_in):
    for user, shown in ((world.auditor, True), (world.admin, True), (world.approver, False)):
        page = sign_in(user).get("/queues/mine")
        assert ('href="/audit/"' in page.text) is shown, user.email


# ---------------------------------------------------------------------------------------------
# Searching.


@pytest.fixture
def auditor(world, sign_in):
    return sign_in(world.auditor)


def test_search_by_item_lists_only_that_items_events(world, auditor):
    page = auditor.get(f"/audit/?tenant={world.northwind.id}&item={world.item.id}")
    expected = list(db.session.scalars(
        select(AuditEvent.seq).where(AuditEvent.item_id == world.item.id)
        .order_by(AuditEvent.seq.desc())))
    assert _seqs(page.text) == expected and len(expected) == 5


def test_search_by_actor_email_finds_what_that_person_did(world, auditor):
    page = auditor.get(f"/audit/?tenant={world.northwind.id}&actor=approver@example.com")
    rows = _seqs(page.text)
    assert len(rows) == 4  # the claim and three comments
    actions = set(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.chain_id == world.northwind.id, AuditEvent.seq.in_(rows))))
    assert actions == {"item.claimed", "item.commented"}


def test_search_by_action_exact_and_by_prefix(world, auditor):
    exact = auditor.get(f"/audit/?tenant={world.northwind.id}&action=item.commented")
    assert len(_seqs(exact.text)) == 3
    prefix = auditor.get(f"/audit/?tenant={world.northwind.id}&action=membership.*")
    granted = db.session.scalar(select(func.count()).where(
        AuditEvent.chain_id == world.northwind.id, AuditEvent.action == "membership.granted"))
    assert len(_seqs(prefix.text)) == granted == 4


def test_search_by_actor_type(world, auditor):
    page = auditor.get(f"/audit/?tenant={world.northwind.id}&actor_type=user")
    assert len(_seqs(page.text)) == 4
    system = auditor.get(f"/audit/?tenant={world.northwind.id}&actor_type=system")
    assert len(_seqs(system.text)) == 5  # four memberships and the item's creation


def test_search_by_date_range_in_the_tenants_local_dates(world, auditor):
    today = utcnow().astimezone(__import__("zoneinfo").ZoneInfo("America/New_York")).date()
    everything = _seqs(auditor.get(f"/audit/?tenant={world.northwind.id}").text)
    todays = _seqs(auditor.get(
        f"/audit/?tenant={world.northwind.id}&date_from={today}&date_to={today}").text)
    earlier = _seqs(auditor.get(
        f"/audit/?tenant={world.northwind.id}&date_to={today - timedelta(days=1)}").text)
    assert todays == everything and earlier == []


def test_an_htmx_search_answers_with_the_results_only(world, auditor):
    response = auditor.get(f"/audit/?tenant={world.northwind.id}&action=item.commented",
                           headers={"HX-Request": "true"})
    assert response.text.lstrip().startswith('<div id="results">')
    assert "<html" not in response.text
    assert "HX-Request" in response.headers["Vary"]


def test_events_are_keyset_paged_by_sequence_number(world, auditor):
    for i in range(60):
        add_comment(SYSTEM, world.item.id, f"page filler {i}")
    commit()
    head = db.session.scalar(select(func.max(AuditEvent.seq))
                             .where(AuditEvent.chain_id == world.northwind.id))

    first = auditor.get(f"/audit/?tenant={world.northwind.id}")
    seqs = _seqs(first.text)
    assert seqs == list(range(head, head - 50, -1))
    more = re.search(r'hx-get="(/audit/\?[^"]*before=(\d+)[^"]*)"', first.text)
    assert more and int(more.group(2)) == seqs[-1]

    rest = auditor.get(more.group(1).replace("&amp;", "&"), headers={"HX-Request": "true"})
    assert _seqs(rest.text) == list(range(seqs[-1] - 1, 0, -1))
    assert rest.text.lstrip().startswith("<tr")
    assert "Older events" not in rest.text


def test_a_letter_typed_in_the_item_box_answers_a_sentence_beside_it_not_an_error_page(
        world, auditor):
    response = auditor.get(f"/audit/?tenant={world.northwind.id}&item=12a",
                           headers={"HX-Request": "true"})

    assert response.status_code == 400  # swapped by htmx like any answer (see base.html)
    assert "HX-Retarget" not in response.headers  # the results, not a stale page above them
    text = response.text
    assert text.lstrip().startswith('<div id="results">')
    assert "An item number is digits only, like 1042." in text
    assert re.search(r'<span class="error-slot" id="slot-item" hx-swap-oob="true"><small '
                     r'class="field-error" id="item-error">An item number is digits only',
                     text)
    assert _seqs(text)  # the events, searched without the unreadable number

    fixed = auditor.get(f"/audit/?tenant={world.northwind.id}&item=12",
                        headers={"HX-Request": "true"})
    assert fixed.status_code == 200
    assert '<span class="error-slot" id="slot-item" hx-swap-oob="true"></span>' in fixed.text


def test_a_bad_filter_is_a_bad_request(world, auditor):
    assert auditor.get(f"/audit/?tenant={world.northwind.id}&item=abc").status_code == 400
    assert auditor.get(f"/audit/?tenant={world.northwind.id}&date_from=2026-13-45"
                       ).status_code == 400


# ---------------------------------------------------------------------------------------------
# An item's timeline and one event.


def test_an_items_timeline_lists_all_its_events_oldest_first(world, auditor):
    page = auditor.get(f"/audit/items/{world.item.id}")
    assert page.status_code == 200
    assert _seqs(page.text) == sorted(db.session.scalars(
        select(AuditEvent.seq).where(AuditEvent.item_id == world.item.id)))
    assert world.item.title in page.text
    assert "item.claimed" in page.text and "Avery Approver" in page.text


def test_an_event_page_shows_everything_with_both_hashes_and_their_checks(world, auditor):
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.item_id == world.item.id, AuditEvent.action == "item.commented")
        .order_by(AuditEvent.seq)).first()

    page = auditor.get(f"/audit/events/{event.id}")

    assert page.status_code == 200
    for text in (event.hash, event.prev_hash, "Checked the contract", "127.0.0.1", "pytest",
                 "content matches its hash", f"links to #{event.seq - 1}"):
        assert text in page.text


def test_an_event_page_says_when_the_content_no_longer_matches(world, auditor,
                                                                without_audit_triggers):
    event_id = db.session.scalar(select(AuditEvent.id).where(
        AuditEvent.item_id == world.item.id, AuditEvent.action == "item.commented"))
    db.session.execute(AuditEvent.__table__.update().where(AuditEvent.id == event_id)
                       .values(comment="rewritten"))
    commit()
    page = auditor.get(f"/audit/events/{event_id}")
    assert "content does not match its hash" in page.text


# ---------------------------------------------------------------------------------------------
# The chain's anchor and the admins' alerts.


def test_the_page_says_how_far_the_chain_was_verified(world, auditor, runner):
    assert "Not verified yet" in auditor.get(f"/audit/?tenant={world.northwind.id}").text
    assert runner.invoke(args=["audit", "anchor"]).exit_code == 0
    head = db.session.scalar(select(func.max(AuditEvent.seq))
                             .where(AuditEvent.chain_id == world.northwind.id))
    page = auditor.get(f"/audit/?tenant={world.northwind.id}")
    assert f"Verified up to #{head}</strong> at " in page.text


@pytest.fixture
def alert(world):
    report = ChainReport(world.northwind.id, 3, False, "event #4 was edited: its content no "
                         "longer matches its hash", 4)
    alert = raise_alert(report)
    commit()
    return alert


def test_admins_see_an_alert_in_the_nav_and_a_banner_until_one_acknowledges(world, sign_in,
                                                                             alert):
    admin = sign_in(world.admin)
    queue = admin.get("/queues/mine")
    assert "⚠ 1" in queue.text
    page = admin.get(f"/audit/?tenant={world.northwind.id}")
    assert "Audit verification failed" in page.text and "event #4 was edited" in page.text

    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = admin.post(f"/audit/alerts/{alert.id}/acknowledge", data={"csrf_token": token})

    assert response.status_code == 303
    db.session.expire_all()
    assert db.session.get(AuditAlert, alert.id).acknowledged_by_id == world.admin.id
    assert "Audit verification failed" not in admin.get(f"/audit/?tenant={world.northwind.id}").text
    assert "⚠" not in admin.get("/queues/mine").text
    assert db.session.scalar(select(func.count()).where(
        AuditEvent.action == "audit.alert_acknowledged")) == 1


def test_auditors_see_no_alert_banner_and_cannot_acknowledge(world, sign_in, alert):
    client = sign_in(world.auditor)
    page = client.get(f"/audit/?tenant={world.northwind.id}")
    assert "Audit verification failed" not in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert client.post(f"/audit/alerts/{alert.id}/acknowledge",
                       data={"csrf_token": token}).status_code == 403
    db.session.expire_all()
    assert db.session.get(AuditAlert, alert.id).acknowledged_at is None


# ---------------------------------------------------------------------------------------------
# The access review.


@pytest.fixture
def delegation(world):
    membership = db.session.scalars(select(Membership).where(
        Membership.user_id == world.approver.id, Membership.tenant_id == world.northwind.id)).one()
    membership.delegate_id = world.admin.id
    membership.delegate_from = date.today() - timedelta(days=1)
    membership.delegate_until = date.today() + timedelta(days=6)
    commit()
    return membership


def test_the_access_review_lists_roles_limits_delegations_and_last_sign_in(world, auditor,
                                                                         delegation):
    page = auditor.get(f"/audit/access-review?tenant={world.northwind.id}")
    assert page.status_code == 200
    for text in ("Avery Approver", "USD 50,000.00", "approvals", "Ada Admin", "active",
                 "acts for Avery Approver", "Riley Requester"):
        assert text in page.text
    assert "Claus Auditor" not in page.text  # contoso's people are not northwind's


def test_the_access_review_csv_has_one_row_per_member_and_is_audited(world, auditor,
                                                                     delegation):
    response = auditor.get(f"/audit/access-review.csv?tenant={world.northwind.id}")

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "access-review-northwind.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    by_email = {r["email"]: r for r in rows}
    assert set(by_email) == {"auditor@example.com", "admin@example.com", "approver@example.com",
                             "requester@example.com"}
    approver = by_email["approver@example.com"]
    assert approver["roles"] == "approver"
    assert approver["approval_limit"] == "50000.00" and approver["currency"] == "USD"
    assert approver["can_decide"] == "approvals"
    assert approver["delegates_to"] == "Ada Admin" and approver["delegation_state"] == "active"
    assert approver["delegation_until"] == str(date.today() + timedelta(days=6))
    assert by_email["admin@example.com"]["acts_for"] == "Avery Approver"
    assert by_email["auditor@example.com"]["can_decide"] == "audit trail (read only)"
    assert by_email["auditor@example.com"]["last_sign_in_utc"]  # the sign-in just now
    assert by_email["requester@example.com"]["last_sign_in_utc"] == ""
    [event] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "audit.access_review_exported"))
    assert event.actor_id == world.auditor.id and event.chain_id == world.northwind.id


def test_a_verification_that_fails_raises_one_alert_until_acknowledged(world, runner,
                                                                      without_audit_triggers):
    db.session.execute(AuditEvent.__table__.update().where(
        AuditEvent.chain_id == world.northwind.id, AuditEvent.seq == 2).values(action="forged"))
    commit()
    assert not verify_chain(world.northwind.id).ok

    first = runner.invoke(args=["audit", "anchor"])
    second = runner.invoke(args=["audit", "anchor"])

    assert first.exit_code == 1 and "event #2 was edited" in first.output
    assert second.exit_code == 1
    db.session.expire_all()
    [alert] = db.session.scalars(select(AuditAlert))
    assert alert.tenant_id == world.northwind.id and alert.bad_seq == 2
    from app.outbox.models import OutboxMessage

    [message] = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "audit.verification_failed"))
    assert message.payload["alert_id"] == alert.id and message.tenant_id == world.northwind.id


def test_the_access_review_shows_each_persons_second_factor_and_recovery_codes_left(
        world, auditor):
    start_enrolment(actor(world.approver))
    secret = decrypt_secret(db.session.get(SecondFactor, world.approver.id).secret_encrypted)
    codes = confirm_enrolment(actor(world.approver), pyotp.TOTP(secret).now())
    verify_code(actor(world.approver), world.approver, codes[0], purpose="sign_in")
    world.northwind.require_second_factor = True
    commit()

    page = auditor.get(f"/audit/access-review?tenant={world.northwind.id}")
    assert "TOTP on" in page.text and "9 recovery codes left" in page.text
    assert "missing (required)" in page.text  # the admin has none, and the tenant requires it

    response = auditor.get(f"/audit/access-review.csv?tenant={world.northwind.id}")
    by_email = {r["email"]: r for r in csv.DictReader(io.StringIO(response.text))}
    approver = by_email["approver@example.com"]
    assert (approver["second_factor"], approver["recovery_codes_left"]) == ("totp", "9")
    assert by_email["admin@example.com"]["second_factor"] == "missing (required)"
    requester = by_email["requester@example.com"]  # decides nothing: not required
    assert (requester["second_factor"], requester["recovery_codes_left"]) == ("none", "")


def test_the_access_review_says_which_factors_each_person_has(world, auditor):
    from app.auth import passkeys
    from tests.auth.webauthn_authenticator import SoftAuthenticator

    for user in (world.approver, world.admin):
        options = passkeys.registration_options(actor(user), "http://localhost")
        passkeys.register_passkey(actor(user), "http://localhost", "Laptop",
                                  SoftAuthenticator().create(options))
    start_enrolment(actor(world.approver))
    secret = decrypt_secret(db.session.get(SecondFactor, world.approver.id).secret_encrypted)
    confirm_enrolment(actor(world.approver), pyotp.TOTP(secret).now())
    world.northwind.require_second_factor = True
    commit()

    page = auditor.get(f"/audit/access-review?tenant={world.northwind.id}")
    assert ">passkey<" in page.text and "TOTP on" in page.text
    response = auditor.get(f"/audit/access-review.csv?tenant={world.northwind.id}")
    by_email = {r["email"]: r for r in csv.DictReader(io.StringIO(response.text))}
    assert by_email["approver@example.com"]["second_factor"] == "passkey + totp"
    # A passkey alone meets the tenant's requirement.
    assert by_email["admin@example.com"]["second_factor"] == "passkey"
    assert by_email["admin@example.com"]["recovery_codes_left"] == ""
