"""Every route of the app, every method, asked by everyone who might ask: each of the six roles of
a tenant, someone signed out, a member of another tenant (with every role there) and API tokens
(with the scope a route needs, without it, and of another tenant). Each answer must be what the
route's declared access (app.access) says:

- let through: anything but 401, 403, a redirect to sign in, or 404 for the tenant's own data
  (400, 409 and 422 are the route's own answers to a request it was allowed to judge);
- refused: 403; sent to sign in: a redirect to the sign-in page that says so; no token: 401;
- the data of a tenant one is not a member of: 404.

The routes come from the app's URL map, so a route added tomorrow is walked tomorrow: without a
declaration it fails here (and the app does not start), and with an argument the walk cannot
fill it fails here until the walk learns to fill it. Path arguments are real objects of the
tenant; each person acts on their own (their item, their export, their saved view), so one
person's change does not decide another's answer."""
from __future__ import annotations

import io
from datetime import date
from functools import cached_property
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import select

from app import create_app
from app.access import (
    ANONYMOUS,
    API_TOKEN,
    UndeclaredAccess,
    access_of,
    access_table,
    allow,
    install_access,
)
from app.admin import (
    password_links as admin_password_links,
    people as admin_people,
    tenants as admin_tenants,
)
from app.admin.models import PasswordLinkPurpose
from app.api.tokens import issue_token
from app.approvals.links import issue_link
from app.audit.jobs import run_export
from app.audit.models import AuditEvent
from app.audit.services import ChainReport, raise_alert, request_export
from app.extensions import db
from app.imports import services as import_services
from app.outbox.models import OutboxMessage
from app.policy import versions as policy_versions
from app.queues.services import save_view
from app.unit_of_work import commit
from app.webhooks.models import WebhookDelivery
from app.webhooks.services import create_subscription, fan_out
from tests.conftest import PASSWORD, SYSTEM, FreshContextClient, actor, csrf_from

ROLES = ("requester", "approver", "analyst", "manager", "admin", "auditor")
SIGNED_OUT = "signed out"
OUTSIDER = "member of another tenant"
TOKEN = "API token"
TOKEN_LACKING_SCOPE = "API token lacking the scope"
TOKEN_OF_OTHER_TENANT = "API token of another tenant"
TOKENS = (TOKEN, TOKEN_LACKING_SCOPE, TOKEN_OF_OTHER_TENANT)
PERSONAS = (SIGNED_OUT, *ROLES, OUTSIDER, *TOKENS)
ALL_SCOPES = ("items:read", "items:write", "decisions:write")

LET_THROUGH = "let through"
SIGN_IN = "sent to sign in"
REFUSED = "refused (403)"
NOT_FOUND = "not found (404)"
NO_TOKEN = "no token (401)"

# Path arguments that name no data of a tenant.
NOT_DATA = {"name", "filename"}
# Query strings the walk sends, naming the tenant (pages that need one).
QUERY_NAMES_TENANT = {"audit.access_review_csv"}
# Forms that name the tenant they act in (the walk names the first tenant).
FORM_NAMES_TENANT = {"auth.switch_tenant", "audit.create_export", "imports.upload",
                     "api_admin.create_token", "webhooks.subscribe", "account.out_of_office",
                     "account.clear_out_of_office"}

BILLING_CSV = ("exception_id,invoice_number,customer,exception_type,amount\n"
               "EX-1,INV-1,Acme,payment_failed,120.00\n")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _rules() -> list:
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True})
    return [pytest.param(rule.endpoint, rule.rule, id=f"{rule.endpoint} {rule.rule}")
            for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.endpoint, r.rule))]


def expected(access, persona: str, names_data: bool) -> str:
    """What the declared access says `persona` gets; `names_data`: the request names data of
    the walk's tenant (in its path, or the tenant in its form)."""
    if access.kind == ANONYMOUS:
        return LET_THROUGH
    if persona in TOKENS:
        if access.kind != API_TOKEN:
            return SIGN_IN  # a token is not a session
        if persona == TOKEN_LACKING_SCOPE:
            return REFUSED
        return NOT_FOUND if persona == TOKEN_OF_OTHER_TENANT and names_data else LET_THROUGH
    if access.kind == API_TOKEN:
        return NO_TOKEN  # a session is not a token
    if persona == SIGNED_OUT:
        return SIGN_IN
    if not access.admits(ROLES if persona == OUTSIDER else (persona,)):
        return REFUSED
    return NOT_FOUND if persona == OUTSIDER and names_data else LET_THROUGH


