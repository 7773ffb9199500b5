"""Single sign-on in a real browser against a real OpenID Connect provider on loopback (built
from Authlib's server components, tests/auth/oidc_provider.py): from the tenant's sign-in link,
through the provider's sign-in page, into the queue."""
import re

import pytest

from app.actors import Actor
from app.auth.sso import update_single_sign_on
from app.unit_of_work import commit
from tests.auth.oidc_provider import provider  # noqa: F401 (fixture)


def test_a_member_signs_in_through_the_tenants_provider_and_lands_in_the_queue(
        app, page, live_server, provider, make_tenant, make_user):
    app.config["SSO_ALLOW_HTTP_ISSUER"] = True
    northwind = make_tenant("northwind")
    make_user("ann@example.com", [northwind], roles=("approver",), name="Ann Approver")
    client = provider.register_client([f"{live_server}/login/sso/callback"])
    update_single_sign_on(Actor.system("tests"), northwind, enabled=True,
                          issuer=provider.issuer, client_id=client.client_id,
                          client_secret=client.client_secret, allowed_domains="example.com",
                          jit_enabled=False, jit_role="requester", password_sign_in_off=False)
    commit()
    provider.add_person("ann@example.com")

    page.goto("/login?tenant=northwind")
    page.get_by_role("button", name="Sign in with Northwind").click()
    page.wait_for_url(re.compile(re.escape(provider.issuer) + r"/authorize\?"))
    page.get_by_label("Work email").fill("ann@example.com")
    page.get_by_role("button", name="Continue").click()

    page.wait_for_url(re.compile(r"/queues/mine$"))
    assert page.get_by_role("heading", name="My work").is_visible()
    assert "Ann Approver" in page.content()


def test_the_organisation_name_on_the_sign_in_page_starts_its_single_sign_on(
        app, page, live_server, provider, make_tenant, make_user):
    app.config["SSO_ALLOW_HTTP_ISSUER"] = True
    northwind = make_tenant("northwind")
    client = provider.register_client([f"{live_server}/login/sso/callback"])
    update_single_sign_on(Actor.system("tests"), northwind, enabled=True,
                          issuer=provider.issuer, client_id=client.client_id,
                          client_secret=client.client_secret, allowed_domains="example.com",
                          jit_enabled=True, jit_role="requester", password_sign_in_off=False)
    commit()
    provider.add_person("new.hire@example.com", name="New Hire")

    page.goto("/login")
    page.get_by_label("Your organisation's Cleardesk name").fill("northwind")
    page.get_by_role("button", name="Find my organisation's single sign-on").click()
    page.get_by_role("button", name="Sign in with Northwind").click()
    page.get_by_label("Work email").fill("new.hire@example.com")
    page.get_by_role("button", name="Continue").click()

    # Joined just in time as a requester: their home is their requests.
    page.wait_for_url(re.compile(r"/requests/$"))
