"""Rule conditions: the typed item fields a condition may use, checking a condition when it is
saved (naming the unknown field or the mismatched types), and matching compiled conditions."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from decimal import Decimal

import rule_engine
from rule_engine import DataType

from app.errors import ValidationFailed

# name -> (rule-engine type, what it is, for the help text on the admin page): approvals.
FIELDS: dict[str, tuple[DataType, str]] = {
    "amount": (DataType.FLOAT, "amount in the tenant's currency"),
    "currency": (DataType.STRING, "ISO currency code"),
    "subtype": (DataType.STRING, "e.g. discount, refund, credit_memo, vendor_bill"),
    "region": (DataType.STRING, "NA, EMEA, APAC, LATAM"),
    "product_line": (DataType.STRING, "e.g. Core Platform, Payments"),
    "partner_type": (DataType.STRING, "reseller, referral, marketplace, systems_integrator"),
    "priority": (DataType.STRING, "low, normal, high, urgent"),
    "source_system": (DataType.STRING, "e.g. salesforce, coupa"),
    "counterparty": (DataType.STRING, "customer or partner name"),
    "counterparty_risk": (DataType.STRING, "low, medium or high (recent rejections)"),
    "risk_score": (DataType.FLOAT, "0-100, from the policy's risk scoring"),
    "discount_pct": (DataType.FLOAT, "discount requested, in percent"),
    "payment_terms_days": (DataType.FLOAT, "payment terms asked for"),
    "contract_term_months": (DataType.FLOAT, "contract term"),
}
# Exceptions and disputes share these approval fields; where the help differs, it says so.
_CASE_SHARED = ("amount", "currency", "region", "product_line", "partner_type", "priority",
                "source_system", "counterparty", "risk_score")
_CASE_HELP = {"priority": "low, normal, high, urgent (as it arrived)",
              "source_system": "e.g. zuora, stripe, partner_portal"}
_CASE_COMMON: dict[str, tuple[DataType, str]] = {
    name: (FIELDS[name][0], _CASE_HELP.get(name, FIELDS[name][1])) for name in _CASE_SHARED}
# The fields a rule for each kind of work sees.
FIELDS_BY_KIND: dict[str, dict[str, tuple[DataType, str]]] = {
    "approval": FIELDS,
    "billing_exception": {
        **_CASE_COMMON,
        "subtype": (DataType.STRING, "e.g. tax_validation_failed, payment_failed, "
                                     "duplicate_invoice, price_mismatch"),
        "amount_at_risk": (DataType.FLOAT, "revenue at risk (leakage)"),
    },
    "settlement_dispute": {
        **_CASE_COMMON,
        "subtype": (DataType.STRING, "partner_margin, commission, rebate, service_credit"),
        "claimed_amount": (DataType.FLOAT, "what the partner claims"),
        "calculated_amount": (DataType.FLOAT, "what we calculated"),
        "delta": (DataType.FLOAT, "claimed minus calculated"),
        "delta_pct": (DataType.FLOAT, "the delta in percent of the calculated amount"),
        "delta_magnitude": (DataType.FLOAT, "the size of the delta, whichever way it goes "
                                            "(use it for thresholds)"),
        "delta_pct_magnitude": (DataType.FLOAT, "the size of delta_pct, whichever way"),
    },
}
KIND_WORDS = {"approval": "approvals", "billing_exception": "billing exceptions",
              "settlement_dispute": "settlement disputes"}
TYPE_WORDS = {DataType.FLOAT: "a number", DataType.STRING: "text"}

CONTEXTS = {
    kind: rule_engine.Context(
        type_resolver=rule_engine.type_resolver_from_dict({k: t for k, (t, _) in fields.items()}),
        default_timezone="UTC")
    for kind, fields in FIELDS_BY_KIND.items()
}
CONTEXT = CONTEXTS["approval"]

MAX_CONDITION = 2000
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# `and`/`or` outside quotes and brackets split a condition into the parts tried on their own.
_JOINER = re.compile(r"\s+(?:and|or)\s+")


def _fields_in(text: str, fields: dict = FIELDS) -> list[str]:
    seen: list[str] = []
    for word in _WORD.findall(re.sub(r"(\"[^\"]*\"|'[^']*')", "", text)):
        if word in fields and word not in seen:
            seen.append(word)
    return seen


def _split_top(text: str) -> list[str]:
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            m = _JOINER.match(text, i)
            if m:
                parts.append(text[start:i])
                start = i = m.end()
                continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _mismatch_message(text: str, kind: str = "approval") -> str:
    """rule-engine says only 'data type mismatch'; find the part that causes it and say what
    the fields in it are."""
    fields = FIELDS_BY_KIND[kind]
    culprit = text
    for part in _split_top(text):
        stripped = part.strip("() ")
        try:
            rule_engine.Rule(stripped, context=CONTEXTS[kind])
        except rule_engine.EngineError:
            culprit = stripped
            break
    described = ", ".join(f"{name} is {TYPE_WORDS[fields[name][0]]}"
                          for name in _fields_in(culprit, fields))
    message = f"Type mismatch in “{culprit}”"
    return f"{message}: {described}." if described else f"{message}."


def check_condition(text: str, kind: str = "approval") -> rule_engine.Rule:
    """Compile a condition against the typed fields of `kind`'s items, or raise
    ValidationFailed with a message that names the problem (an unknown field and the closest
    known one, mismatched types, a syntax error and where)."""
    if kind not in FIELDS_BY_KIND:
        raise ValidationFailed("Unknown kind of work.", {"kind": "unknown kind"})
    fields = FIELDS_BY_KIND[kind]
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("Write a condition (use true to match every item).",
                               {"condition": "is required"})
    if len(text) > MAX_CONDITION:
        raise ValidationFailed("That condition is too long.",
                               {"condition": f"at most {MAX_CONDITION} characters"})
    try:
        rule = rule_engine.Rule(text, context=CONTEXTS[kind])
    except rule_engine.SymbolResolutionError as error:
        close = difflib.get_close_matches(error.symbol_name, list(fields), n=1)
        hint = f" Did you mean “{close[0]}”?" if close else ""
        where = f" of {KIND_WORDS[kind]}" if kind != "approval" else ""
        message = f"Unknown field “{error.symbol_name}”{where}.{hint}"
        raise ValidationFailed(message, {"condition": message}) from None
    except rule_engine.AttributeResolutionError as error:
        message = f"Unknown attribute “{error.attribute_name}”."
        raise ValidationFailed(message, {"condition": message}) from None
    except rule_engine.RuleSyntaxError as error:
        where = f" near “{error.token.value}”" if getattr(error, "token", None) else " at the end"
        message = f"Syntax error{where}."
        raise ValidationFailed(message, {"condition": message}) from None
    except rule_engine.EvaluationError as error:
        message = (_mismatch_message(text, kind) if "type mismatch" in error.message
                   else f"Invalid condition: {error.message}.")
        raise ValidationFailed(message, {"condition": message}) from None
    except rule_engine.EngineError as error:
        message = f"Invalid condition: {error.message}."
        raise ValidationFailed(message, {"condition": message}) from None
    if rule.statement.expression.result_type not in (DataType.BOOLEAN, DataType.UNDEFINED):
        message = "A condition must be true or false, e.g. amount < 1000."
        raise ValidationFailed(message, {"condition": message})
    return rule


@dataclass(frozen=True)
class Compiled:
    rule: rule_engine.Rule

    def matches(self, inputs: dict) -> bool:
        """True if the condition holds; a condition that cannot be evaluated on this item (a
        field it needs is empty) does not match."""
        try:
            return bool(self.rule.matches(inputs))
        except rule_engine.EngineError:
            return False


def as_rule_value(value):
    """Item values as rule-engine takes them: numbers as Decimal, text as str."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    return value
