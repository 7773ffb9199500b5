"""Single sign-on through a tenant's OpenID Connect provider, against a real provider built from
Authlib's server components (tests/auth/oidc_provider.py) on loopback: the flow, every check of
the ID token and the person, just-in-time membership, password sign-in off, the settings page
and the access review."""
from __future__ import annotations

import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pyotp
import pytest
import requests
from sqlalchemy import select

from app.actors import Actor
from app.audit.models import AuditEvent
from app.auth.models import SecondFactor, SingleSignOnLink, TenantSingleSignOn, UserSession
from app.auth.second_factor import encrypt_secret
from app.auth.services import find_user_by_email
from app.auth.sso import update_single_sign_on
from app.extensions import db
from app.models import Tenant
from app.types import utcnow
from app.unit_of_work import commit
from tests.auth.oidc_provider import OIDCProvider, provider  # noqa: F401 (fixture)
from tests.conftest import DATABASE, PASSWORD, FreshContextClient, csrf_from

SYSTEM = Actor.system("tests")
TEST_CLIENT_CALLBACK = "http://localhost/login/sso/callback"


@pytest.fixture
def northwind(app, make_tenant):
    app.config["SSO_ALLOW_HTTP_ISSUER"] = True
    return make_tenant("northwind")


def configure(tenant: Tenant, provider: OIDCProvider, *, domains="example.com", jit=False,
              jit_role="requester", password_off=False, callback=TEST_CLIENT_CALLBACK):
    client = provider.register_client([callback])
    update_single_sign_on(SYSTEM, tenant, enabled=True, issuer=provider.issuer,
                          client_id=client.client_id, client_secret=client.client_secret,
                          allowed_domains=domains, jit_enabled=jit, jit_role=jit_role,
                          password_sign_in_off=password_off)
    commit()
    return client


@pytest.fixture
def sso(northwind, provider):
    return configure(northwind, provider)


def events(action: str) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def failure_reasons() -> list[str]:
    return [e.data["reason"] for e in events("auth.sso_failed")]


def start(client, slug="northwind") -> str:
    """Leave for the provider; its authorization URL."""
    response = client.get(f"/login/sso/{slug}")
    assert response.status_code == 303, response.text
    return response.headers["Location"]


