"""A real OpenID Connect provider for the single sign-on tests, built from Authlib's server
components: `AuthorizationServer` with the authorization code grant, extended by `OpenIDCode`
(ID tokens, nonce) and `CodeChallenge` (PKCE, required). It runs on loopback in a thread, signs
ID tokens with an RSA key made for the test and publishes that key as its JWKS.

Its sign-in page asks only for an email (the test registers the people it knows, with their
`email_verified`). `tamper` makes it misbehave the way a test needs: another issuer, audience,
nonce, an expired token, or a signature by a key it does not publish."""
from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, request
from joserfc.jwk import RSAKey
from markupsafe import escape
from werkzeug.serving import make_server


@dataclass
class Person:
    email: str
    email_verified: bool = True
    name: str = "Pat Example"
    sub: str = field(default_factory=lambda: "sub-" + secrets.token_hex(8))


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope):
        return " ".join(s for s in (scope or "").split() if s in ("openid", "email", "profile"))

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return endpoint != "token" or method == "client_secret_basic"

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    person: Person
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return None

    def get_amr(self):
        return None


class OIDCProvider:
    """Start with `start()`, stop with `stop()`; `issuer` is its base URL."""

    def __init__(self):
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig",
                                                         "alg": "RS256"})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "test-key",
                                                               "alg": "RS256"})
        self.clients: dict[str, Client] = {}
        self.people: dict[str, Person] = {}
        self.codes: dict[str, Code] = {}
        self.tamper: dict = {}
        self.token_requests: list[dict] = []
        self.served: Counter[str] = Counter()  # requests by path
        self.app = self._build_app()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-provider",
                                        daemon=True)

    def start(self) -> OIDCProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def register_client(self, redirect_uris: list[str], client_id: str | None = None) -> Client:
        client = Client(client_id or "cleardesk-" + secrets.token_hex(4),
                        secrets.token_urlsafe(24), list(redirect_uris))
        self.clients[client.client_id] = client
        return client

    def rotate_key(self) -> None:
        """Sign with a new key of a new `kid` from now on; the key set serves only it."""
        self.key = RSAKey.generate_key(2048, parameters={
            "kid": "key-" + secrets.token_hex(4), "use": "sig", "alg": "RS256"})

    def add_person(self, email: str, **values) -> Person:
        person = Person(email=email, **values)
        self.people[email] = person
        return person

    def _build_app(self) -> Flask:
        provider = self
        app = Flask("oidc_provider")
        app.config["SECRET_KEY"] = secrets.token_hex(16)

        class Grant(AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

            def save_authorization_code(self, code, req):
                data = req.payload.data
                provider.codes[code] = Code(
                    code=code, client_id=req.client.client_id,
                    redirect_uri=req.payload.redirect_uri, scope=req.payload.scope,
                    person=req.user, nonce=data.get("nonce"),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"))

            def query_authorization_code(self, code, client):
                found = provider.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code):
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code):
                return authorization_code.person

        class IDToken(OpenIDCode):
            def resolve_client_private_key(self, client):
                return provider.other_key if provider.tamper.get("foreign_key") else provider.key

            def get_client_algorithm(self, client):
                return "RS256"

            def get_client_claims(self, client):
                now = int(time.time())
                expires_in = provider.tamper.get("expires_in", 300)
                return {"iss": provider.tamper.get("iss", provider.issuer),
                        "aud": provider.tamper.get("aud", [client.get_client_id()]),
                        "iat": now if expires_in > 0 else now - 3600,
                        "exp": now + expires_in}

            def get_encode_header(self, client):
                signing = provider.other_key if provider.tamper.get("foreign_key") \
                    else provider.key
                return {"alg": "RS256", "kid": signing.kid}

            def get_authorization_code_claims(self, authorization_code):
                claims = super().get_authorization_code_claims(authorization_code)
                if "nonce" in provider.tamper:
                    claims["nonce"] = provider.tamper["nonce"]
                return claims

            def exists_nonce(self, nonce, req):
                return False

            def generate_user_info(self, user, scope):
                return UserInfo(sub=user.sub, email=user.email,
                                email_verified=user.email_verified, name=user.name)

        @app.before_request
        def count():
            provider.served[request.path] += 1

        server = AuthorizationServer(app, query_client=self.clients.get,
                                     save_token=lambda token, req: None)
        server.register_grant(Grant, [IDToken(require_nonce=True), CodeChallenge(required=True)])

        @app.get("/.well-known/openid-configuration")
        def discovery():
            return jsonify({
                "issuer": provider.issuer,
                "authorization_endpoint": f"{provider.issuer}/authorize",
                "token_endpoint": f"{provider.issuer}/token",
                "jwks_uri": f"{provider.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            })

        @app.get("/jwks")
        def jwks():
            keys = [provider.key.as_dict(private=False)]
            if provider.tamper.get("huge_jwks"):  # megabytes of padding keys
                keys += [{"kty": "oct", "kid": f"pad-{n}", "k": "A" * 1000} for n in range(2000)]
            return jsonify({"keys": keys})

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize():
            if request.method == "GET":
                server.get_consent_grant(end_user=None)  # refuses a malformed request
                return (f'<!doctype html><title>Test provider</title><h1>Test provider</h1>'
                        f'<form method="post" action="{escape(request.full_path)}">'
                        f'<label>Work email <input name="email" type="email"></label>'
                        f'<button type="submit">Continue</button></form>')
            person = provider.people.get(request.form.get("email", ""))
            grant = server.get_consent_grant(end_user=person)
            return server.create_authorization_response(grant=grant, grant_user=person)

        @app.post("/token")
        def token():
            provider.token_requests.append(dict(request.form))
            return server.create_token_response()

        return app


@pytest.fixture
def provider():
    """A provider of its own for a test, stopped after it."""
    provider = OIDCProvider().start()
    try:
        yield provider
    finally:
        provider.stop()
