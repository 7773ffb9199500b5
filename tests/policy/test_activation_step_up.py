"""Step-up before policy activation: the second admin's four-eyes activation of a version takes
a code of their second factor when they have one (a real code from pyotp); a wrong code
activates nothing and is audited."""
from __future__ import annotations

import time

import pyotp
import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth.models import SecondFactor
from app.auth.second_factor import confirm_enrolment, decrypt_secret, start_enrolment
from app.extensions import db
from app.policy import versions
from app.policy.models import PolicyVersion
from app.unit_of_work import commit
from tests.conftest import PASSWORD, FreshContextClient, actor, csrf_from

AUTO = ("Small deals", "amount <= 1000", "auto_approve", "")


@pytest.fixture(autouse=True)
def fresh_time_step():
    if time.time() % 30 > 20:
        time.sleep(30 - time.time() % 30 + 0.2)


def _pending_version(tenant, author) -> PolicyVersion:
    draft = versions.create_draft(actor(author), tenant.id)
    name, condition, outcome, steps = AUTO
    versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name=name,
                       condition=condition, outcome=outcome, steps_text=steps, queue=None)
    versions.save_settings(actor(author), tenant.id, draft.id, max_auto_amount="",
                           daily_auto_count="", daily_auto_amount="", qa_sample_pct="0",
                           qa_role="manager", fallback_steps_text="approver >= amount",
                           risk={"base": 0})
    versions.submit_version(actor(author), tenant.id, draft.id)
    commit()
    return draft


def _sign_in_with_code(app, user, secret):
    app.test_client_class = FreshContextClient
    client = app.test_client()
    page = client.get("/login")
    client.post("/login", data={"email": user.email, "password": PASSWORD,
                                "csrf_token": csrf_from(page.text)})
    page = client.get("/login/code")
    done = client.post("/login/code", data={"code": pyotp.TOTP(secret).now(),
                                            "csrf_token": csrf_from(page.text)})
    assert done.status_code == 303
    return client


def test_activating_a_version_takes_the_admins_second_factor_code(app, admins):
    tenant, author, checker = admins
    start_enrolment(actor(checker))
    secret = decrypt_secret(db.session.get(SecondFactor, checker.id).secret_encrypted)
    confirm_enrolment(actor(checker), pyotp.TOTP(secret).at(time.time() - 30))
    commit()
    draft = _pending_version(tenant, author)
    client = _sign_in_with_code(app, checker, secret)  # uses the current step's code
    url = f"/admin/t/{tenant.slug}/policy/versions/{draft.id}"
    page = client.get(url)
    assert "Code from your authenticator app" in page.text

    wrong = client.post(f"{url}/activate", data={"csrf_token": csrf_from(page.text),
                                                 "effective_from": "", "code": "000000"})
    assert wrong.status_code == 401
    db.session.expire_all()
    assert db.session.get(PolicyVersion, draft.id).state == "pending"
    [failed] = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "auth.factor_failed")).all()
    assert failed.data["purpose"] == "step_up_policy" and failed.tenant_id == tenant.id

    done = client.post(f"{url}/activate", data={
        "csrf_token": csrf_from(page.text), "effective_from": "",
        "code": pyotp.TOTP(secret).at(time.time() + 30)})
    assert done.status_code == 303
    db.session.expire_all()
    assert db.session.get(PolicyVersion, draft.id).state == "active"
    verified = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "auth.factor_verified").order_by(AuditEvent.id)).all()[-1]
    assert verified.data["purpose"] == "step_up_policy"
    assert verified.data["policy_id"] == draft.id


def test_activating_a_version_takes_the_admins_passkey(app, admins):
    from app.auth import passkeys
    from tests.auth.webauthn_authenticator import SoftAuthenticator, as_json

    tenant, author, checker = admins
    authenticator = SoftAuthenticator()
    options = passkeys.registration_options(actor(checker), "http://localhost")
    passkeys.register_passkey(actor(checker), "http://localhost", "Laptop",
                              authenticator.create(options))
    commit()
    draft = _pending_version(tenant, author)
    app.test_client_class = FreshContextClient
    client = app.test_client()
    page = client.get("/login")
    client.post("/login", data={"email": checker.email, "password": PASSWORD,
                                "csrf_token": csrf_from(page.text)})
    page = client.get("/login/code")
    token = csrf_from(page.text)
    options = client.post("/login/code/passkey-options", headers={"X-CSRFToken": token}).json
    assert client.post("/login/code", data={"passkey": as_json(authenticator.get(options)),
                                            "csrf_token": token}).status_code == 303

    url = f"/admin/t/{tenant.slug}/policy/versions/{draft.id}"
    page = client.get(url)
    assert "with your passkey" in page.text and 'name="code"' not in page.text
    token = csrf_from(page.text)
    nothing = client.post(f"{url}/activate", data={"csrf_token": token, "effective_from": ""})
    assert nothing.status_code == 401
    options = client.post(f"{url}/passkey-options", headers={"X-CSRFToken": token})
    assert options.status_code == 200
    done = client.post(f"{url}/activate", data={
        "csrf_token": token, "effective_from": "",
        "passkey": as_json(authenticator.get(options.json))})
    assert done.status_code == 303
    db.session.expire_all()
    assert db.session.get(PolicyVersion, draft.id).state == "active"
    verified = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "auth.factor_verified").order_by(AuditEvent.id)).all()[-1]
    assert verified.data["method"] == "passkey" and verified.data["policy_id"] == draft.id
