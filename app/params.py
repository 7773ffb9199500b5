"""Values a client sends — query strings, form fields, path ids, page cursors, `next` links —
read in one place: a value that makes no sense is a `BadParam` (a 400 naming the parameter and
what was wrong), never a server error further down. Pages that collect the problems of a
filter form catch it and show the message beside the field instead."""
from __future__ import annotations

import base64
import binascii
import json
import re
import tempfile
from datetime import date, datetime
from decimal import Decimal
from urllib.parse import urlsplit

from flask import Flask, current_app, g, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.routing import IntegerConverter
from wtforms import Field, ValidationError
from wtforms.widgets import DateInput, TextInput

# Ids: most tables' are INTEGER (PostgreSQL refuses to compare them with a larger number);
# the large tables' (work items, audit events, deliveries, mail) BIGINT, past which SQLite's
# driver overflows too.
MAX_ID = 2**31 - 1
MAX_BIG_ID = 2**63 - 1
# Days and times a person can mean; past them datetime arithmetic and timezones overflow.
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2999, 12, 31)
# Money as the write path stores it: Numeric(18, 2).
MONEY_PATTERN = r"^-?[0-9]{1,16}(\.[0-9]{1,2})?$"
MAX_CURSOR = 200
FORM_BODY = 1024 * 1024  # bytes of a request body (MAX_CONTENT_LENGTH), unless a route says
API_BODY = 256 * 1024  # a JSON API request's

_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: "²".isdigit() is True, int("²") fails
_MONEY = re.compile(MONEY_PATTERN)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CURSOR = re.compile(r"[A-Za-z0-9_-]+")


