"""Two tenants with their people and some history: what the auditor pages are tested on."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.models import Tenant, User, WorkItem
from app.unit_of_work import commit
from app.work.services import add_comment, claim_item
from tests.conftest import SYSTEM, FreshContextClient, actor, csrf_from

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / "tools" / "verify_audit_export.py"


@pytest.fixture(autouse=True)
def export_dir(app, tmp_path):
    """Export files of in-process jobs go to the test's own folder."""
    app.config["AUDIT_EXPORT_DIR"] = str(tmp_path / "exports")
    return tmp_path / "exports"


@dataclass
class World:
    northwind: Tenant
    contoso: Tenant
    auditor: User  # auditor of northwind only
    admin: User  # admin of northwind
    approver: User  # approver of northwind
    contoso_auditor: User  # auditor of contoso only
    item: WorkItem  # a northwind approval with a claim and comments
    foreign_item: WorkItem  # a contoso item


@pytest.fixture
def world(make_tenant, make_user, make_item) -> World:
    northwind = make_tenant("northwind")
    contoso = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    auditor = make_user("auditor@example.com", tenants=[northwind], roles=("auditor",),
                        limit="0", name="Aud Auditor")
    admin = make_user("admin@example.com", tenants=[northwind], roles=("admin",), limit="0",
                      name="Ada Admin")
    approver = make_user("approver@example.com", tenants=[northwind], roles=("approver",),
                         limit="50000", name="Avery Approver")
    requester = make_user("requester@example.com", tenants=[northwind, contoso],
                          roles=("requester",), name="Riley Requester")
    contoso_auditor = make_user("auditor.contoso@example.com", tenants=[contoso],
                                roles=("auditor",), limit="0", name="Claus Auditor")
    item = make_item(northwind, amount="4200.00", requester=requester)
    claim_item(actor(approver), item.id)
    commit()
    for text in ("Checked the contract", "=HYPERLINK(\"http://evil\")", "Ünïcode — ok"):
        add_comment(actor(approver), item.id, text)
        commit()
    foreign_item = make_item(contoso, amount="900.00")
    add_comment(SYSTEM, foreign_item.id, "Contoso only")
    commit()
    return World(northwind, contoso, auditor, admin, approver, contoso_auditor, item,
                 foreign_item)


@pytest.fixture
def sign_in(app):
    """A fresh client signed in as `user`."""
    def sign_in(user: User):
        app.test_client_class = FreshContextClient
        client = app.test_client()
        page = client.get("/login")
        response = client.post("/login", data={"email": user.email,
                                               "password": "correct horse battery staple",
                                               "csrf_token": csrf_from(page.text)})
        assert response.status_code == 303, response.text
        return client

    return sign_in


def run_verifier(path, *args) -> subprocess.CompletedProcess:
    """The standalone verifier as an external auditor runs it: its own Python process, with
    nothing of Cleardesk on the path."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-I", str(VERIFIER), str(path), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd="/")
