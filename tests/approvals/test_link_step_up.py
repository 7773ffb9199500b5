"""Step-up on email-link approvals: above the tenant's step-up amount, the link's approver
enters a code of their second factor (real codes from pyotp); a tenant that requires a factor
sends an approver without one to sign in and enrol. A wrong code decides nothing, leaves the
link working and is audited."""
from __future__ import annotations

import time
from decimal import Decimal

import pyotp
import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth.models import SecondFactor
from app.auth.second_factor import confirm_enrolment, decrypt_secret, start_enrolment
from app.extensions import db
from app.models import WorkItem
from app.unit_of_work import commit
from tests.approvals.test_email_links import _csrf, _mailed_link, _path
from tests.conftest import actor, csrf_from


@pytest.fixture(autouse=True)
def fresh_time_step():
    """Start early in a 30-second step (the worker takes seconds), so the codes stay valid."""
    if time.time() % 30 > 15:
        time.sleep(30 - time.time() % 30 + 0.2)


def _enrol(user) -> str:
    start_enrolment(actor(user))
    secret = decrypt_secret(db.session.get(SecondFactor, user.id).secret_encrypted)
    confirm_enrolment(actor(user), pyotp.TOTP(secret).at(time.time() - 30))
    commit()
    return secret


def _events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                   .order_by(AuditEvent.id)))


def _post(client, path, **data):
    return client.post(path, data={"csrf_token": _csrf(client), **data})


def _state(item) -> str:
    db.session.expire_all()
    return db.session.get(WorkItem, item.id).state


def test_above_the_tenants_step_up_amount_the_approver_enters_a_code(
        relaying, inbox, team, make_item, client):
    team["tenant"].step_up_amount = Decimal("1000.00")
    commit()
    secret = _enrol(team["approver"])
    item, _message, link = _mailed_link(relaying, inbox, team, amount="5000.00",
                                        make_item=make_item)
    path = _path(link)

    page = client.get(path)
    assert page.status_code == 200
    assert "need a code from your authenticator app" in page.text
    assert 'name="code"' in page.text and "Sign in to decide" not in page.text

    missing = _post(client, path, action="approve")
    wrong = _post(client, path, action="approve", code="000000")
    assert missing.status_code == wrong.status_code == 401
    assert "not valid" in wrong.text
    assert _state(item) == "pending"
    failed = _events("auth.factor_failed")
    assert len(failed) == 2 and failed[0].data["purpose"] == "step_up_link"
    assert failed[0].tenant_id == team["tenant"].id
    assert [e.data["reason"] for e in _events("approval.link_refused")] == ["code", "code"]

    done = _post(client, path, action="approve", code=pyotp.TOTP(secret).now())
    assert done.status_code == 200 and "Approved" in done.text
    assert _state(item) == "approved"
    [verified] = _events("auth.factor_verified")[-1:]
    assert verified.data["purpose"] == "step_up_link" and verified.data["item_id"] == item.id
    assert _events("approval.link_used")[0].data["step_up"] is True


def test_at_or_below_the_step_up_amount_no_code_is_asked(
        relaying, inbox, team, make_item, client):
    team["tenant"].step_up_amount = Decimal("5000.00")
    commit()
    _enrol(team["approver"])
    item, _message, link = _mailed_link(relaying, inbox, team, amount="5000.00",
                                        make_item=make_item)
    page = client.get(_path(link))
    assert 'name="code"' not in page.text
    done = client.post(_path(link), data={"action": "approve",
                                          "csrf_token": csrf_from(page.text)})
    assert done.status_code == 200 and _state(item) == "approved"


def test_a_tenant_requiring_a_factor_sends_an_approver_without_one_to_enrol(
        relaying, inbox, team, make_item, client):
    team["tenant"].step_up_amount = Decimal("1000.00")
    team["tenant"].require_second_factor = True
    commit()
    item, _message, link = _mailed_link(relaying, inbox, team, amount="5000.00",
                                        make_item=make_item)
    page = client.get(_path(link))
    assert page.status_code == 403
    assert "Set up a second factor to decide this" in page.text
    assert "Sign in to Cleardesk and set up a second factor" in page.text
    refused = _post(client, _path(link), action="approve")
    assert refused.status_code == 403 and _state(item) == "pending"


def test_above_the_step_up_amount_the_approvers_passkey_decides(
        relaying, inbox, team, make_item, client):
    from app.auth import passkeys
    from tests.auth.webauthn_authenticator import SoftAuthenticator, as_json

    team["tenant"].step_up_amount = Decimal("1000.00")
    commit()
    approver = team["approver"]
    authenticator = SoftAuthenticator()
    options = passkeys.registration_options(actor(approver), "http://localhost")
    passkeys.register_passkey(actor(approver), "http://localhost", "Phone",
                              authenticator.create(options))
    commit()
    item, _message, link = _mailed_link(relaying, inbox, team, amount="5000.00",
                                        make_item=make_item)
    path = _path(link)
    page = client.get(path)
    assert "need your passkey" in page.text and "Approve with your passkey" in page.text
    assert 'name="code"' not in page.text and "passkeys.js" in page.text
    token = csrf_from(page.text)

    def answer(**bend):
        options = client.post(f"{path}/passkey-options", headers={"X-CSRFToken": token})
        assert options.status_code == 200, options.text
        return as_json(authenticator.get(options.json, **bend))

    forged = client.post(f"{path}/passkey-options", headers={"X-CSRFToken": "forged"})
    assert forged.status_code == 400
    wrong = _post(client, path, action="approve",
                  passkey=answer(origin="https://phish.example"))
    assert wrong.status_code == 401 and _state(item) == "pending"
    assert _events("approval.link_refused")[-1].data["reason"] == "code"

    done = _post(client, path, action="approve", passkey=answer())
    assert done.status_code == 200 and _state(item) == "approved"
    [verified] = _events("auth.factor_verified")[-1:]
    assert verified.data["method"] == "passkey" and verified.data["item_id"] == item.id
    # The link is used: no more challenges for it.
    assert client.post(f"{path}/passkey-options",
                       headers={"X-CSRFToken": token}).status_code == 409