class BadParam(BadRequest):
    """A parameter the client sent makes no sense; `field` names it, `reason` says why."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field.replace('_', ' ')}: {reason}.")
        self.field, self.reason = field, reason

    @property
    def fields(self) -> dict[str, str]:
        return {self.field: self.reason}


def _clean(raw) -> str:
    return raw.strip() if isinstance(raw, str) else ""


def whole_number(raw, field: str, *, minimum: int = 0, maximum: int = MAX_ID) -> int:
    """A whole number written in ASCII digits, within [minimum, maximum]."""
    text = _clean(raw)
    negative = text.startswith("-") and minimum < 0
    digits = text[1:] if negative else text
    if not _DIGITS.fullmatch(digits):
        raise BadParam(field, "must be a whole number")
    value = -int(digits) if negative else int(digits)
    if not minimum <= value <= maximum:
        raise BadParam(field, f"must be between {minimum:,} and {maximum:,}")
    return value


def record_id(raw, field: str, maximum: int = MAX_ID) -> int:
    """The id of a row: 1 up to what its column holds (MAX_BIG_ID for the large tables)."""
    text = _clean(raw)
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= maximum:
        raise BadParam(field, "is not a valid id")
    return int(text)


def big_record_id(raw, field: str) -> int:
    return record_id(raw, field, MAX_BIG_ID)


def storable(raw, field: str) -> str:
    """Text every database can store and search: no NUL or other control character but
    tabs and line breaks."""
    text = raw if isinstance(raw, str) else ""
    if any(c < " " and c not in "\t\r\n" for c in text):
        raise BadParam(field, "must not contain control characters")
    return text


def money(raw, field: str) -> Decimal:
    """An amount with at most two decimals and 16 digits before them (thousands separators
    are allowed); never an exponent, NaN or Infinity."""
    text = _clean(raw)
    if not _MONEY.match(text.replace(",", "")):
        raise BadParam(field, "must be an amount like 1250.00")
    return Decimal(text.replace(",", ""))


def check_money_text(text: str) -> None:
    """For a JSON string amount: raise ValueError (pydantic's way) unless it is money."""
    if not _MONEY.match(text):
        if re.fullmatch(r"-?[0-9]+\.[0-9]{3,}", text):
            raise ValueError("at most 2 decimal places")
        raise ValueError("must be a decimal number like 1250.00")


def day(raw, field: str) -> date:
    """A calendar day written 2026-01-31, between 1900 and 2999."""
    text = _clean(raw)
    try:
        value = date.fromisoformat(text) if _DAY.fullmatch(text) else None
    except ValueError:
        value = None
    if value is None:
        raise BadParam(field, "must be a date like 2026-01-31")
    if not FIRST_DAY <= value <= LAST_DAY:
        raise BadParam(field, f"must be between {FIRST_DAY} and {LAST_DAY}")
    return value


def instant(raw, field: str) -> datetime:
    """A point in time in ISO 8601 with its UTC offset, between 1900 and 2999."""
    text = _clean(raw)
    try:
        value = datetime.fromisoformat(text) if text.isascii() else None
    except ValueError:
        value = None
    if value is None or value.tzinfo is None or value.utcoffset() is None:
        raise BadParam(field, "must be a time with its UTC offset")
    if not FIRST_DAY <= value.date() <= LAST_DAY:
        raise BadParam(field, f"must be between {FIRST_DAY} and {LAST_DAY}")
    return value


def gathered(errors: dict[str, str], read, raw, field: str):
    """For a filter form, which ignores what it cannot read: `read(raw, field)`, or None with
    the reason in `errors[field]` (shown beside the field). Empty is None."""
    if raw is None or not str(raw).strip():
        return None
    try:
        return read(raw, field)
    except BadParam as bad:
        errors[field] = bad.reason
        return None


def arg_id(args, field: str, maximum: int = MAX_ID) -> int | None:
    """An optional id among the query-string or form `args`; absent or empty is None."""
    raw = args.get(field)
    return None if raw is None or not raw.strip() else record_id(raw, field, maximum)


def arg_ids(args, field: str) -> list[int]:
    """Every id given as a repeated `field` (a selection of rows)."""
    return [record_id(raw, field) for raw in args.getlist(field)]


# --- page cursors ------------------------------------------------------------------------------

def encode_cursor(parts: list) -> str:
    """An opaque page cursor: the values of the last row shown, as URL-safe base64 JSON."""
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_cursor(raw, tag: str, field: str = "cursor") -> list:
    """The values of a cursor made by `encode_cursor([tag, ...])`, without the tag. Each value
    must still be checked with the readers above: a client can write any JSON."""
    text = _clean(raw)
    if len(text) > MAX_CURSOR:
        raise BadParam(field, f"is longer than {MAX_CURSOR} characters")
    try:
        if not _CURSOR.fullmatch(text):
            raise ValueError
        parts = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)),
                           parse_constant=_no_constant)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        parts = None
    if not isinstance(parts, list) or not parts or parts[0] != tag:
        raise BadParam(field, "is not one this page gave")
    return parts[1:]


def _no_constant(name: str):
    raise ValueError(name)  # NaN, Infinity: not JSON, though Python's reader takes them


def cursor_id(value, field: str = "cursor") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BIG_ID:
        raise BadParam(field, "is not one this page gave")
    return value


# --- where to go after signing in -------------------------------------------------------------

def local_path(raw) -> str | None:
    """`raw` if it is a path on this site (so a `next` link cannot send anyone elsewhere or
    smuggle a header), else None."""
    if not isinstance(raw, str) or not raw.startswith("/") or raw.startswith("//"):
        return None
    if any(c < " " or c == "\x7f" or c == "\\" for c in raw) or len(raw) > 2000:
        return None
    try:
        parts = urlsplit(raw)
    except ValueError:
        return None
    if parts.scheme or parts.netloc:
        return None
    return raw


def path_of_url(raw) -> str | None:
    """The local path (and query) of a full URL a browser reports, such as htmx's
    HX-Current-URL, or None when it is none."""
    try:
        parts = urlsplit(raw or "")
    except ValueError:
        return None
    return local_path(parts.path + (f"?{parts.query}" if parts.query else ""))


# --- WTForms fields that read with the same rules ---------------------------------------------

