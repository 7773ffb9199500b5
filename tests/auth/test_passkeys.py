"""Passkeys as a second factor, checked by fido2's Fido2Server against real attestations and
assertions from a software authenticator (tests/auth/webauthn_authenticator.py): registering,
signing in with one, and every refusal (a challenge not issued, used twice or expired, another
origin, another person's credential, a signature count going back), the last factor kept when a
tenant requires one, and every change, success and failure audited."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.audit.models import AuditEvent
from app.auth import passkeys
from app.auth.models import Passkey, PasskeyChallenge
from app.auth.passkeys import PasskeyRefused
from app.auth.second_factor import FactorRefused, verify_code
from app.auth.services import SignInRefused, complete_sign_in, has_second_factor
from app.errors import InvalidTransition
from app.extensions import db
from app.types import utcnow
from app.unit_of_work import commit
from tests.auth.webauthn_authenticator import SoftAuthenticator, as_json
from tests.conftest import PASSWORD, FreshContextClient, actor, csrf_from

ORIGIN = "http://localhost"  # what Flask's test client sends requests to


@pytest.fixture
def northwind(make_tenant):
    return make_tenant("northwind")


@pytest.fixture
def ann(make_user, northwind):
    return make_user("ann@example.com", tenants=[northwind], roles=("approver",), name="Ann")


@pytest.fixture
def bob(make_user, northwind):
    return make_user("bob@example.com", tenants=[northwind], roles=("approver",), name="Bob")


def events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def register(user, authenticator: SoftAuthenticator, name="Work laptop") -> Passkey:
    options = passkeys.registration_options(actor(user), ORIGIN)
    row = passkeys.register_passkey(actor(user), ORIGIN, name, authenticator.create(options))
    commit()
    return row


def step_up(user, authenticator: SoftAuthenticator, purpose="step_up_policy", **bend) -> str:
    """Ask for options and answer them (with `bend` making the answer misbehave)."""
    options = passkeys.assertion_options(user, ORIGIN, purpose)
    commit()
    answer = authenticator.get(options, **bend)
    try:
        return verify_code(actor(user), user, "", purpose=purpose, passkey=answer,
                           origin=ORIGIN)
    finally:
        commit()  # a refusal's audit event is kept, as the routes do


# ---------------------------------------------------------------------------------------------
# Registering.


def test_a_registered_passkey_keeps_its_public_key_and_counts_as_a_second_factor(app, ann):
    authenticator = SoftAuthenticator()
    assert not has_second_factor(ann)
    row = register(ann, authenticator)
    assert row.name == "Work laptop" and row.user_id == ann.id and row.sign_count == 0
    assert passkeys._credential(row).credential_id == authenticator.credential_id
    assert has_second_factor(ann)
    [enrolled] = events("auth.factor_enrolled")
    assert enrolled.data["method"] == "passkey" and enrolled.data["rp_id"] == "localhost"
    # The options name the person by an opaque handle, not their email address.
    options = passkeys.registration_options(actor(ann), ORIGIN)
    assert "ann@example.com" not in options["publicKey"]["user"]["id"]
    # ... and exclude the passkeys they have, so one authenticator is not registered twice.
    assert [d["id"] for d in options["publicKey"]["excludeCredentials"]] == [row.credential_id]


def test_a_registration_answer_from_another_origin_is_refused_and_audited(app, ann):
    options = passkeys.registration_options(actor(ann), ORIGIN)
    answer = SoftAuthenticator().create(options, origin="https://cleardesk.example.net")
    with pytest.raises(PasskeyRefused):
        passkeys.register_passkey(actor(ann), ORIGIN, "Laptop", answer)
    commit()
    assert db.session.scalars(select(Passkey)).all() == []
    assert "origin" in events("auth.factor_failed")[0].data["reason"].lower()


def test_a_registration_for_another_relying_party_is_refused(app, ann):
    options = passkeys.registration_options(actor(ann), ORIGIN)
    answer = SoftAuthenticator().create(options, rp_id="cleardesk.example.net")
    with pytest.raises(PasskeyRefused, match="could not be checked"):
        passkeys.register_passkey(actor(ann), ORIGIN, "Laptop", answer)


def test_a_registration_challenge_works_once(app, ann):
    options = passkeys.registration_options(actor(ann), ORIGIN)
    answer = SoftAuthenticator().create(options)
    passkeys.register_passkey(actor(ann), ORIGIN, "Laptop", answer)
    commit()
    with pytest.raises(PasskeyRefused, match="used already"):
        passkeys.register_passkey(actor(ann), ORIGIN, "Laptop again", answer)


# ---------------------------------------------------------------------------------------------
# Using one.


def test_a_passkey_passes_the_step_up_and_its_counter_moves_forward(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    assert step_up(ann, authenticator) == "passkey"
    row = db.session.scalars(select(Passkey)).one()
    db.session.refresh(row)
    assert row.sign_count == 1 and row.last_used_at is not None
    [verified] = events("auth.factor_verified")
    assert verified.data["method"] == "passkey" and verified.data["purpose"] == "step_up_policy"


def test_an_answer_to_a_challenge_never_issued_is_refused(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    with pytest.raises(FactorRefused, match="not asked for here"):
        step_up(ann, authenticator, challenge="A" * 43)
    assert events("auth.factor_failed")[-1].data["reason"] == "challenge not issued"


def test_a_challenge_issued_for_another_purpose_is_refused(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    options = passkeys.assertion_options(ann, ORIGIN, "step_up_link")
    commit()
    with pytest.raises(FactorRefused, match="not asked for here"):
        verify_code(actor(ann), ann, "", purpose="sign_in", passkey=authenticator.get(options),
                    origin=ORIGIN)


def test_a_replayed_answer_is_refused(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    options = passkeys.assertion_options(ann, ORIGIN, "step_up_policy")
    commit()
    answer = authenticator.get(options)
    verify_code(actor(ann), ann, "", purpose="step_up_policy", passkey=answer, origin=ORIGIN)
    commit()
    with pytest.raises(FactorRefused, match="used already"):
        verify_code(actor(ann), ann, "", purpose="step_up_policy", passkey=answer,
                    origin=ORIGIN)
    commit()
    assert events("auth.factor_failed")[-1].data["reason"] == "challenge used or expired"


def test_an_expired_challenge_is_refused(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    options = passkeys.assertion_options(ann, ORIGIN, "step_up_policy")
    db.session.execute(update(PasskeyChallenge).values(expires_at=utcnow() - timedelta(seconds=1)))
    commit()
    with pytest.raises(FactorRefused, match="took too long"):
        verify_code(actor(ann), ann, "", purpose="step_up_policy",
                    passkey=authenticator.get(options), origin=ORIGIN)


def test_an_answer_from_another_origin_is_refused(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    with pytest.raises(FactorRefused, match="could not be checked"):
        step_up(ann, authenticator, origin="http://localhost:8080")
    assert "origin" in events("auth.factor_failed")[-1].data["reason"].lower()


def test_another_persons_passkey_is_refused(app, ann, bob):
    register(ann, SoftAuthenticator())
    bobs = SoftAuthenticator()
    register(bob, bobs)
    options = passkeys.assertion_options(ann, ORIGIN, "step_up_policy")
    commit()
    options["publicKey"]["allowCredentials"] = []  # a browser made to offer Bob's
    with pytest.raises(FactorRefused, match="not one of yours"):
        verify_code(actor(ann), ann, "", purpose="step_up_policy", passkey=bobs.get(options),
                    origin=ORIGIN)
    commit()
    assert events("auth.factor_failed")[-1].data["reason"] == "credential of another person"


def test_a_signature_count_going_back_is_refused(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    step_up(ann, authenticator)
    step_up(ann, authenticator)
    authenticator.counter = 0  # a copy of the authenticator, made before those two uses
    with pytest.raises(FactorRefused, match="old signature count"):
        step_up(ann, authenticator)
    assert events("auth.factor_failed")[-1].data["reason"] == "sign count did not increase"
    row = db.session.scalars(select(Passkey)).one()
    db.session.refresh(row)
    assert row.sign_count == 2


def test_a_refused_passkey_at_sign_in_counts_as_a_failed_sign_in(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    options = passkeys.assertion_options(ann, ORIGIN, "sign_in")
    commit()
    with pytest.raises(SignInRefused):
        complete_sign_in(ann.id, "", "127.0.0.1", "pytest", origin=ORIGIN,
                         passkey=authenticator.get(options, origin="https://elsewhere.example"))
    commit()
    assert events("auth.login_failed")[-1].data["reason"] == "wrong second factor"
    options = passkeys.assertion_options(ann, ORIGIN, "sign_in")
    user = complete_sign_in(ann.id, "", "127.0.0.1", "pytest", origin=ORIGIN,
                            passkey=authenticator.get(options))
    commit()
    assert user.login_id and events("auth.login")[-1].data["second_factor"] == "passkey"


# ---------------------------------------------------------------------------------------------
# Removing, and the tenant's requirement.


def test_the_last_factor_cannot_be_removed_while_the_tenant_requires_one(app, ann, northwind):
    first = register(ann, SoftAuthenticator(), "Laptop")
    second = register(ann, SoftAuthenticator(), "Phone")
    northwind.require_second_factor = True
    commit()
    passkeys.remove_passkey(actor(ann), first.id)
    commit()
    with pytest.raises(InvalidTransition, match="last second factor"):
        passkeys.remove_passkey(actor(ann), second.id)
    db.session.rollback()
    northwind.require_second_factor = False
    commit()
    passkeys.remove_passkey(actor(ann), second.id)
    commit()
    assert not has_second_factor(ann)
    assert [e.data["name"] for e in events("auth.factor_disabled")] == ["Laptop", "Phone"]


def test_a_passkey_of_someone_else_cannot_be_removed(app, ann, bob):
    from app.errors import NotFound

    row = register(bob, SoftAuthenticator())
    with pytest.raises(NotFound):
        passkeys.remove_passkey(actor(ann), row.id)


# ---------------------------------------------------------------------------------------------
# Through the pages.


def new_client(app):
    app.test_client_class = FreshContextClient
    return app.test_client()


def password_step(client, email="ann@example.com"):
    page = client.get("/login")
    return client.post("/login", data={"email": email, "password": PASSWORD,
                                       "csrf_token": csrf_from(page.text)})


def test_signing_in_with_a_passkey_through_the_pages(app, ann, northwind):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    northwind.require_second_factor = True  # a passkey meets the requirement
    commit()
    client = new_client(app)
    assert password_step(client).status_code == 303
    page = client.get("/login/code")
    assert "Use your passkey" in page.text and 'name="code"' not in page.text
    token = csrf_from(page.text)
    options = client.post("/login/code/passkey-options", headers={"X-CSRFToken": token})
    assert options.status_code == 200, options.text
    done = client.post("/login/code", data={
        "csrf_token": token, "passkey": as_json(authenticator.get(options.json))})
    assert done.status_code == 303, done.text
    assert client.get("/queues/mine").status_code == 200  # not sent to enrol anything


def test_passkey_options_need_a_password_step_first(app, ann):
    register(ann, SoftAuthenticator())
    client = new_client(app)
    token = csrf_from(client.get("/login").text)
    refused = client.post("/login/code/passkey-options", headers={"X-CSRFToken": token})
    assert refused.status_code == 409 and "Sign in again" in refused.json["error"]
    assert db.session.scalars(select(PasskeyChallenge.purpose)).all() == ["register"]


def test_adding_and_removing_a_passkey_on_the_account_page(app, ann):
    client = new_client(app)
    assert password_step(client).status_code == 303
    page = client.get("/account/second-factor")
    assert "No passkeys yet" in page.text
    token = csrf_from(page.text)
    options = client.post("/account/passkeys/options", headers={"X-CSRFToken": token})
    assert options.status_code == 200
    assert options.json["publicKey"]["rp"]["id"] == "localhost"
    answer = SoftAuthenticator().create(options.json)
    added = client.post("/account/passkeys", data={"csrf_token": token, "name": "Desk key",
                                                   "credential": as_json(answer)})
    assert added.status_code == 303, added.text
    page = client.get("/account/second-factor")
    assert "Desk key" in page.text and "No passkeys yet" not in page.text
    assert "your passkey (1 passkey)" in client.get("/account/").text
    refused = client.post("/account/passkeys", data={"csrf_token": token, "name": "Again",
                                                     "credential": as_json(answer)})
    assert refused.status_code == 422 and "used already" in refused.text
    garbage = client.post("/account/passkeys", data={"csrf_token": token, "name": "Junk",
                                                     "credential": "{not json"})
    assert garbage.status_code == 422 and "could not be read" in garbage.text
    row = db.session.scalars(select(Passkey)).one()
    removed = client.post(f"/account/passkeys/{row.id}/remove", data={"csrf_token": token})
    assert removed.status_code == 303
    assert db.session.scalars(select(Passkey)).all() == []


# ---------------------------------------------------------------------------------------------
# Signing in with a passkey alone.


def passkey_sign_in(client, authenticator: SoftAuthenticator, **bend):
    page = client.get("/login")
    token = csrf_from(page.text)
    options = client.post("/login/passkey/options", headers={"X-CSRFToken": token})
    assert options.status_code == 200, options.text
    assert options.json["publicKey"]["userVerification"] == "required"
    assert not options.json["publicKey"].get("allowCredentials")  # the authenticator offers
    return client.post("/login/passkey", data={
        "csrf_token": token, "passkey": as_json(authenticator.get(options.json, **bend))})


def test_a_passkey_that_verified_its_user_signs_in_without_a_password(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    client = new_client(app)
    done = passkey_sign_in(client, authenticator)
    assert done.status_code == 303, done.text
    assert client.get("/queues/mine").status_code == 200
    login = events("auth.login")[-1]
    assert (login.actor_id, login.data["method"]) == (ann.id, "passkey")
    from app.auth.models import UserSession

    assert db.session.get(UserSession, login.data["session_id"]).sign_in_method == "passkey"


def test_a_passkey_that_only_proved_presence_does_not_sign_in(app, ann):
    from fido2.webauthn import AuthenticatorData

    import tests.auth.webauthn_authenticator as soft

    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    original = soft.FLAGS_GET
    soft.FLAGS_GET = AuthenticatorData.FLAG.UP  # touched, but no fingerprint or PIN
    try:
        refused = passkey_sign_in(new_client(app), authenticator)
    finally:
        soft.FLAGS_GET = original
    assert refused.status_code == 401 and "could not be checked" in refused.text
    failed = events("auth.login_failed")[-1]
    assert failed.data["method"] == "passkey" and "verif" in failed.data["reason"].lower()


def test_an_unknown_passkey_or_a_replayed_answer_does_not_sign_in(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    stranger = passkey_sign_in(new_client(app), SoftAuthenticator())
    assert stranger.status_code == 401 and "does not know that passkey" in stranger.text
    assert events("auth.login_failed")[-1].data["reason"] == "unknown credential"

    client = new_client(app)
    page = client.get("/login")
    token = csrf_from(page.text)
    options = client.post("/login/passkey/options", headers={"X-CSRFToken": token}).json
    answer = as_json(authenticator.get(options))
    assert client.post("/login/passkey", data={"csrf_token": token,
                                               "passkey": answer}).status_code == 303
    again = new_client(app)
    token = csrf_from(again.get("/login").text)
    replayed = again.post("/login/passkey", data={"csrf_token": token, "passkey": answer})
    assert replayed.status_code == 401
    assert events("auth.login_failed")[-1].data["reason"] == "challenge used or expired"


def test_a_passkey_does_not_open_a_tenant_that_signs_in_through_sso_only(app, ann, northwind):
    from app.actors import Actor
    from app.auth.sso import update_single_sign_on

    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    update_single_sign_on(Actor.system("tests"), northwind, enabled=True,
                          issuer="https://login.example.com", client_id="cleardesk",
                          client_secret="s3cret", allowed_domains="example.com",
                          jit_enabled=False, jit_role="requester", password_sign_in_off=True)
    commit()
    refused = passkey_sign_in(new_client(app), authenticator)
    assert refused.status_code == 401 and "single sign-on" in refused.text
    refusal = events("auth.login_refused")[-1].data
    assert (refusal["reason"], refusal["method"]) == ("password sign-in off", "passkey")


def test_a_deactivated_persons_passkey_does_not_sign_in(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    ann.active = False
    commit()
    refused = passkey_sign_in(new_client(app), authenticator)
    assert refused.status_code == 401 and "deactivated" in refused.text


def test_a_challenge_asked_for_at_another_address_is_refused(app, ann):
    authenticator = SoftAuthenticator()
    register(ann, authenticator)
    options = passkeys.assertion_options(ann, "http://localhost:8080", "step_up_policy")
    commit()
    with pytest.raises(FactorRefused, match="another address"):
        verify_code(actor(ann), ann, "", purpose="step_up_policy",
                    passkey=authenticator.get(options), origin=ORIGIN)


def test_asking_for_passkey_sign_in_challenges_is_limited_per_address(app):
    """Anyone may ask for a sign-in challenge, and each is kept: past the per-minute limit an
    address is answered 429 and nothing more is stored."""
    import time

    from app.auth.routes import PASSKEY_OPTIONS_PER_MINUTE

    if time.time() % 60 > 45:  # the limit counts per clock minute: stay inside one
        time.sleep(61 - time.time() % 60)
    client = new_client(app)
    token = csrf_from(client.get("/login").text)
    answers = [client.post("/login/passkey/options", headers={"X-CSRFToken": token})
               for _ in range(PASSKEY_OPTIONS_PER_MINUTE + 1)]

    assert [a.status_code for a in answers[:-1]] == [200] * PASSKEY_OPTIONS_PER_MINUTE
    assert answers[-1].status_code == 429
    assert 0 < int(answers[-1].headers["Retry-After"]) <= 60
    assert "Too many" in answers[-1].json["error"]
    stored = db.session.scalars(select(PasskeyChallenge).where(
        PasskeyChallenge.purpose == passkeys.SIGN_IN)).all()
    assert len(stored) == PASSKEY_OPTIONS_PER_MINUTE
