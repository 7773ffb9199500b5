"""Conditions are checked when saved, with a message that names what is wrong."""
import pytest

from app.errors import ValidationFailed
from app.policy.rules import check_condition


@pytest.mark.parametrize("condition", [
    "amount < 1000",
    'region == "NA" and discount_pct <= 10',
    'partner_type in ["reseller", "referral"] or counterparty_risk == "low"',
    "true",
])
def test_a_well_typed_condition_compiles(condition):
    assert check_condition(condition).matches({
        "amount": 10, "region": "NA", "discount_pct": 5, "partner_type": "reseller",
        "counterparty_risk": "low"}) in (True, False)


@pytest.mark.parametrize("condition, message", [
    ("amont < 5", "Unknown field “amont”. Did you mean “amount”?"),
    ('region == "NA" and region < 5', "Type mismatch in “region < 5”: region is text."),
    ("amount ==", "Syntax error at the end."),
    ("amount + 3", "A condition must be true or false, e.g. amount < 1000."),
    ("", "Write a condition (use true to match every item)."),
])
def test_a_bad_condition_is_refused_with_a_message_naming_the_problem(condition, message):
    with pytest.raises(ValidationFailed) as refused:
        check_condition(condition)
    assert refused.value.message == message


def test_exceptions_and_disputes_see_the_shared_approval_fields_with_their_own_help():
    from app.policy.rules import FIELDS, FIELDS_BY_KIND

    shared = ["amount", "currency", "region", "product_line", "partner_type", "priority",
              "source_system", "counterparty", "risk_score"]
    for kind in ("billing_exception", "settlement_dispute"):
        fields = FIELDS_BY_KIND[kind]
        assert list(fields)[:len(shared)] == shared
        assert "discount_pct" not in fields and "counterparty_risk" not in fields
        assert all(fields[name][0] == FIELDS[name][0] for name in shared)
        assert fields["priority"][1] == "low, normal, high, urgent (as it arrived)"
        assert fields["source_system"][1] == "e.g. zuora, stripe, partner_portal"
        assert fields["amount"] == FIELDS["amount"]
