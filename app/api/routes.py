"""The JSON API under /api/v1: bearer tokens instead of sessions (so no CSRF), problem+json
errors, a per-token rate limit. Thin: parse and validate with the schemas, call one service
function, answer (the request wrapper commits once: app.unit_of_work.App)."""
from __future__ import annotations

import json
import re

from flask import Blueprint, Flask, Response, g, request, url_for
from pydantic import BaseModel, ValidationError

from app.access import allow, declare_access
from app.api import schemas, services
from app.api.openapi import openapi_document
from app.api.problems import field_errors, problem
from app.api.tokens import find_token, note_use, take_rate_limit, token_actor
from app.errors import DomainError
from app.extensions import csrf
from app.params import API_BODY, BadParam, body_limit, whole_number
from app.work.attachments import attachments_of, read_uploads, uploads_body_limit
from app.unit_of_work import commit_now, database_unreachable, roll_back_quietly

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


class ProblemResponse(Exception):
    def __init__(self, response: Response):
        self.response = response


@bp.errorhandler(ProblemResponse)
def _problem_response(error: ProblemResponse):
    return error.response  # the unit of work was rolled back (app.unit_of_work.App)


@bp.errorhandler(DomainError)
def _domain_error(error: DomainError):
    return problem(error.status, error.message, getattr(error, "fields", None))


def _authenticate():
    """The bearer token of the request, in g.api_token (run by the access check before every
    route that needs a token; each route names the scopes it needs with @allow)."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    token = find_token(presented.strip()) if scheme.lower() == "bearer" else None
    if token is None:
        return problem(401, "Send a valid, unrevoked API token as 'Authorization: Bearer "
                            "<token>'.", headers={"WWW-Authenticate": 'Bearer realm="cleardesk"'})
    ip, agent = request.remote_addr, request.user_agent.string
    if note_use(token, ip, agent):
        commit_now("the token's use is kept even if the request's own work is then refused")
    g.api_token = token
    g.api_actor = token_actor(token, ip, agent)
    limit = take_rate_limit(token)
    g.rate_limit = limit
    if limit is not None and limit.exceeded:
        return problem(429, f"More than {limit.limit} requests a minute with this token; "
                            f"try again in {limit.retry_after} s.",
                       headers={"Retry-After": str(limit.retry_after)})
    return None


declare_access(bp, api_token=(), authenticate=_authenticate)


@bp.after_request
def _rate_limit_headers(response: Response) -> Response:
    limit = g.get("rate_limit")
    if limit is not None:
        response.headers["RateLimit-Limit"] = str(limit.limit)
        response.headers["RateLimit-Remaining"] = str(max(0, limit.remaining))
    return response


def _json_body(model: type[BaseModel]):
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise ProblemResponse(problem(415, "Send the body as application/json."))
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProblemResponse(problem(400, "The body is not valid JSON.")) from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ProblemResponse(problem(422, "Some fields are not valid.",
                                      field_errors(error))) from None


def _query(model: type[BaseModel]):
    args = {}
    for name, values in request.args.to_dict(flat=False).items():
        if len(values) > 1:
            raise ProblemResponse(problem(400, f"'{name}' is given more than once.",
                                          {name: "given more than once"}))
        args[name] = values[0]
    try:
        return model.model_validate(args)
    except ValidationError as error:
        raise ProblemResponse(problem(400, "Some query parameters are not valid.",
                                      field_errors(error))) from None


def _json(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise ProblemResponse(problem(400, "Idempotency-Key must be 1 to 255 visible ASCII "
                                           "characters.", {"Idempotency-Key": "malformed"}))
    return key


def _idempotent(change):
    """Run `change()` -> (status, body, headers) once per Idempotency-Key (when one is sent);
    a repeat gets the first answer again, marked Idempotent-Replayed."""
    key = _idempotency_key()
    record = None
    if key is not None:
        fingerprint = services.request_fingerprint(request.method, request.path,
                                                   request.get_data(cache=True))
        record, replay = services.reserve_idempotency_key(g.api_actor, key, fingerprint)
        if replay is not None:
            return _json(replay.body, replay.status, {"Idempotent-Replayed": "true"})
    status, body, headers = change()
    services.remember_answer(record, status, body)
    return _json(body, status, headers)


@bp.get("/openapi.json")
@allow(anonymous=True)
def openapi():
    return _json(openapi_document())


@bp.post("/items")
@body_limit(API_BODY)
@allow(api_token="items:write")
def create_item():
    body = _json_body(schemas.ItemCreate)

    def change():
        item, created = services.create_item_from_api(g.api_actor, body)
        location = url_for("api.get_item", item_id=item.id)
        return (201 if created else 200), schemas.item_json(item), {"Location": location}

    return _idempotent(change)


@bp.get("/items")
@allow(api_token="items:read")
def list_items():
    query = _query(schemas.ItemQuery)
    items, next_cursor = services.list_items(g.api_actor, query)
    files = attachments_of([i.id for i in items])
    body = {"items": [schemas.item_json(i, files[i.id]) for i in items],
            "next_cursor": next_cursor}
    return _json(body)


@bp.get("/items/<bigid(signed=True):item_id>")
@allow(api_token="items:read")
def get_item(item_id: int):
    body = schemas.item_json(services.read_item(g.api_actor, item_id))
    return _json(body)


@bp.post("/items/<bigid(signed=True):item_id>/decision")
@allow(api_token="decisions:write")
@body_limit(API_BODY)
def decide(item_id: int):
    body = _json_body(schemas.DecisionIn)

    def change():
        item = services.decide_from_api(g.api_actor, item_id, body)
        return 200, schemas.item_json(item), {}

    return _idempotent(change)


@bp.post("/items/<bigid(signed=True):item_id>/resubmit")
@body_limit(API_BODY)
@allow(api_token="decisions:write")
def resubmit(item_id: int):
    body = _json_body(schemas.ResubmitIn)

    def change():
        item = services.resubmit_from_api(g.api_actor, item_id, body)
        return 200, schemas.item_json(item), {}

    return _idempotent(change)


@bp.post("/items/<bigid(signed=True):item_id>/attachments")
@body_limit(uploads_body_limit)
@allow(api_token="items:write")
def add_attachments(item_id: int):
    """Evidence files for an item of the token's tenant, as multipart/form-data (field
    `files`, repeated); each file's type is read from its bytes."""
    services.read_item(g.api_actor, item_id)  # another tenant's item is a 404, whatever is sent
    if request.mimetype != "multipart/form-data":
        raise ProblemResponse(problem(415, "Send the files as multipart/form-data, in fields "
                                           "named 'files'."))

    def change():
        uploads = read_uploads(request.files.getlist("files"))
        services.attach_from_api(g.api_actor, item_id, uploads,
                                 _expected_version(request.form.get("expected_version")))
        item = services.read_item(g.api_actor, item_id)
        return 201, schemas.item_json(item), {}

    return _idempotent(change)