def outcome(client, response, sign_in_message: str) -> str:
    status = response.status_code
    if status in (301, 302, 303, 307, 308):
        location = response.headers["Location"]
        if urlsplit(location).path == "/login":
            # The access check's redirect says why on the sign-in page; a route's own (signing
            # out, a password just set) says something else.
            if sign_in_message in client.get(location).text:
                return SIGN_IN
        return LET_THROUGH
    if status == 400 and "did not come from Cleardesk" in response.text:
        return "refused by the CSRF check (the walk sends a valid token)"
    return {401: NO_TOKEN, 403: REFUSED, 404: NOT_FOUND,
            405: "method not allowed (405)"}.get(status, LET_THROUGH)


class World:
    """Two tenants; in the first, one member per role; in the second, an outsider with every
    role. Everything else is made when a route first needs it."""

    def __init__(self, app, make_tenant, make_user, make_item):
        self.app, self.make_item = app, make_item
        self.tenant = make_tenant("northwind")
        self.tenant_id = self.tenant.id
        self.other = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin",
                                 country="DE")
        self.users = {role: make_user(f"{role}@example.com", [self.tenant], roles=(role,),
                                      limit="100000") for role in ROLES}
        self.users[OUTSIDER] = make_user("outsider@example.com", [self.other], roles=ROLES,
                                         limit="100000")
        self.make_user = make_user
        self._exports, self._views = {}, {}

    def act(self, role):
        return actor(self.users[role])

    # Work items: each person acts on one of their own, with an action they may take.
    @cached_property
    def requested(self):
        return self.make_item(self.tenant, requester=self.users["requester"])

    @cached_property
    def approval(self):
        return self.make_item(self.tenant)

    @cached_property
    def exception(self):
        return self.make_item(self.tenant, kind="billing_exception")

    @cached_property
    def claimable(self):
        return self.make_item(self.tenant)

    def work_of(self, persona: str):
        return {"requester": (self.requested, "withdraw"),
                "analyst": (self.exception, "investigate"),
                "manager": (self.claimable, "claim")}.get(persona, (self.approval, "approve"))

    def file_of(self, persona: str) -> tuple[int, int]:
        """(item id, attachment id) of a file on an item of the tenant the persona may see (a
        requester: their own), an item of its own so that the walk's actions leave it open."""
        return self._own_file if persona == "requester" else self._file

    def _attached(self, item) -> tuple[int, int]:
        from app.actors import Actor
        from app.work.attachments import Upload, attach_files

        [row] = attach_files(Actor.system("access walk"), item,
                             [Upload("walk.txt", b"Walked by the access test\n")])
        ids = (item.id, row.id)
        commit()
        return ids

    @cached_property
    def single_sign_on(self) -> str:
        """A tenant with single sign-on on, its provider unreachable (nothing listens on the
        discard port): the flow's start answers its own page, past the gate."""
        from app.auth.models import TenantSingleSignOn

        db.session.add(TenantSingleSignOn(
            tenant_id=self.tenant.id, enabled=True, issuer="https://127.0.0.1:9",
            client_id="walk", allowed_domains=["example.com"]))
        commit()
        return self.tenant.slug

    @cached_property
    def _file(self) -> tuple[int, int]:
        return self._attached(self.make_item(self.tenant))

    @cached_property
    def _own_file(self) -> tuple[int, int]:
        return self._attached(self.make_item(self.tenant, requester=self.users["requester"]))

    @cached_property
    def link(self) -> str:
        item = self.make_item(self.tenant)
        token, _row = issue_link(item, item.current_step(), self.users["approver"])
        commit()
        return token

    @cached_property
    def colleague(self) -> int:
        return self.make_user("colleague@example.com", [self.tenant], roles=("approver",)).id

    @cached_property
    def password_link(self) -> str:
        invitee = self.make_user("invitee@example.com", [self.tenant], roles=("requester",))
        token, _row = admin_password_links.issue_password_link(
            invitee, self.tenant.id, PasswordLinkPurpose.INVITATION.value)
        commit()
        return token

    @cached_property
    def pending_change(self) -> int:
        second = self.make_user("second.admin@example.com", [self.tenant], roles=("admin",))
        change = admin_people.change_membership(actor(second), self.tenant, user=second,
                                                  roles=["admin", "approver"],
                                                  approval_limit="1000")
        commit()
        return change.id

    @cached_property
    def group(self) -> int:
        from app.admin.groups import create_group

        group = create_group(self.act("admin"), self.tenant, name="Treasury")
        commit()
        return group.id

    @cached_property
    def closure(self) -> int:
        closure = admin_tenants.add_closure(self.act("admin"), self.tenant,
                                             first_day=date(2031, 12, 24),
                                             last_day=date(2031, 12, 26), reason="Shutdown")
        commit()
        return closure.id

    @cached_property
    def logo(self):
        admin_tenants.set_logo(self.act("admin"), self.tenant, PNG)
        commit()
        return self.tenant.slug

    @cached_property
    def draft(self) -> int:
        draft = policy_versions.create_draft(self.act("admin"), self.tenant.id)
        commit()
        return draft.id

    @cached_property
    def rule(self) -> int:
        rule = policy_versions.save_rule(
            self.act("admin"), self.tenant.id, self.draft, rule_id=None, name="Small",
            condition="amount < 100", outcome="auto_approve")
        commit()
        return rule.id

    @cached_property
    def import_job(self) -> int:
        job = import_services.upload(self.act("analyst"), self.tenant.id,
                                     format_name="billing_export", filename="northwind.csv",
                                     raw=BILLING_CSV.encode())
        commit()
        return job.id

    def export_of(self, persona: str):
        """One's own audit export, finished (only its requester may see it)."""
        owner = persona if persona in ("auditor", "admin") else "auditor"
        if owner not in self._exports:
            export = request_export(self.act(owner), tenant_id=self.tenant.id,
                                    export_format="jsonl")
            commit()
            run_export(export.id)
            self._exports[owner] = export.id
        return self._exports[owner]

    def view_of(self, persona: str):
        """One's own saved queue view (someone else's for those who have none here)."""
        owner = persona if persona in ROLES else "requester"
        if owner not in self._views:
            self._views[owner] = save_view(self.act(owner), f"{owner}'s view", "mine", "").id
            commit()
        return self._views[owner]

    @cached_property
    def alert(self) -> int:
        alert = raise_alert(ChainReport(self.tenant.id, 1, False, "event #2 was edited", 2))
        commit()
        return alert.id

    @cached_property
    def event_id(self) -> int:
        self.approval  # noqa: B018 - its creation is an event of the tenant
        return db.session.scalar(select(AuditEvent.id).where(
            AuditEvent.tenant_id == self.tenant.id).limit(1))

    @cached_property
    def subscription(self) -> int:
        self.app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
        sub, _secret = create_subscription(self.act("admin"), self.tenant.id,
                                           url="http://127.0.0.1:9/hooks",
                                           events=["item.created"])
        commit()
        return sub.id

    @cached_property
    def delivery(self):
        self.subscription  # noqa: B018
        item = self.make_item(self.tenant)
        message = db.session.scalars(select(OutboxMessage).where(
            OutboxMessage.topic == "item.created").order_by(OutboxMessage.id.desc())).first()
        assert message.payload["item_id"] == item.id
        fan_out(message)
        commit()
        return db.session.scalar(select(WebhookDelivery.id))

    @cached_property
    def token_row(self) -> int:
        row, _secret = issue_token(SYSTEM, self.tenant.id, "to revoke", ALL_SCOPES)
        commit()
        return row.id

    def token(self, persona: str, access) -> str:
        if persona == TOKEN_LACKING_SCOPE:
            scopes = [s for s in ALL_SCOPES if s not in access.scopes] or ["items:read"]
        else:
            scopes = ALL_SCOPES
        tenant = self.other if persona == TOKEN_OF_OTHER_TENANT else self.tenant
        _row, secret = issue_token(SYSTEM, tenant.id, persona, scopes)
        commit()
        return secret

    # What the walk puts in each path argument.
    def path_value(self, endpoint: str, argument: str, persona: str):
        if argument == "item_id" and endpoint == "items.attachment":
            return self.file_of(persona)[0]
        if argument == "item_id":
            return self.work_of(persona)[0].id
        if argument == "token":
            return self.link if endpoint.startswith("approval_links.") else self.password_link
        if argument == "name":
            return "attainment" if endpoint.startswith("dashboard.") else "mine"
        if argument == "slug":
            if endpoint == "auth.sso_start":
                return self.single_sign_on
            return self.logo if endpoint == "account.logo" else self.tenant.slug
        values = {
            "filename": lambda: "app.css",
            "import_id": lambda: self.import_job,
            "user_id": lambda: self.colleague,
            "change_id": lambda: self.pending_change,
            "closure_id": lambda: self.closure,
            "group_id": lambda: self.group,
            "tenant_id": lambda: self.tenant_id,
            "policy_id": lambda: self.draft,
            "rule_id": lambda: self.rule,
            "export_id": lambda: self.export_of(persona),
            "alert_id": lambda: self.alert,
            "event_id": lambda: self.event_id,
            "subscription_id": lambda: self.subscription,
            "delivery_pk": lambda: self.delivery,
            "token_id": lambda: self.token_row,
            "view_id": lambda: self.view_of(persona),
            "attachment_id": lambda: self.file_of(persona)[1],
            # Someone else's session: ending it is a 404 for everyone, past the gate.
            "session_id": lambda: "s" * 32,
            # Someone else's passkey (none exists by that id): a 404 for everyone, likewise.
            "passkey_id": lambda: 999_999,
        }
        if argument not in values:
            raise AssertionError(f"The walk does not know what to put in <{argument}> of "
                                 f"{endpoint}: teach World.path_value.")
        return values[argument]()

    def form(self, endpoint: str, persona: str, csrf: str) -> dict:
        """Every field any form reads, so that routes judge the request rather than refuse it
        unread; some routes then answer 400 or 422, which is theirs to say."""
        item, action = self.work_of(persona)
        form = {"csrf_token": csrf, "action": action, "comment": "Walked by the access test",
                "reason": "Walked by the access test", "version": item.version,
                "selected_ids": item.id, "queue": "mine", "name": f"{persona}'s walk",
                "filters": "", "tenant": self.tenant.id, "tenant_id": self.tenant.id,
                "format": "jsonl", "next": "/queues/mine", "email": "requester@example.com",
                "password": PASSWORD, "confirm": PASSWORD}
        if endpoint in ("approval_links.decide", "queues.bulk"):
            form["action"] = "approve"
        if endpoint == "imports.upload":
            form.update(format="billing_export",
                        file=(io.BytesIO(BILLING_CSV.encode()), "walk.csv"))
        return form

    def json(self, endpoint: str, persona: str) -> dict | None:
        if endpoint == "api.create_item":
            return {"kind": "billing_exception", "subtype": "payment_failed",
                    "title": "Card declined", "external_ref": f"WALK-{persona}",
                    "source_system": "billing", "counterparty": "Acme Labs", "amount": "12.00"}
        if endpoint == "api.resubmit":
            return {"answer": "Walked by the access test"}
        if endpoint == "api.decide":
            item = self.work_of(persona)[0]
            return {"action": "approve", "decided_by": "approver@example.com",
                    "expected_version": item.version}
        return None


