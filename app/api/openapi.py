"""The OpenAPI 3.1 document of /api/v1, generated from the pydantic models in
app.api.schemas: the very models that validate requests, so the document cannot drift."""
from __future__ import annotations

import copy
from functools import cache

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api import schemas
from app.params import MAX_BIG_ID

REF = "#/components/schemas/{model}"
PROBLEM = {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}}
ERROR_TEXT = {
    400: "Malformed request: not JSON, a bad query parameter, cursor or Idempotency-Key.",
    401: "No token, an unknown or a revoked one.",
    403: "The token lacks the scope, or the person named may not take this decision "
         "(role, approval limit, segregation of duties).",
    404: "No such item in the token's tenant.",
    409: "The item's state does not allow this (already decided, or changed since "
         "expected_version).",
    413: "The body is larger than the operation takes (256 KB for a JSON POST; for evidence "
         "files, the files' limit), whether sent with its length or chunked.",
    414: "The URL is too long for the server.",
    415: "The body is not application/json.",
    422: "The body is JSON but not valid (see errors), or an Idempotency-Key was reused "
         "with another request.",
    429: "Rate limit of the token exceeded; see Retry-After.",
}


def _json_content(model: str) -> dict:
    return {"application/json": {"schema": {"$ref": REF.format(model=model)}}}


def _errors(*statuses: int, **descriptions: str) -> dict:
    """Problem responses; `descriptions` (as s413=...) say what a status means for one
    operation, where it differs."""
    return {str(s): {"description": descriptions.get(f"s{s}", ERROR_TEXT[s]), "content": PROBLEM}
            for s in statuses}


def _without_null(schema: dict) -> dict:
    """A query parameter is absent rather than null: drop the null branch of Optional[X]."""
    schema = dict(schema)
    options = schema.get("anyOf")
    if options:
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            schema.pop("anyOf")
            schema = {**rest[0], **schema}
        else:
            schema["anyOf"] = rest
    if schema.get("default", 0) is None:
        schema.pop("default")
    schema.pop("title", None)
    return schema


def _query_parameters(model: type[BaseModel]) -> list[dict]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema["properties"].items():
        param = {"name": name, "in": "query", "required": name in required,
                 "schema": _without_null(prop)}
        if "description" in prop:
            param["description"] = prop["description"]
            param["schema"].pop("description", None)
        out.append(param)
    return out


ITEM_ID = {"name": "item_id", "in": "path", "required": True,
           "description": "Another number (0, negative, past 2^63-1) is no such item (404).",
           "schema": {"type": "integer", "minimum": 1, "maximum": MAX_BIG_ID}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Makes a retried POST safe: the first answer is stored and replayed "
                   "(with Idempotent-Replayed: true) for the same key and body.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255,
               "pattern": "^[\\x21-\\x7e]+$"},
}


def _webhooks() -> dict:
    """What Cleardesk POSTs to a subscribed URL, one entry per event a subscription can ask
    for (the same models the webhook tests validate deliveries with)."""
    signature = ("HMAC-SHA256 with the webhook's secret over \"<t>.<body>\", as "
                 "\"t=<unix time>,v1=<hex>\"; refuse timestamps more than five minutes off.")
    headers = {
        "Cleardesk-Signature": {"required": True, "description": signature,
                                "schema": {"type": "string"}},
        "Cleardesk-Delivery": {"required": True, "schema": {"type": "string"},
                               "description": "The delivery id (repeated by retries)."},
        "Cleardesk-Event": {"required": True, "schema": {"type": "string"},
                            "description": "The event name, as in the body."},
    }
    return {
        name: {"post": {
            "operationId": "webhook" + "".join(p.title() for p in name.replace(".", "_")
                                               .split("_")),
            "summary": " ".join((model.__doc__ or name).split()).split(". ")[0].rstrip("."),
            "description": " ".join((model.__doc__ or "").split()),
            "parameters": [{"name": header, "in": "header", **spec}
                           for header, spec in headers.items()],
            "requestBody": {"required": True, "content": _json_content(model.__name__)},
            "responses": {"2XX": {"description": "Received. Any other answer (or none "
                                                 "within the timeout) is retried with "
                                                 "backoff."}},
        }}
        for name, model in schemas.WEBHOOK_EVENTS.items()
    }