class _ParamField(Field):
    """A field read by one of this module's readers. `sentence` replaces the reader's terse
    reason with what a person should type, where the field is one people fill in."""

    widget = TextInput()
    read = None

    def __init__(self, label=None, validators=None, sentence: str | None = None, **kwargs):
        super().__init__(label, validators, **kwargs)
        self.sentence = sentence

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        return "" if self.data is None else str(self.data)

    def process_formdata(self, valuelist):
        self.data = None
        if valuelist and valuelist[0].strip():
            try:
                self.data = type(self).read(valuelist[0], self.name)
            except BadParam as bad:
                raise ValueError(self.sentence or bad.reason) from None


class IdField(_ParamField):
    read = staticmethod(record_id)


class BigIdField(_ParamField):
    read = staticmethod(big_record_id)


class Storable:
    """WTForms validator: see `storable`."""

    def __call__(self, form, field):
        try:
            storable(field.data, field.name)
        except BadParam as bad:
            raise ValidationError(bad.reason) from None


class DayField(_ParamField):
    widget = DateInput()
    read = staticmethod(day)


class WholeNumberField(_ParamField):
    read = staticmethod(whole_number)


# --- path ids -------------------------------------------------------------------------------

class IdConverter(IntegerConverter):
    """`<int:...>` in a route: ASCII digits within what an id column holds, so a larger
    number is no such page (404) rather than an overflow in the database."""

    regex = r"[0-9]{1,19}"
    largest = MAX_ID

    def __init__(self, map, fixed_digits=0, min=None, max=None, signed=False):  # noqa: A002
        max = self.largest if max is None else max  # noqa: A001
        super().__init__(map, fixed_digits, -max if signed and min is None else min, max,
                         signed)


class BigIdConverter(IdConverter):
    """`<bigid:...>`: the id of a row of one of the large tables (BIGINT)."""

    largest = MAX_BIG_ID


# --- request bodies --------------------------------------------------------------------------

def body_limit(limit):
    """A route that takes bodies up to `limit` bytes (or as many as `limit(app)` says, for a limit
    the configuration sets); every other takes MAX_CONTENT_LENGTH. Put it just under the route
    decorator."""
    def decorate(view):
        view.body_limit = limit
        return view

    return decorate


def body_limit_of(app: Flask, endpoint: str | None) -> int | None:
    """The one place that decides how large a body an endpoint reads."""
    view = app.view_functions.get(endpoint) if endpoint else None
    limit = getattr(view, "body_limit", None)
    if callable(limit):
        limit = limit(app)
    return limit or app.config.get("MAX_CONTENT_LENGTH")


def _bound_the_body() -> None:
    """Werkzeug refuses a body whose Content-Length is over the limit (413). A chunked body
    has none, and werkzeug's reader then stops quietly at the limit: the JSON or form would
    be read cut short. So such a body is read here, up to the limit, and refused past it."""
    limit = request.max_content_length = body_limit_of(current_app, request.endpoint)
    environ = request.environ
    if limit is None or request.content_length is not None \
            or not environ.get("wsgi.input_terminated"):
        return
    body = tempfile.SpooledTemporaryFile(max_size=FORM_BODY)
    source, size = environ["wsgi.input"], 0
    while chunk := source.read(min(64 * 1024, limit + 1 - size)):
        size += len(chunk)
        if size > limit:
            body.close()
            raise RequestEntityTooLarge()
        body.write(chunk)
    body.seek(0)
    g.request_body = body  # closed when the request ends
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = body, str(size)
    request.__dict__.pop("stream", None)  # read from the copy, should anything have looked


def _close_the_body(_error=None) -> None:
    body = g.pop("request_body", None)
    if body is not None:
        body.close()


def install_params(app: Flask) -> None:
    """Before any route is added: every `<int:...>` is bounded; and, before anything reads
    a request's body (the CSRF check does), its size is."""
    app.url_map.converters["int"] = IdConverter
    app.url_map.converters["bigid"] = BigIdConverter
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = FORM_BODY
    app.before_request(_bound_the_body)
    app.teardown_request(_close_the_body)