@pytest.fixture
def world(app, make_tenant, make_user, make_item, tmp_path) -> World:
    app.config["AUDIT_EXPORT_DIR"] = str(tmp_path / "exports")
    return World(app, make_tenant, make_user, make_item)


class Clients:
    """One client per persona, signed in (or holding a token) once, with its CSRF token."""

    def __init__(self, app, world: World):
        self.app, self.world, self._made = app, world, {}

    def _new(self):
        self.app.test_client_class = FreshContextClient
        return self.app.test_client()

    def get(self, persona: str, access) -> tuple:
        key = (persona, access.scopes if persona == TOKEN_LACKING_SCOPE else None)
        if key not in self._made:
            client, headers = self._new(), {}
            page = client.get("/login")
            if persona in ROLES or persona == OUTSIDER:
                signed_in = client.post("/login", data={
                    "email": self.world.users[persona].email, "password": PASSWORD,
                    "csrf_token": csrf_from(page.text)})
                assert signed_in.status_code == 303, f"{persona} could not sign in"
                page = client.get("/no-such-page")  # a cheap page that carries the token
            if persona in TOKENS:
                headers = {"Authorization": f"Bearer {self.world.token(persona, access)}"}
            self._made[key] = (client, headers, csrf_from(page.text))
        return self._made[key]