@cache
def _document() -> dict:
    _keys, top = models_json_schema(
        [(schemas.ItemCreate, "validation"), (schemas.DecisionIn, "validation"),
         (schemas.AttachmentOut, "serialization"),
         (schemas.ResubmitIn, "validation"),
         (schemas.ItemOut, "serialization"), (schemas.ItemPage, "serialization"),
         (schemas.EventPage, "serialization"), (schemas.Problem, "serialization"),
         *[(model, "serialization") for model in schemas.WEBHOOK_EVENTS.values()]],
        ref_template=REF)
    security = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cleardesk API",
            "version": "1.0.0",
            "description": "Push work in from billing, CRM and partner systems, read it back "
                           "and relay decisions. Every change goes through the same rules as "
                           "the browser and lands in the audit trail. Tokens are per tenant "
                           "and scoped; errors are RFC 9457 problem details.",
        },
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": top["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API token of one tenant."}},
        },
        "security": security,
        "webhooks": _webhooks(),
        "paths": {
            "/items": {
                "post": {
                    "operationId": "createItem",
                    "summary": "Create an item (idempotent on source_system + external_ref)",
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": {"required": True, "content": _json_content("ItemCreate")},
                    "responses": {
                        "201": {"description": "Created.", "content": _json_content("ItemOut")},
                        "200": {"description": "An item with this source_system and "
                                               "external_ref already existed; it is returned.",
                                "content": _json_content("ItemOut")},
                        **_errors(400, 401, 403, 409, 413, 414, 415, 422, 429),
                    },
                },
                "get": {
                    "operationId": "listItems",
                    "summary": "List the tenant's items, a page at a time (keyset cursor)",
                    "parameters": _query_parameters(schemas.ItemQuery),
                    "responses": {
                        "200": {"description": "A page.", "content": _json_content("ItemPage")},
                        **_errors(400, 401, 403, 413, 414, 429),
                    },
                },
            },
            "/items/{item_id}": {
                "get": {
                    "operationId": "getItem",
                    "summary": "Read an item",
                    "parameters": [ITEM_ID],
                    "responses": {
                        "200": {"description": "The item.", "content": _json_content("ItemOut")},
                        **_errors(401, 403, 404, 413, 414, 429),
                    },
                },
            },
            "/items/{item_id}/decision": {
                "post": {
                    "operationId": "decideItem",
                    "summary": "Record a decision taken by a named member of the tenant",
                    "parameters": [ITEM_ID, IDEMPOTENCY_KEY],
                    "requestBody": {"required": True, "content": _json_content("DecisionIn")},
                    "responses": {
                        "200": {"description": "The item after the decision.",
                                "content": _json_content("ItemOut")},
                        **_errors(400, 401, 403, 404, 409, 413, 414, 415, 422, 429),
                    },
                },
            },
            "/items/{item_id}/resubmit": {
                "post": {
                    "operationId": "resubmitItem",
                    "summary": "Answer an approver's question about an item this system "
                               "raised (item.info_requested) and send it back to them",
                    "parameters": [ITEM_ID, IDEMPOTENCY_KEY],
                    "requestBody": {"required": True, "content": _json_content("ResubmitIn")},
                    "responses": {
                        "200": {"description": "The item, pending again.",
                                "content": _json_content("ItemOut")},
                        **_errors(400, 401, 403, 404, 409, 413, 414, 415, 422, 429),
                    },
                },
            },
            "/items/{item_id}/attachments": {
                "post": {
                    "operationId": "addItemAttachments",
                    "summary": "Add evidence files to an item (each file's type is read from "
                               "its bytes; its SHA-256 is recorded in the audit trail)",
                    "description": "Allowed: PDF, PNG, JPEG, XLSX, DOCX, CSV and plain text. "
                                   "A file added while an approval link is out supersedes "
                                   "that link: the approver decides on the evidence as it "
                                   "now stands.",
                    "parameters": [ITEM_ID, IDEMPOTENCY_KEY],
                    "requestBody": {"required": True, "content": {"multipart/form-data": {
                        "schema": {"type": "object", "required": ["files"], "properties": {
                            "files": {"type": "array", "minItems": 1, "items": {
                                "type": "string", "contentMediaType":
                                "application/octet-stream"}},
                            "expected_version": {"type": "integer", "minimum": 1}}},
                        "encoding": {"files": {"contentType": "application/octet-stream"}},
                    }}},
                    "responses": {
                        "201": {"description": "The item with its files.",
                                "content": _json_content("ItemOut")},
                        **_errors(400, 401, 403, 404, 409, 413, 414, 415, 422, 429,
                                  s409="The item is decided (its evidence is closed), or "
                                       "changed since expected_version.",
                                  s413="A file is larger than the limit (10 MB unless "
                                       "configured), or the body is larger than the files "
                                       "allowed at once.",
                                  s415="The body is not multipart/form-data, or a file is "
                                       "of a type that cannot be attached.",
                                  s422="No file, an empty one, too many at once, or a bad "
                                       "expected_version."),
                    },
                },
            },
            "/items/{item_id}/events": {
                "get": {
                    "operationId": "listItemEvents",
                    "summary": "The item's audit events, oldest first",
                    "parameters": [ITEM_ID, *_query_parameters(schemas.EventQuery)],
                    "responses": {
                        "200": {"description": "A page of events.",
                                "content": _json_content("EventPage")},
                        **_errors(400, 401, 403, 404, 413, 414, 429),
                    },
                },
            },
        },
    }


def openapi_document() -> dict:
    return copy.deepcopy(_document())
