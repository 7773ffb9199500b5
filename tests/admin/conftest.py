"""Two tenants with admins, an approver and a requester: what the admin area is tested on.
The real SMTP server, the relay and the worker process come from the email-link tests."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.models import Tenant, User
from tests.approvals.conftest import inbox, relaying  # noqa: F401  (fixtures)
from tests.conftest import FreshContextClient, csrf_from


@dataclass
class Org:
    northwind: Tenant
    contoso: Tenant
    admin: User  # admin of northwind
    second_admin: User  # also admin of northwind
    contoso_admin: User  # admin of contoso only
    approver: User  # approver in northwind, limit 5,000
    backup: User  # approver in northwind, limit 50,000
    requester: User  # requester in northwind and contoso


@pytest.fixture
def org(make_tenant, make_user) -> Org:
    northwind = make_tenant("northwind")
    contoso = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    return Org(
        northwind=northwind,
        contoso=contoso,
        admin=make_user("ada@example.com", [northwind], roles=("admin",), limit="0",
                        name="Ada Admin"),
        second_admin=make_user("sam@example.com", [northwind], roles=("admin",), limit="0",
                               name="Sam Second"),
        contoso_admin=make_user("carl@example.com", [contoso], roles=("admin",), limit="0",
                                name="Carl Contoso"),
        approver=make_user("ann@example.com", [northwind], roles=("approver",), limit="5000",
                           name="Ann Approver"),
        backup=make_user("dan@example.com", [northwind], roles=("approver",), limit="50000",
                         name="Dan Deputy"),
        requester=make_user("rita@example.com", [northwind, contoso], roles=("requester",),
                            name="Rita Requester"),
    )


@pytest.fixture
def sign_in(app):
    """A fresh client signed in as `user` (each its own cookie jar)."""
    def sign_in(user: User, password: str = "correct horse battery staple"):
        app.test_client_class = FreshContextClient
        client = app.test_client()
        page = client.get("/login")
        response = client.post("/login", data={"email": user.email, "password": password,
                                               "csrf_token": csrf_from(page.text)})
        assert response.status_code == 303, response.text
        return client

    return sign_in


def post_form(client, path: str, data: dict | None = None, **kwargs):
    """POST a form with the CSRF token of the page at `path` (or of the home page)."""
    page = client.get(path)
    token = csrf_from(page.text if page.status_code == 200
                      else client.get("/queues/mine").text)
    return client.post(path, data={"csrf_token": token, **(data or {})}, **kwargs)