# Routes whose path names something only its owner has (one's own session): the walk cannot
# hand each persona one of theirs without ending it, so it names someone else's, and the route
# answers 404 past the gate, as it must.
OWN_NOT_FOUND = {"account.end_session", "account.remove_passkey"}

# Methods in this order: reads first, so that a write does not change what a read finds.
METHOD_ORDER = ("OPTIONS", "HEAD", "GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.mark.parametrize(("endpoint", "path"), _rules())
def test_every_route_answers_everyone_as_its_declared_access_says(app, world, endpoint, path):
    rule = next(r for r in app.url_map.iter_rules()
                if r.endpoint == endpoint and r.rule == path)
    clients = Clients(app, world)
    sign_in_message = app.login_manager.login_message
    names_data = bool(set(rule.arguments) - NOT_DATA)
    wrong = []
    for method in sorted(rule.methods, key=METHOD_ORDER.index):
        answering = endpoint
        if method == "OPTIONS":  # of all the routes at this address, one answers OPTIONS
            sample = rule.build({a: world.path_value(endpoint, a, "approver")
                                 for a in rule.arguments})[1]
            answering = app.url_map.bind("localhost").match(sample, method="OPTIONS")[0]
        access = access_of(app, answering, method)
        assert access is not None, f"{method} {path} ({answering}) declares no access"
        for persona in PERSONAS:
            if persona == TOKEN_LACKING_SCOPE and not (access.kind == API_TOKEN
                                                       and access.scopes):
                continue  # there is no scope to lack
            db.session.rollback()  # read the world afresh; hold no snapshot during a request
            client, headers, csrf = clients.get(persona, access)
            url = rule.build({a: world.path_value(endpoint, a, persona)
                              for a in rule.arguments})[1]
            kwargs = {"headers": headers}
            if endpoint in QUERY_NAMES_TENANT:
                kwargs["query_string"] = {"tenant": world.tenant_id}
            if method == "POST":
                body = world.json(endpoint, persona)
                if body is not None:
                    kwargs["json"] = body
                else:
                    kwargs["data"] = world.form(endpoint, persona, csrf)
            response = client.open(url, method=method, **kwargs)
            got = outcome(client, response, sign_in_message)
            response.close()
            # OPTIONS is answered by Flask from the route alone (its methods), reading no data.
            names = method != "OPTIONS" and (
                names_data or endpoint in QUERY_NAMES_TENANT
                or (method == "POST" and endpoint in FORM_NAMES_TENANT))
            want = expected(access, persona, names)
            if endpoint in OWN_NOT_FOUND and got == NOT_FOUND and want == LET_THROUGH:
                got = want  # past the gate, the route itself finds no such thing
            if got != want:
                wrong.append(f"{persona}: {method} {url} answered {response.status_code} "
                             f"({got}); its access ({access}) says {want}")
    assert not wrong, "\n".join(wrong)


def test_every_method_of_every_route_declares_who_may_use_it():
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True})
    assert None not in access_table(app).values()


def test_an_app_with_an_undeclared_route_does_not_start():
    bare = Flask(__name__)

    @bare.get("/open")
    @allow(anonymous=True)
    def open_page():
        return "ok"

    @bare.get("/forgotten")
    def forgotten():
        return "secret"

    with pytest.raises(UndeclaredAccess, match="forgotten"):
        install_access(bare)


def test_a_route_added_without_a_declaration_is_refused(app, client, auth, make_tenant,
                                                        make_user):
    admin = make_user("admin@example.com", [make_tenant()], roles=ROLES)
    app.add_url_rule("/added-later", "added_later", lambda: "secret")
    auth.login(admin.email)

    response = client.get("/added-later")

    assert response.status_code == 403
    assert "secret" not in response.text
