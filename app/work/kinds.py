"""What each kind of work carries: its subtypes, its typed detail fields, its codes."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from app.errors import ValidationFailed
from app.models import Kind
from app.work.money import magnitude, parse_amount

SUBTYPES: dict[str, dict[str, str]] = {
    Kind.APPROVAL.value: {
        "discount": "Discount",
        "non_standard_terms": "Non-standard terms",
        "credit_memo": "Credit memo",
        "refund": "Refund",
        "write_off": "Write-off",
        "purchase_request": "Purchase request",
        "invoice_release": "Invoice release",
        "vendor_bill": "Vendor bill",
    },
    Kind.BILLING_EXCEPTION.value: {
        "tax_validation_failed": "Tax validation failed",
        "usage_not_reconciled": "Usage not reconciled",
        "payment_failed": "Payment failed",
        "duplicate_invoice": "Duplicate invoice",
        "delayed_first_invoice": "Delayed first invoice",
        "price_mismatch": "Price mismatch",
    },
    Kind.SETTLEMENT_DISPUTE.value: {
        "partner_margin": "Partner margin",
        "commission": "Commission",
        "rebate": "Rebate",
        "service_credit": "Service-credit claim",
    },
}

# Typed detail fields per kind, kept in WorkItem.details. `str`, `Decimal` (stored as a string)
# and `int` are the types used.
DETAIL_FIELDS: dict[str, dict[str, type]] = {
    Kind.APPROVAL.value: {
        "discount_pct": Decimal,
        "payment_terms_days": int,
        "standard_terms_days": int,
        "reason": str,
        "contract_term_months": int,
        "invoice_number": str,
        "vendor": str,
        "cost_centre": str,
        "gl_account": str,
        # Owners the source system names: a policy step may route to them ("owner FIELD else
        # role"); app.approvals.services.name_owner falls back to the role.
        "account_owner_email": str,
        "cost_centre_owner_email": str,
        "budget_holder_email": str,
    },
    Kind.BILLING_EXCEPTION.value: {
        "invoice_number": str,
        "failing_check": str,
        "source_record": str,
        "customer_account": str,
    },
    Kind.SETTLEMENT_DISPUTE.value: {
        "period": str,
        "partner_id": str,
        "statement_ref": str,
    },
}

# What a request of each approval subtype asks for besides amount, counterparty and reason
# (the first is required in the app's request form; source systems send what they have).
SUBTYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "discount": ("discount_pct", "contract_term_months"),
    "non_standard_terms": ("payment_terms_days", "standard_terms_days", "contract_term_months"),
    "credit_memo": ("invoice_number",),
    "refund": ("invoice_number",),
    "write_off": ("invoice_number",),
    "purchase_request": ("cost_centre", "gl_account", "vendor", "cost_centre_owner_email"),
    "invoice_release": ("invoice_number",),
    "vendor_bill": ("vendor", "invoice_number", "cost_centre", "gl_account"),
}

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,63}$")

DETAIL_LABELS = {
    "account_owner_email": ("Account owner", "{}"),
    "cost_centre_owner_email": ("Cost centre owner", "{}"),
    "budget_holder_email": ("Budget holder", "{}"),
    "discount_pct": ("Discount", "{}%"),
    "payment_terms_days": ("Payment terms", "{} days"),
    "standard_terms_days": ("Standard terms", "{} days"),
    "contract_term_months": ("Contract term", "{} months"),
    "reason": ("Requester's reason", "{}"),
    "invoice_number": ("Invoice", "{}"),
    "vendor": ("Vendor", "{}"),
    "cost_centre": ("Cost centre", "{}"),
    "gl_account": ("GL account", "{}"),
    "failing_check": ("Failing check", "{}"),
    "source_record": ("Source record", "{}"),
    "customer_account": ("Customer account", "{}"),
    "period": ("Period", "{}"),
    "partner_id": ("Partner", "{}"),
    "statement_ref": ("Partner statement", "{}"),
}


def labelled_details(details: dict) -> list[tuple[str, str]]:
    """Detail fields as (label, shown value), in schema order."""
    out = []
    for name, value in details.items():
        label, shape = DETAIL_LABELS.get(name, (name.replace("_", " ").capitalize(), "{}"))
        out.append((label, shape.format(value)))
    return out


RESOLUTION_CODES = {
    "corrected_in_billing": "Corrected in billing system",
    "credit_issued": "Credit issued",
    "customer_paid": "Customer paid",
    "duplicate_voided": "Duplicate voided",
    "written_off": "Written off",
    "no_action_needed": "No action needed",
}

# Approvals above this amount (in the tenant's currency) need a second step.
SECOND_STEP_ABOVE = Decimal("50000.00")


def default_chain(amount: Decimal) -> list[tuple[str, Decimal]]:
    """The approval chain without a policy, as (role, minimum limit): an approver; above
    SECOND_STEP_ABOVE (in magnitude) a manager too, with a limit that covers the whole amount."""
    size = magnitude(amount)
    first = ("approver", min(size, SECOND_STEP_ABOVE))
    return [first] if size <= SECOND_STEP_ABOVE else [first, ("manager", size)]


def clean_details(kind: str, details: dict | None) -> dict:
    """Check detail fields against their kind's schema; return them as stored JSON values."""
    schema = DETAIL_FIELDS[kind]
    errors: dict[str, str] = {}
    cleaned: dict = {}
    for name, value in (details or {}).items():
        expected = schema.get(name)
        if expected is None:
            errors[name] = f"is not a field of {Kind(kind).label.lower()} items"
            continue
        if value is None:
            continue
        try:
            if expected is Decimal:
                cleaned[name] = str(Decimal(str(value)))
            elif expected is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                cleaned[name] = int(value)
            elif name.endswith("_email"):
                email = str(value).strip().lower()
                if not EMAIL.match(email):
                    raise ValueError
                cleaned[name] = email
            else:
                cleaned[name] = str(value)
        except (ValueError, InvalidOperation):
            errors[name] = ("must be an email address" if name.endswith("_email")
                            else f"must be a {expected.__name__.lower()}")
    if errors:
        raise ValidationFailed("Some details are not valid.", errors)
    return cleaned


def parse_money(value, field: str = "amount") -> Decimal:
    """A finite amount of either sign with at most two decimals (limits, thresholds); an item's
    own amounts go through app.work.money.clean_item_amounts, which knows signs and currencies."""
    return parse_amount(value, field)
