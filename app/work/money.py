"""Money rules of the write path: the sign each kind and subtype allow for each amount, the
currency's minor units, the tenant's ceiling, and the magnitude that thresholds and limits
compare. Pure (no database): every channel that writes an item (page, API, CSV, policy) reaches
`clean_item_amounts` through `app.work.services.prepare_item`."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import get_currency_precision, list_currencies

from app.errors import ValidationFailed

# What the storage holds: NUMERIC(18,2) (app.types.Money).
STORED_PLACES = 2
STORED_CEILING = Decimal("1e16")

POSITIVE, NON_NEGATIVE, SIGNED = "positive", "non_negative", "signed"

_SIGN_WORDS = {
    POSITIVE: "must be more than zero",
    NON_NEGATIVE: "must be zero or more",
}

# The sign each amount field of each kind (and, where it differs, subtype) may take. Approvals
# are money going out or given up (a refund, a credit memo, a discount's value): a positive
# amount, never a negative one that would read as "small". Non-standard terms may carry no
# money. Exceptions carry an amount at risk; disputes a claimed and a calculated amount, and
# their delta (claimed - calculated) is signed by definition: its thresholds use its magnitude.
_KIND_SIGNS: dict[str, dict[str, str]] = {
    "approval": {"amount": POSITIVE},
    "billing_exception": {"amount": NON_NEGATIVE, "amount_at_risk": NON_NEGATIVE},
    "settlement_dispute": {"amount": NON_NEGATIVE, "claimed_amount": NON_NEGATIVE,
                           "calculated_amount": NON_NEGATIVE},
}
_SUBTYPE_SIGNS: dict[tuple[str, str], dict[str, str]] = {
    ("approval", "non_standard_terms"): {"amount": NON_NEGATIVE},
}


def sign_rule(kind: str, subtype: str, field: str) -> str:
    """The sign `field` of a `kind`/`subtype` item may take (SIGNED for fields not listed)."""
    return (_SUBTYPE_SIGNS.get((kind, subtype), {}).get(field)
            or _KIND_SIGNS.get(kind, {}).get(field) or SIGNED)


@lru_cache(maxsize=None)
def known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


@lru_cache(maxsize=None)
def minor_units(currency: str) -> int:
    """Decimals an amount of `currency` may carry (CLDR's data: JPY 0, USD 2, KWD 3)."""
    return get_currency_precision(currency)


def currency_problem(currency: str) -> str | None:
    """Why a tenant cannot work in `currency`, or None."""
    if currency not in known_currencies():
        return "not an ISO 4217 currency code, such as EUR"
    if minor_units(currency) > STORED_PLACES:
        return (f"{currency} has {minor_units(currency)} decimals; amounts are kept to "
                f"{STORED_PLACES}")
    return None


def magnitude(amount: Decimal | None) -> Decimal:
    """What a threshold or an approval limit compares, whatever the sign."""
    return abs(amount) if amount is not None else Decimal("0")


def parse_amount(value, field: str = "amount", *, currency: str | None = None,
                 sign: str = SIGNED, ceiling: Decimal | None = None) -> Decimal:
    """An amount as stored, or ValidationFailed naming `field`: a finite number, with no more
    decimals than the currency has, of the allowed sign, and not above the ceiling (in
    magnitude)."""
    try:
        amount = Decimal(str(value).replace(",", "").strip())
    except (InvalidOperation, AttributeError, ValueError):
        raise ValidationFailed(f"{field} is not a number", {field: "must be a number"}) from None
    if not amount.is_finite():
        raise ValidationFailed(f"{field} is not a number", {field: "must be a number"})
    if abs(amount) >= STORED_CEILING:
        raise ValidationFailed(f"{field} is too large", {field: "too large"})
    places = STORED_PLACES if currency is None else min(minor_units(currency), STORED_PLACES)
    step = Decimal(1).scaleb(-places)
    if amount != amount.quantize(step):
        words = {0: "no decimals", 1: "at most one decimal", 2: "at most two decimals"}[places]
        where = f" for {currency}" if currency else ""
        raise ValidationFailed(f"{field} has too many decimals{where} ({words})",
                               {field: words})
    problem = _SIGN_WORDS.get(sign)
    if problem and (amount < 0 or (sign == POSITIVE and amount == 0)):
        raise ValidationFailed(f"{field} {problem}", {field: problem})
    if ceiling is not None and abs(amount) > ceiling:
        shown = f"{currency} {ceiling:,.2f}" if currency else f"{ceiling:,.2f}"
        raise ValidationFailed(f"{field} is above this tenant's maximum of {shown}",
                               {field: f"at most {shown}"})
    return amount.quantize(Decimal("0.01"))


def item_amounts(kind: str, fields: dict) -> dict:
    """The amount fields an item of `kind` carries, from what a channel sent: a billing
    exception's amount at risk and a dispute's claimed amount default to its amount, a
    dispute's calculated amount to zero."""
    amount = fields.get("amount")
    raw = {"amount": amount}
    if kind == "billing_exception":
        at_risk = fields.get("amount_at_risk")
        raw["amount_at_risk"] = at_risk if at_risk is not None else amount
    elif kind == "settlement_dispute":
        claimed, calculated = fields.get("claimed_amount"), fields.get("calculated_amount")
        raw["claimed_amount"] = claimed if claimed is not None else amount
        raw["calculated_amount"] = calculated if calculated is not None else Decimal("0")
    return raw


def clean_item_amounts(kind: str, subtype: str, raw: dict, *, currency: str,
                       ceiling: Decimal | None) -> dict:
    """Every amount field of a new or amended item, cleaned by the rules above; all problems at
    once (keyed by field). `raw` maps field names to what the channel sent (None: not given)."""
    clean: dict = {}
    errors: dict[str, str] = {}
    for field, value in raw.items():
        if value is None:
            clean[field] = None
            continue
        if field != "amount" and value is raw.get("amount") and "amount" in errors:
            continue  # a default taken from the amount: its problem is said once
        try:
            clean[field] = parse_amount(value, field, currency=currency,
                                        sign=sign_rule(kind, subtype, field), ceiling=ceiling)
        except ValidationFailed as failed:
            errors.update(failed.fields)
    if errors:
        raise ValidationFailed("Some amounts are not valid.", errors)
    return clean
