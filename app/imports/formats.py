"""The CSV formats Cleardesk imports, and reading a file into items or into per-row errors.
Rows are checked with the API's own item schema (app.api.schemas.ItemCreate), so a row is
valid exactly when the same item posted to the API would be."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal

from pydantic import ValidationError

from app.api.schemas import ItemCreate
from app.errors import ValidationFailed
from app.work.kinds import SUBTYPES
from app.work.money import clean_item_amounts, item_amounts

MAX_ROWS = 200_000
MAX_ERRORS_KEPT = 1000


@dataclass(frozen=True)
class CsvFormat:
    name: str
    label: str
    kind: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    default_source: str

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


FORMATS = {
    "billing_export": CsvFormat(
        name="billing_export", label="Billing exceptions from a billing export",
        kind="billing_exception",
        required=("exception_id", "invoice_number", "customer", "exception_type", "amount"),
        optional=("amount_at_risk", "customer_account", "failing_check", "currency", "region",
                  "product_line", "priority", "title", "requester_email"),
        default_source="billing"),
    "partner_statement": CsvFormat(
        name="partner_statement", label="Settlement disputes from a partner statement",
        kind="settlement_dispute",
        required=("statement_ref", "line_id", "partner", "claim_type", "claimed_amount",
                  "calculated_amount"),
        optional=("partner_id", "period", "currency", "region", "partner_type", "priority",
                  "title", "requester_email"),
        default_source="partner-portal"),
}


class FileRefused(ValueError):
    """The file as a whole cannot be read (encoding, header, size)."""


@dataclass
class ParsedFile:
    rows: list[dict] = field(default_factory=list)  # create_item keyword arguments
    errors: list[dict] = field(default_factory=list)  # {row, field, message}
    error_rows: int = 0
    total_rows: int = 0


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"The file is not UTF-8 text (byte {exc.start}).") from None


def _row_to_item(fmt: CsvFormat, row: dict, source_system: str) -> dict:
    get = lambda name: (row.get(name) or "").strip() or None  # noqa: E731
    common = {"kind": fmt.kind, "source_system": source_system, "currency": get("currency"),
              "region": get("region"), "priority": get("priority") or "normal",
              "requester_email": get("requester_email")}
    if fmt.name == "billing_export":
        subtype = get("exception_type")
        return {**common, "subtype": subtype, "external_ref": get("exception_id"),
                "counterparty": get("customer"), "amount": get("amount"),
                "amount_at_risk": get("amount_at_risk"), "product_line": get("product_line"),
                "title": get("title") or _title(fmt.kind, subtype, get("invoice_number")),
                "details": {k: v for k, v in (("invoice_number", get("invoice_number")),
                                              ("customer_account", get("customer_account")),
                                              ("failing_check", get("failing_check"))) if v}}
    subtype = get("claim_type")
    statement, line = get("statement_ref"), get("line_id")
    return {**common, "subtype": subtype,
            "external_ref": f"{statement}:{line}" if statement and line else None,
            "counterparty": get("partner"), "amount": get("claimed_amount"),
            "claimed_amount": get("claimed_amount"),
            "calculated_amount": get("calculated_amount"), "partner_type": get("partner_type"),
            "title": get("title") or _title(fmt.kind, subtype, statement),
            "details": {k: v for k, v in (("statement_ref", statement),
                                          ("partner_id", get("partner_id")),
                                          ("period", get("period"))) if v}}


def _title(kind: str, subtype: str | None, ref: str | None) -> str | None:
    label = SUBTYPES.get(kind, {}).get(subtype or "") or subtype or "Item"
    return f"{label}: {ref}" if ref else None


# CSV column each item field comes from, to name it in an error.
_COLUMN_OF = {
    "billing_export": {"external_ref": "exception_id", "counterparty": "customer",
                       "subtype": "exception_type", "title": "invoice_number"},
    "partner_statement": {"external_ref": "statement_ref/line_id", "counterparty": "partner",
                          "subtype": "claim_type", "amount": "claimed_amount",
                          "title": "statement_ref"},
}


def read_csv(raw: bytes, fmt: CsvFormat, *, source_system: str, currency: str,
             ceiling: Decimal | None = None, members: frozenset[str] | None = None,
             schema_checked: bool = False) -> ParsedFile:
    """Every row checked; rows are numbered as a spreadsheet shows them (the header is 1).
    `schema_checked`: this same content passed the item schema before (the import job
    re-reading its upload), so only what can have changed since is checked again here (the
    tenant's currency); the write path's own checks follow (prepare_items). `ceiling`: the
    tenant's largest amount per item; `members`: the lower-cased emails of the tenant's active
    members, who may be named as requesters."""
    text = _decode(raw)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise FileRefused(f"The header cannot be read: {exc}.") from None
    if not header:
        raise FileRefused("The file is empty.")
    reader.fieldnames = header
    missing = [c for c in fmt.required if c not in header]
    if missing:
        raise FileRefused("Missing column(s): " + ", ".join(missing) + ". Expected: "
                          + ", ".join(fmt.columns) + ".")
    unknown = [c for c in header if c and c not in fmt.columns]
    if unknown:
        raise FileRefused("Unknown column(s): " + ", ".join(unknown) + ".")
    parsed = ParsedFile()
    seen: dict[str, int] = {}
    column_of = _COLUMN_OF[fmt.name]
    number = 1
    try:
        for row in reader:
            number += 1
            if number - 1 > MAX_ROWS:
                raise FileRefused(f"More than {MAX_ROWS:,} rows; split the file.")
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # a blank line
            parsed.total_rows += 1
            if schema_checked:
                item = _row_to_item(fmt, row, source_system)
                problems = ([("currency", f"this tenant works in {currency}")]
                            if item.get("currency") and item["currency"] != currency else [])
            else:
                problems = _check_row(fmt, row, source_system, currency, ceiling, members,
                                      column_of)
                item = None if problems else _row_to_item(fmt, row, source_system)
            if not problems:
                ref = item["external_ref"]
                if ref in seen:
                    problems = [(column_of.get("external_ref", "external_ref"),
                                 f"the same reference as row {seen[ref]}")]
                else:
                    seen[ref] = number
            if problems:
                parsed.error_rows += 1
                for name, message in problems:
                    if len(parsed.errors) < MAX_ERRORS_KEPT:
                        parsed.errors.append({"row": number, "field": name, "message": message})
            else:
                parsed.rows.append(item)
    except csv.Error as exc:
        raise FileRefused(f"Row {number} cannot be read as CSV: {exc}.") from None
    if parsed.total_rows == 0:
        raise FileRefused("The file has a header but no rows.")
    return parsed


def _check_row(fmt, row, source_system, currency, ceiling, members,
               column_of) -> list[tuple[str, str]]:
    if None in row:  # more cells than columns
        return [("row", f"{len(fmt.columns) + len(row[None])} cells where the header has "
                        f"{len(row) - 1}")]
    item = _row_to_item(fmt, row, source_system)
    problems = []
    try:
        ItemCreate.model_validate(item)
    except ValidationError as error:
        for e in error.errors(include_url=False, include_input=False):
            name = str(e["loc"][0]) if e["loc"] else "row"
            if name == "details" and len(e["loc"]) > 1:
                name = str(e["loc"][1])
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] == "missing" or item.get(name) in (None, ""):
                message = "is required"
            elif e["type"] == "literal_error" and name == "subtype":
                message = "unknown type; one of " + ", ".join(SUBTYPES[fmt.kind])
            problems.append((column_of.get(name, name), message))
    if not problems and item["subtype"] not in SUBTYPES[fmt.kind]:
        problems.append((column_of["subtype"], "unknown type; one of "
                         + ", ".join(SUBTYPES[fmt.kind])))
    if item.get("currency") and item["currency"] != currency:
        problems.append(("currency", f"this tenant works in {currency}"))
    requester = item.get("requester_email")
    if requester and members is not None and requester.lower() not in members \
            and not any(name == "requester_email" for name, _m in problems):
        problems.append(("requester_email", "is not an active member of this tenant"))
    if not problems:  # the write path's money rules, named by the row's own columns
        try:
            clean_item_amounts(fmt.kind, item["subtype"], item_amounts(fmt.kind, item),
                               currency=currency, ceiling=ceiling)
        except ValidationFailed as failed:
            problems.extend((column_of.get(name, name), message)
                            for name, message in failed.fields.items())
    return problems
