"""Errors of the JSON API as RFC 9457 problem details (application/problem+json)."""
from __future__ import annotations

import json

from flask import Response
from pydantic import ValidationError

PROBLEM_TYPES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API token"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict with the item's current state"),
    413: ("too-large", "Request body too large"),
    414: ("uri-too-long", "URL too long"),
    415: ("unsupported-media-type", "Send application/json"),
    422: ("validation-failed", "The request is not valid"),
    429: ("rate-limited", "Too many requests"),
    500: ("server-error", "Server error"),
    503: ("unavailable", "Temporarily unavailable"),
}


def problem(status: int, detail: str, errors: dict[str, str] | list[dict] | None = None,
            headers: dict | None = None) -> Response:
    slug, title = PROBLEM_TYPES.get(status, ("error", "Error"))
    if isinstance(errors, dict):
        errors = [{"field": k, "message": v} for k, v in errors.items()]
    body = {"type": f"urn:cleardesk:problem:{slug}", "title": title, "status": status,
            "detail": detail, "errors": errors or []}
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def field_errors(error: ValidationError) -> list[dict]:
    """Pydantic's errors as (dotted field, message) pairs a client can show next to a field."""
    out = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        out.append({"field": field, "message": item["msg"]})
    return out
