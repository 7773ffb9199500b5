"""Who may use each route, declared next to the routes and enforced in one place: every
blueprint names the access its routes get (`declare_access`), a route that differs says so with
`@allow`, and one check before every request applies the declaration of the endpoint asked
for. A route with no declaration stops the app from starting, and is refused if it is added
later. `access_table(app)` gives the whole table as data (a test walks it; `flask access`
prints it).

This is the gate of a route, by what the caller is: anyone, a signed-in member, a member holding
one of some roles in at least one of their tenants, or an API token holding some scopes. Which
tenant's data a request may reach stays with the service functions (they check the tenant of
every object, and answer 404 for another tenant's)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flask import Blueprint, Flask, abort, current_app, g, request
from flask_login import current_user

from app.errors import PermissionDenied
from app.models import Role

ANONYMOUS = "anonymous"
MEMBER = "member"
ROLES = "roles"
API_TOKEN = "api_token"


@dataclass(frozen=True)
class Access:
    """One route's gate: `kind` is who passes it; `roles` (for ROLES) are the roles of which a
    member needs one in some tenant; `scopes` (for API_TOKEN) are the scopes the token needs."""

    kind: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()

    def admits(self, roles: Iterable[str]) -> bool:
        """Whether a signed-in member holding `roles` (in some tenant) passes."""
        if self.kind in (ANONYMOUS, MEMBER):
            return True
        return self.kind == ROLES and bool(self.roles & set(roles))

    def __str__(self) -> str:
        if self.kind == ROLES:
            return "roles: " + ", ".join(sorted(self.roles))
        if self.kind == API_TOKEN:
            return "API token" + (": " + ", ".join(sorted(self.scopes)) if self.scopes else "")
        return {ANONYMOUS: "anyone", MEMBER: "any member"}[self.kind]


def _access(anonymous: bool = False, member: bool = False,
            roles: Iterable[str | Role] | None = None,
            api_token: str | Iterable[str] | None = None) -> Access:
    if [anonymous, member, roles is not None, api_token is not None].count(True) != 1:
        raise TypeError("Declare exactly one of anonymous, member, roles or api_token.")
    if anonymous:
        return Access(ANONYMOUS)
    if member:
        return Access(MEMBER)
    if roles is not None:
        names = frozenset(Role(r).value for r in roles)  # a misspelt role fails here
        if not names:
            raise TypeError("Name at least one role.")
        return Access(ROLES, roles=names)
    scopes = frozenset([api_token] if isinstance(api_token, str) else api_token)
    return Access(API_TOKEN, scopes=scopes)


def allow(*, anonymous: bool = False, member: bool = False,
          roles: Iterable[str | Role] | None = None,
          api_token: str | Iterable[str] | None = None,
          methods: Iterable[str] | None = None):
    """A route's own access, instead of its blueprint's: `@allow(anonymous=True)`,
    `@allow(member=True)`, `@allow(roles={"admin"})`, `@allow(api_token="items:read")`; with
    `methods`, for those methods only (the route's others keep what else is declared). The view
    itself is returned, marked, so it may sit above or below the route decorator."""
    access = _access(anonymous, member, roles, api_token)
    keys = [None] if methods is None else [m.upper() for m in methods]

    def mark(view):
        own = dict(getattr(view, "access", {}))
        own.update(dict.fromkeys(keys, access))
        view.access = own
        return view

    return mark


@dataclass
class _Declarations:
    blueprints: dict[str, Access]
    authenticators: dict[str, Callable]
    endpoints: dict[str, Access]


def _declarations(app: Flask) -> _Declarations:
    return app.extensions.setdefault("access", _Declarations({}, {}, {}))


def declare_access(bp: Blueprint, *, anonymous: bool = False, member: bool = False,
                   roles: Iterable[str | Role] | None = None,
                   api_token: str | Iterable[str] | None = None,
                   authenticate: Callable | None = None) -> None:
    """The access every route of `bp` gets unless it has its own `@allow`. `authenticate`
    (for a blueprint of API-token routes) runs before the scope check of each of its routes
    that takes a token: it answers a refusal (a response), or None having put the token in
    `g.api_token`."""
    access = _access(anonymous, member, roles, api_token)

    def register(state):
        declared = _declarations(state.app)
        declared.blueprints[bp.name] = access
        if authenticate is not None:
            declared.authenticators[bp.name] = authenticate

    bp.record_once(register)


def access_of(app: Flask, endpoint: str, method: str) -> Access | None:
    """The declared access of `method` on `endpoint`, or None when nothing declares it."""
    method = "GET" if method == "HEAD" else method
    own = getattr(app.view_functions.get(endpoint), "access", {})
    if method in own or None in own:
        return own.get(method, own.get(None))
    declared = _declarations(app)
    if endpoint in declared.endpoints:
        return declared.endpoints[endpoint]
    blueprint, dot, _name = endpoint.rpartition(".")
    return declared.blueprints.get(blueprint) if dot else None


def access_table(app: Flask) -> dict[tuple[str, str], Access | None]:
    """(endpoint, method) -> its access, for every method of every route (None: undeclared,
    which the app refuses)."""
    return {(rule.endpoint, method): access_of(app, rule.endpoint, method)
            for rule in app.url_map.iter_rules() for method in sorted(rule.methods)}


class UndeclaredAccess(RuntimeError):
    pass


def check_declarations(app: Flask) -> None:
    missing = sorted({e for (e, _method), access in access_table(app).items() if access is None})
    if missing:
        raise UndeclaredAccess(
            "Routes without a declared access (declare_access on the blueprint, or @allow on "
            f"the view): {', '.join(missing)}")


def _names(roles: frozenset[str]) -> str:
    words = [f"{r}s" for r in sorted(roles)]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _enforce():
    endpoint = request.endpoint
    if endpoint is None:
        return None  # no route matched: the 404 or 405 follows
    access = access_of(current_app, endpoint, request.method)
    if access is None:
        abort(403)  # undeclared: refused until someone says who may use it
    if access.kind == ANONYMOUS:
        return None
    if access.kind == API_TOKEN:
        authenticate = _declarations(current_app).authenticators.get(request.blueprint or "")
        refusal = authenticate() if authenticate else None
        if refusal is not None:
            return refusal
        token = g.get("api_token")
        if token is None:
            abort(401)
        missing = sorted(access.scopes - set(token.scopes or []))
        if missing:
            raise PermissionDenied(f"This token lacks the '{missing[0]}' scope.")
        return None
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()
    if access.kind == ROLES and not any(m.role_set & access.roles
                                        for m in current_user.memberships):
        raise PermissionDenied(f"Only {_names(access.roles)} can use this.")
    return None


def install_access(app: Flask) -> None:
    """Check every request against the table; refuse to start with an undeclared route."""
    _declarations(app).endpoints["static"] = Access(ANONYMOUS)  # Flask's own static files
    app.before_request(_enforce)
    check_declarations(app)