def at_provider(authorize_url: str, email: str) -> str:
    """Sign in at the provider; the callback URL it sends the browser back to."""
    answer = requests.post(authorize_url, data={"email": email}, allow_redirects=False,
                           timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def back(client, callback_url: str, **replace):
    parts = urlsplit(callback_url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(replace)
    return client.get(f"{parts.path}?{urlencode(query)}")


def sign_in_through_provider(client, email: str, slug="northwind"):
    return back(client, at_provider(start(client, slug), email))


def signed_in(client) -> bool:
    return client.get("/queues/mine").status_code == 200


# ---------------------------------------------------------------------------------------------
# The flow.


def test_a_member_with_a_verified_email_signs_in_through_the_provider(
        client, provider, sso, northwind, make_user):
    ann = make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    authorize_url = start(client)
    query = parse_qs(urlsplit(authorize_url).query)
    assert authorize_url.startswith(provider.issuer + "/authorize?")
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["nonce"][0] and query["state"][0]
    assert query["redirect_uri"] == [TEST_CLIENT_CALLBACK]

    landed = back(client, at_provider(authorize_url, "ann@example.com"))

    assert landed.status_code == 303
    assert landed.headers["Location"] == "/"  # the home: the queue of their role
    assert signed_in(client)
    # The code went back with the PKCE verifier, the secret by HTTP basic auth.
    assert provider.token_requests[0]["code_verifier"]
    assert "client_secret" not in provider.token_requests[0]
    login = events("auth.login")[-1]
    assert login.tenant_id == northwind.id and login.actor_id == ann.id
    assert login.data["method"] == "sso" and login.data["issuer"] == provider.issuer
    session_row = db.session.get(UserSession, login.data["session_id"])
    assert session_row.sign_in_method == "sso"
    link = db.session.scalars(select(SingleSignOnLink)).one()
    assert (link.user_id, link.tenant_id, link.subject) == (
        ann.id, northwind.id, provider.people["ann@example.com"].sub)


def test_the_callback_goes_back_to_the_page_asked_for(client, provider, sso, northwind,
                                                      make_user):
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    response = client.get("/login/sso/northwind?next=/account/")
    landed = back(client, at_provider(response.headers["Location"], "ann@example.com"))
    assert landed.headers["Location"] == "/account/"
    # The person's list of sessions says how this one signed in.
    assert '<span class="badge">single sign-on</span>' in client.get("/account/").text


def test_a_state_that_does_not_match_the_flow_is_refused(client, provider, sso, northwind,
                                                         make_user):
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    callback = at_provider(start(client), "ann@example.com")
    refused = back(client, callback, state="forged-state")
    assert refused.status_code == 403
    assert "state does not match" in refused.text
    assert not signed_in(client)
    assert failure_reasons() == ["state mismatch"]
    assert provider.token_requests == []  # the code was never used


def test_a_callback_is_used_once(client, provider, sso, northwind, make_user):
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    callback = at_provider(start(client), "ann@example.com")
    assert back(client, callback).status_code == 303
    client.post("/logout", data={"csrf_token": csrf_from(client.get("/queues/mine").text)})
    again = back(client, callback)
    assert again.status_code == 400
    assert not signed_in(client)


def test_a_code_from_another_flow_fails_the_pkce_check(app, client, provider, sso, northwind,
                                                       make_user):
    """A code stolen from someone else's flow, replayed into this browser's callback with its
    own state: the provider refuses it, as this flow's verifier does not match its challenge."""
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    victim_start = start(client)
    attacker = app.test_client()
    stolen = at_provider(start(attacker), "ann@example.com")
    own_state = parse_qs(urlsplit(victim_start).query)["state"][0]
    stolen_code = parse_qs(urlsplit(stolen).query)["code"][0]

    refused = back(client, stolen, state=own_state, code=stolen_code)

    assert refused.status_code == 403
    assert not signed_in(client)
    assert failure_reasons() == ["token exchange: invalid_grant"]


@pytest.mark.parametrize("tamper, reason", [
    ({"nonce": "another-nonce"}, "id token nonce does not match"),
    ({"iss": "https://impostor.example.com"}, "id token issuer does not match"),
    ({"aud": ["another-client"]}, "id token audience does not match"),
    ({"expires_in": -120}, "id token expired"),
    ({"foreign_key": True}, "id token signature: BadSignatureError"),
], ids=["wrong nonce", "wrong issuer", "wrong audience", "expired", "unknown signing key"])
def test_an_id_token_that_fails_a_check_is_refused(client, provider, sso, northwind,
                                                   make_user, tamper, reason):
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    provider.tamper.update(tamper)
    refused = sign_in_through_provider(client, "ann@example.com")
    assert refused.status_code == 403
    assert "cannot accept" in refused.text
    assert not signed_in(client)
    assert failure_reasons() == [reason]
    assert events("auth.login") == []


def test_a_provider_answer_too_large_to_read_is_refused(client, provider, sso, northwind,
                                                         make_user):
    """A key set of megabytes is not read past 512 KB: the sign-in is refused, not held."""
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    provider.tamper["huge_jwks"] = True
    refused = sign_in_through_provider(client, "ann@example.com")
    assert refused.status_code == 403 and "answered something unexpected" in refused.text
    assert not signed_in(client)
    assert failure_reasons() == ["jwks larger than 512 KB"]


def test_an_unverified_email_is_refused(client, provider, sso, northwind, make_user):
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com", email_verified=False)
    refused = sign_in_through_provider(client, "ann@example.com")
    assert refused.status_code == 403
    assert "has not verified your email" in refused.text
    assert not signed_in(client)
    assert failure_reasons() == ["email not verified"]


def test_an_email_outside_the_allowed_domains_is_refused(client, provider, sso, northwind,
                                                         make_user):
    make_user("ann@elsewhere.org", [northwind])
    provider.add_person("ann@elsewhere.org")
    refused = sign_in_through_provider(client, "ann@elsewhere.org")
    assert refused.status_code == 403
    assert not signed_in(client)
    assert failure_reasons() == ["email domain not allowed"]


def test_an_unknown_email_is_refused_without_just_in_time_membership(client, provider, sso):
    provider.add_person("newcomer@example.com")
    refused = sign_in_through_provider(client, "newcomer@example.com")
    assert refused.status_code == 403
    assert "There is no Cleardesk account for newcomer@example.com" in refused.text
    assert find_user_by_email("newcomer@example.com") is None
    assert failure_reasons() == ["unknown email"]


def test_just_in_time_membership_makes_the_person_with_the_default_role(
        client, provider, northwind):
    configure(northwind, provider, jit=True, jit_role="approver")
    provider.add_person("newcomer@example.com", name="New Comer")
    landed = sign_in_through_provider(client, "newcomer@example.com")
    assert landed.status_code == 303
    assert signed_in(client)
    person = find_user_by_email("newcomer@example.com")
    assert person.name == "New Comer" and person.password_hash is None
    assert person.roles_in(northwind.id) == {"approver"}
    joined = events("auth.sso_joined")
    assert [(e.tenant_id, e.data["email"], e.data["role"]) for e in joined] == [
        (northwind.id, "newcomer@example.com", "approver")]
    assert events("auth.login")[-1].data["joined"] is True


@pytest.mark.skipif(DATABASE != "postgresql",
                    reason="SQLite runs one writer at a time: the race is PostgreSQL's")
def test_two_first_sign_ins_of_one_newcomer_at_once_make_one_account(app, provider, northwind):
    """The same new person comes back from the provider in two browsers at the same moment:
    one account and one membership are made; the other sign-in either finds it or is told to
    sign in again, never a server error."""
    configure(northwind, provider, jit=True)
    provider.add_person("newcomer@example.com")
    clients = [app.test_client(), app.test_client()]
    callbacks = [at_provider(start(c), "newcomer@example.com") for c in clients]
    gate = threading.Barrier(2)
    answers = [None, None]

    def come_back(n):
        gate.wait()
        answers[n] = back(clients[n], callbacks[n])

    threads = [threading.Thread(target=come_back, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(a.status_code for a in answers)
    assert statuses in ([303, 303], [303, 403]), statuses
    if statuses == [303, 403]:
        assert failure_reasons() == ["joined concurrently"]
    db.session.expire_all()
    person = find_user_by_email("newcomer@example.com")
    assert person is not None and len(person.memberships) == 1
    assert len(events("auth.sso_joined")) == 1


def test_just_in_time_membership_does_not_adopt_another_tenants_member(
        client, provider, northwind, make_tenant, make_user):
    """Another tenant's provider cannot sign into this tenant: northwind's admin trusts its
    provider for new people only; contoso's member is not made a northwind member."""
    contoso = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    make_user("carl@example.com", [contoso])
    configure(northwind, provider, jit=True)
    provider.add_person("carl@example.com")
    refused = sign_in_through_provider(client, "carl@example.com")
    assert refused.status_code == 403
    assert "is not a member of Northwind" in refused.text
    assert find_user_by_email("carl@example.com").membership_in(northwind.id) is None
    assert failure_reasons() == ["not a member"]


def test_one_tenants_provider_cannot_open_another_tenant_that_does_not_use_it(
        client, provider, sso, northwind, make_tenant, make_user):
    """A person in two tenants: northwind's provider vouching for them would open contoso's
    data too, and contoso has not chosen that provider."""
    contoso = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    make_user("dana@example.com", [northwind, contoso])
    provider.add_person("dana@example.com")
    refused = sign_in_through_provider(client, "dana@example.com")
    assert refused.status_code == 403
    assert not signed_in(client)
    assert failure_reasons() == ["member of tenants that do not trust this provider"]

    # Once contoso uses the same provider, the same person signs in.
    configure(contoso, provider)
    client.delete_cookie("session")
    assert sign_in_through_provider(client, "dana@example.com").status_code == 303


def test_a_tenant_without_single_sign_on_has_no_flow(client, northwind, provider):
    missing = client.get("/login/sso/northwind")
    assert missing.status_code == 404
    assert client.get("/login/sso/nowhere").status_code == 404


@pytest.mark.parametrize("query", ["", "?code=x&state=y", "?error=access_denied&state=z",
                                   "?state=%00%ff&code=" + "x" * 5000])
def test_a_callback_without_a_flow_in_progress_is_a_clear_page(client, query):
    answer = client.get("/login/sso/callback" + query)
    assert answer.status_code == 400
    assert "not in progress" in answer.text
    assert events("auth.sso_failed") == []


def test_a_provider_that_cannot_be_reached_is_a_clear_page_and_audited(
        client, provider, sso, northwind):
    provider.stop()
    answer = client.get("/login/sso/northwind")
    assert answer.status_code == 502
    assert "could not be reached" in answer.text
    assert failure_reasons() == ["discovery unavailable: ConnectionError"]
    provider.start = lambda: provider  # stopped already; the fixture's stop is harmless


@pytest.mark.parametrize("issuer", ["https://127.0.0.1:9/realms/x", "https://10.0.0.7/realms/x",
                                    "https://169.254.169.254/latest"])
def test_a_provider_on_a_private_address_is_never_fetched(app, client, northwind, issuer):
    """A tenant admin's issuer that points into Cleardesk's own network (loopback, private,
    the cloud metadata address) is refused before any request is made, and audited."""
    app.config["SSO_ALLOW_HTTP_ISSUER"] = False
    update_single_sign_on(SYSTEM, northwind, enabled=True, issuer=issuer, client_id="c",
                          client_secret="s", allowed_domains="example.com", jit_enabled=False,
                          jit_role="requester", password_sign_in_off=False)
    commit()
    answer = client.get("/login/sso/northwind")
    assert answer.status_code == 502
    assert "set up wrongly" in answer.text
    assert failure_reasons() == ["discovery address is not public"]


def test_an_sso_session_is_not_sent_to_enrol_a_second_factor(client, provider, sso, northwind,
                                                             make_user):
    make_user("ann@example.com", [northwind])
    northwind.require_second_factor = True
    commit()
    provider.add_person("ann@example.com")
    assert sign_in_through_provider(client, "ann@example.com").status_code == 303
    assert client.get("/queues/mine").status_code == 200


# ---------------------------------------------------------------------------------------------
# Password sign-in off.


def give_factor(user) -> None:
    db.session.add(SecondFactor(user_id=user.id, secret_encrypted=encrypt_secret(
        pyotp.random_base32()), created_at=utcnow(), confirmed_at=utcnow()))
    commit()


def test_password_sign_in_off_refuses_a_members_password(auth, provider, northwind, make_user,
                                                         make_tenant):
    configure(northwind, provider, password_off=True)
    make_user("ann@example.com", [northwind])
    contoso = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    make_user("carl@example.com", [contoso])

    refused = auth.login("ann@example.com")
    assert refused.status_code == 401
    assert "signs in with single sign-on" in refused.text
    assert events("auth.login_refused")[-1].data["reason"] == "password sign-in off"
    # A wrong password still gets the answer that reveals nothing.
    assert "do not match" in auth.login("ann@example.com", "wrong password!!").text
    # Another tenant's people are not concerned.
    assert auth.login("carl@example.com").status_code == 303


def test_an_admin_keeps_password_and_second_factor_as_break_glass(auth, provider, northwind,
                                                                  make_user):
    configure(northwind, provider, password_off=True)
    with_factor = make_user("root@example.com", [northwind], roles=("admin",))
    give_factor(with_factor)
    make_user("nofactor@example.com", [northwind], roles=("admin",))

    asked = auth.login("root@example.com")
    assert asked.status_code == 303 and asked.headers["Location"].endswith("/login/code")
    refused = auth.login("nofactor@example.com")
    assert refused.status_code == 401
    assert events("auth.login_refused")[-1].data["reason"] == (
        "password sign-in off; admin without a second factor")


# ---------------------------------------------------------------------------------------------
# The settings page and the access review.


def settings_form(page_text: str, **values) -> dict:
    form = {"csrf_token": csrf_from(page_text), "enabled": "y",
            "issuer": "https://login.example.com/realms/finance", "client_id": "cleardesk",
            "client_secret": "s3cret-from-the-provider", "allowed_domains": "example.com",
            "jit_role": "requester"}
    form.update(values)
    return {k: v for k, v in form.items() if v is not None}


def test_an_admin_saves_the_settings_and_the_secret_is_never_shown_back(
        auth, client, northwind, make_user):
    make_user("root@example.com", [northwind], roles=("admin",))
    auth.login("root@example.com")
    path = "/admin/t/northwind/single-sign-on"
    page = client.get(path)
    assert page.status_code == 200
    assert "http://localhost/login/sso/callback" in page.text

    saved = client.post(path, data=settings_form(page.text,
                                                 allowed_domains="Example.com, @example.co.uk"))
    assert saved.status_code == 303, saved.text

    row = db.session.get(TenantSingleSignOn, northwind.id)
    assert row.allowed_domains == ["example.co.uk", "example.com"]
    assert "s3cret" not in row.client_secret_encrypted
    shown = client.get(path).text
    assert "s3cret-from-the-provider" not in shown
    event = events("tenant.sso_updated")[-1]
    assert event.tenant_id == northwind.id and event.data["client_secret"] == "changed"
    assert "s3cret" not in str(event.data)

    # Saving again with an empty secret keeps the stored one.
    kept = client.post(path, data=settings_form(shown, client_secret="", jit_enabled="y",
                                                allowed_domains="example.com example.co.uk"))
    assert kept.status_code == 303
    db.session.expire_all()
    assert db.session.get(TenantSingleSignOn, northwind.id).client_secret_encrypted == \
        row.client_secret_encrypted
    changed = events("tenant.sso_updated")[-1].data
    assert (changed["before"], changed["after"], changed["client_secret"]) == (
        {"jit_enabled": False}, {"jit_enabled": True}, "kept")


@pytest.mark.parametrize("values, field, message", [
    ({"issuer": "http://login.example.com"}, "issuer", "must start with https://"),
    ({"issuer": "javascript:alert(1)"}, "issuer", "an https URL"),
    ({"allowed_domains": "not a domain!"}, "allowed_domains", "not a domain name"),
    ({"allowed_domains": ""}, "allowed_domains", "at least one email domain"),
    ({"jit_role": "admin"}, "jit_role", "one of requester"),
    ({"client_secret": ""}, "client_secret", "the client secret"),
    ({"password_sign_in_off": "y"}, "password_sign_in_off", "set up your own second factor"),
], ids=["http issuer", "not a URL", "bad domain", "no domain", "admin by JIT", "no secret",
        "password off without own factor"])
def test_settings_that_are_not_valid_are_refused_with_a_message(
        auth, client, northwind, make_user, values, field, message):
    make_user("root@example.com", [northwind], roles=("admin",))
    auth.login("root@example.com")
    path = "/admin/t/northwind/single-sign-on"
    refused = client.post(path, data=settings_form(client.get(path).text, **values))
    assert refused.status_code == 422
    assert message in refused.text
    assert db.session.get(TenantSingleSignOn, northwind.id) is None
    assert events("tenant.sso_updated") == []


def test_a_non_admin_cannot_open_the_settings(auth, client, northwind, make_user):
    make_user("ann@example.com", [northwind], roles=("approver",))
    auth.login("ann@example.com")
    assert client.get("/admin/t/northwind/single-sign-on").status_code == 403


def test_the_access_review_shows_each_persons_single_sign_on(
        auth, client, provider, northwind, make_user):
    configure(northwind, provider, password_off=True)
    make_user("ann@example.com", [northwind], name="Ann")
    make_user("bob@example.com", [northwind], name="Bob")
    make_user("eve@example.com", [northwind], roles=("auditor",), name="Eve")
    provider.add_person("ann@example.com")
    assert sign_in_through_provider(client, "ann@example.com").status_code == 303
    client.delete_cookie("session")

    from app.auditors.queries import access_review

    rows = {r.email: r for r in access_review(northwind)}
    assert rows["ann@example.com"].sso == "linked"
    assert rows["ann@example.com"].sso_last_sign_in is not None
    assert rows["bob@example.com"].sso == "not yet"
    assert rows["bob@example.com"].password_sign_in == "no"

    northwind_eve = find_user_by_email("eve@example.com")
    db.session.add(SecondFactor(user_id=northwind_eve.id, secret_encrypted=encrypt_secret(
        pyotp.random_base32()), created_at=utcnow() - timedelta(days=1), confirmed_at=utcnow()))
    commit()
    # Eve has a factor, so her password sign-in is only the second step away... but she is no
    # admin: password sign-in stays off for her. She reads the review through SSO.
    provider.add_person("eve@example.com")
    assert sign_in_through_provider(client, "eve@example.com").status_code == 303
    page = client.get(f"/audit/access-review?tenant={northwind.id}")
    assert page.status_code == 200
    assert "Single sign-on" in page.text and "linked" in page.text
    assert "password off" in page.text
    csv = client.get(f"/audit/access-review.csv?tenant={northwind.id}")
    header = csv.text.splitlines()[0]
    assert header.endswith("single_sign_on,sso_last_sign_in_utc,password_sign_in")


def test_the_sign_in_page_finds_a_tenants_single_sign_on_by_its_name(client, sso):
    found = client.get("/login?tenant=Northwind&next=/requests/")
    assert found.status_code == 200
    assert 'href="/login/sso/northwind?next=/requests/"' in found.text
    assert "Sign in with Northwind" in found.text
    missing = client.get("/login?tenant=nowhere")
    assert "There is no single sign-on for “nowhere”" in missing.text
    assert 'value="nowhere"' in missing.text  # the name tried stays in the field to correct
    assert "/login/sso/" not in missing.text


# ---------------------------------------------------------------------------------------------
# The provider's documents, cached; a person's linked identity, forgotten.


def fresh_client(app):
    """A browser of its own (the test's app context would otherwise lend it a signed-in g)."""
    app.test_client_class = FreshContextClient
    return app.test_client()


def test_the_discovery_document_and_key_set_are_fetched_once_for_several_sign_ins(
        app, provider, sso, northwind, make_user):
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    for _ in range(3):
        client = fresh_client(app)
        assert sign_in_through_provider(client, "ann@example.com").status_code == 303
    assert provider.served["/.well-known/openid-configuration"] == 1
    assert provider.served["/jwks"] == 1
    assert provider.served["/token"] == 3


def test_a_rotated_signing_key_fetches_the_key_set_again_once(
        app, provider, sso, northwind, make_user):
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    assert sign_in_through_provider(fresh_client(app), "ann@example.com").status_code == 303
    provider.rotate_key()  # the cached key set lacks the new key's kid
    assert sign_in_through_provider(fresh_client(app), "ann@example.com").status_code == 303
    assert sign_in_through_provider(fresh_client(app), "ann@example.com").status_code == 303
    assert provider.served["/jwks"] == 2
    assert provider.served["/.well-known/openid-configuration"] == 1


def test_a_token_signed_by_an_unknown_key_is_refused_after_one_fresh_fetch(
        app, provider, sso, northwind, make_user):
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    assert sign_in_through_provider(fresh_client(app), "ann@example.com").status_code == 303
    # Signed by a key the provider does not publish, under a kid the set does not have.
    provider.other_key = type(provider.key).generate_key(
        2048, parameters={"kid": "stranger", "alg": "RS256"})
    provider.tamper["foreign_key"] = True
    refused = sign_in_through_provider(fresh_client(app), "ann@example.com")
    assert refused.status_code == 403
    assert failure_reasons()[-1].startswith("id token signature")
    assert provider.served["/jwks"] == 2


def test_the_documents_are_fetched_again_once_the_cache_time_is_over(
        app, provider, sso, northwind, make_user):
    app.config["SSO_DOCUMENT_CACHE_SECONDS"] = 0
    make_user("ann@example.com", [northwind])
    provider.add_person("ann@example.com")
    for _ in range(2):
        assert sign_in_through_provider(fresh_client(app), "ann@example.com").status_code == 303
    # Each sign-in fetches discovery at its start and at its callback.
    assert provider.served["/.well-known/openid-configuration"] == 4
    assert provider.served["/jwks"] == 2


def test_an_admin_forgets_a_persons_linked_identity_and_the_next_sign_in_links_anew(
        app, auth, client, provider, sso, northwind, make_user):
    ann = make_user("ann@example.com", [northwind])
    make_user("root@example.com", [northwind], roles=("admin",))
    person = provider.add_person("ann@example.com")
    assert sign_in_through_provider(fresh_client(app), "ann@example.com").status_code == 303
    first_subject = person.sub

    auth.login("root@example.com")
    page = client.get(f"/admin/t/northwind/people/{ann.id}")
    assert first_subject in page.text and "Forget the linked identity" in page.text
    done = client.post(f"/admin/t/northwind/people/{ann.id}/sso-unlink",
                       data={"csrf_token": csrf_from(page.text)})
    assert done.status_code == 303
    assert db.session.scalars(select(SingleSignOnLink)).all() == []
    [unlinked] = events("auth.sso_unlinked")
    assert unlinked.tenant_id == northwind.id and unlinked.data["subject"] == first_subject
    assert unlinked.data["user_id"] == ann.id
    assert "has not signed in through the provider yet" in client.get(
        f"/admin/t/northwind/people/{ann.id}").text
    again = client.post(f"/admin/t/northwind/people/{ann.id}/sso-unlink",
                        data={"csrf_token": csrf_from(page.text)}, follow_redirects=True)
    assert "has no single sign-on identity linked here" in again.text
    assert len(events("auth.sso_unlinked")) == 1

    # The provider moved Ann to a new directory: a new subject, matched by verified email,
    # and linked without a "previous subject" (nothing was linked any more).
    person.sub = "sub-new-directory"
    assert sign_in_through_provider(fresh_client(app), "ann@example.com").status_code == 303
    link = db.session.scalars(select(SingleSignOnLink)).one()
    assert (link.user_id, link.subject) == (ann.id, "sub-new-directory")
    assert "previous_subject" not in events("auth.login")[-1].data


def test_only_an_admin_of_the_tenant_forgets_a_linked_identity(
        app, auth, client, provider, sso, northwind, make_user):
    ann = make_user("ann@example.com", [northwind])
    make_user("mel@example.com", [northwind], roles=("manager",))
    provider.add_person("ann@example.com")
    assert sign_in_through_provider(fresh_client(app), "ann@example.com").status_code == 303
    auth.login("mel@example.com")
    token = csrf_from(client.get("/queues/mine").text)
    refused = client.post(f"/admin/t/northwind/people/{ann.id}/sso-unlink",
                          data={"csrf_token": token})
    assert refused.status_code == 403
    assert len(db.session.scalars(select(SingleSignOnLink)).all()) == 1