def _expected_version(raw):
    if raw is None or not raw.strip():
        return None
    try:
        return whole_number(raw, "expected_version", minimum=1)
    except BadParam as bad:
        raise ProblemResponse(problem(422, str(bad.description), bad.fields)) from None


@bp.get("/items/<bigid(signed=True):item_id>/events")
@allow(api_token="items:read")
def item_events(item_id: int):
    query = _query(schemas.EventQuery)
    events, next_cursor = services.item_events(g.api_actor, item_id, query.limit, query.cursor)
    body = {"events": [schemas.EventOut(
        seq=e.seq, occurred_at=e.occurred_at, action=e.action, actor_type=e.actor_type,
        actor=e.actor_label, from_state=e.from_state, to_state=e.to_state, comment=e.comment,
        data=services.public_event_data(e.data)).model_dump(mode="json") for e in events],
        "next_cursor": next_cursor}
    return _json(body)


def unreachable_message() -> str:
    """What a client is told when the database could not be reached. A read changed nothing;
    a write may have been saved just before the connection went (its commit went through,
    then what came after failed), so it is to be sent again as it was, and is done once."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return "The database cannot be reached; the request changed nothing. Try again in a moment."
    return ("The database cannot be reached; the request may or may not have been saved. "
            "Retry it in a moment with the same Idempotency-Key (a create also with the same "
            "source_system and external_ref): it is carried out once.")


def install_api(app: Flask) -> None:
    """Register the blueprint, and answer routing errors under /api/ (unknown path, wrong
    method) and server errors there as problem+json rather than the HTML pages."""
    app.register_blueprint(bp)
    handlers = app.error_handler_spec.setdefault(None, {})
    for status in (400, 404, 405, 413, 500):
        previous = dict(handlers.get(status, {}))

        def handler(error, status=status, previous=previous):
            if request.path.startswith(bp.url_prefix + "/") or request.path == bp.url_prefix:
                roll_back_quietly()  # an error before the view (the wrapper rolls back its own)
                message = getattr(error, "description", None) or "That did not work."
                if status == 500 and database_unreachable(error):
                    return problem(503, unreachable_message(), headers={"Retry-After": "5"})
                if status == 500:
                    message = "Something went wrong on our side; the request changed nothing."
                if status == 413:
                    message = f"The body is larger than {request.max_content_length:,} bytes."
                return problem(status, message, getattr(error, "fields", None))
            for cls in type(error).__mro__:
                if cls in previous:
                    return previous[cls](error)
            return error

        app.register_error_handler(status, handler)
