"""In a real Chromium with its virtual WebAuthn authenticator (DevTools' WebAuthn domain): a
person adds a passkey on their account's second-factor page, signs out, and signs in again
with the passkey as the second step, or with the passkey alone; a browser without WebAuthn is
told so. WebAuthn needs a
secure context and a relying party id that is a host name, so the app is opened as
http://localhost (127.0.0.1 would be refused as an RP id)."""
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth.models import Passkey
from app.extensions import db
from tests.browser.conftest import fresh_page
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
def person(make_tenant, make_user):
    tenant = make_tenant("northwind")
    return make_user("avery@example.com", tenants=[tenant], roles=("approver",),
                     name="Avery Approver")


@pytest.fixture
def on_localhost(chromium, live_server):
    """A fresh browser profile on the live server, named localhost; fails the test on any
    JavaScript error in the page."""
    yield from fresh_page(chromium, live_server.replace("127.0.0.1", "localhost"))


def add_virtual_authenticator(page) -> tuple:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    made = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True}})
    return cdp, made["authenticatorId"]


def password_step(page, email="avery@example.com"):
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_a_passkey_added_on_the_account_page_signs_in_as_the_second_factor(on_localhost,
                                                                            person):
    page = on_localhost
    cdp, authenticator = add_virtual_authenticator(page)
    password_step(page)
    page.wait_for_url(re.compile(r"/queues/mine$"))

    page.goto("/account/second-factor")
    expect(page.get_by_text("No passkeys yet")).to_be_visible()
    page.get_by_label("Name of the new passkey").fill("This laptop")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator(".flash-success")).to_contain_text('Passkey "This laptop" added')
    expect(page.locator("ul.passkey-list")).to_contain_text("This laptop")
    [held] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})[
        "credentials"]
    db.session.rollback()
    row = db.session.scalars(select(Passkey)).one()
    assert row.user_id == person.id and row.credential_id.rstrip("=") == \
        held["credentialId"].replace("+", "-").replace("/", "_").rstrip("=")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login"))
    password_step(page)
    page.wait_for_url(re.compile(r"/login/code$"))
    page.get_by_role("button", name="Use your passkey").click()
    page.wait_for_url(re.compile(r"/queues/mine$"))
    expect(page.get_by_role("heading", name="My work")).to_be_visible()

    db.session.rollback()
    login = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login")
                               .order_by(AuditEvent.id.desc())).first()
    assert login.data["second_factor"] == "passkey"
    db.session.refresh(row)
    assert row.last_used_at is not None


def test_a_passkey_signs_in_alone_from_the_sign_in_page(on_localhost, person):
    page = on_localhost
    add_virtual_authenticator(page)
    password_step(page)
    page.wait_for_url(re.compile(r"/queues/mine$"))
    page.goto("/account/second-factor")
    page.get_by_label("Name of the new passkey").fill("This laptop")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator(".flash-success")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login"))

    # No email, no password: the authenticator offers the passkey it holds for this site.
    page.get_by_role("button", name="Use a passkey instead").click()
    page.wait_for_url(re.compile(r"/queues/mine$"))
    db.session.rollback()
    login = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login")
                               .order_by(AuditEvent.id.desc())).first()
    assert (login.actor_id, login.data["method"]) == (person.id, "passkey")


def test_a_browser_without_webauthn_is_told_so(on_localhost, person):
    page = on_localhost
    page.add_init_script("delete window.PublicKeyCredential;")
    password_step(page)
    page.wait_for_url(re.compile(r"/queues/mine$"))
    page.goto("/account/second-factor")
    page.get_by_label("Name of the new passkey").fill("Old browser")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("[data-passkey-error]")).to_contain_text(
        "This browser cannot use passkeys")
    db.session.rollback()
    assert db.session.scalars(select(Passkey)).all() == []
    # The sign-in page does not offer what the browser cannot do.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login"))
    expect(page.get_by_role("button", name="Use a passkey instead")).to_be_hidden()
