"""Values stored as JSON (audit data, outbox payloads) are plain, and exactly what was hashed."""
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from app.models import Role
from app.types import jsonable


def test_jsonable_turns_money_times_and_enums_into_text_and_keeps_plain_values():
    when = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    value = {"amount": Decimal("12.50"), "at": when, "day": date(2026, 12, 7), "role": Role.APPROVER,
             "ok": True, "n": 3, "none": None, "text": "x", 7: "seven",
             "nested": [{"ids": (1, 2)}, {Decimal("1.0")}]}
    assert jsonable(value) == {
        "amount": "12.50", "at": "2026-12-07T09:30:00+00:00", "day": "2026-12-07",
        "role": "approver", "ok": True, "n": 3, "none": None, "text": "x", "7": "seven",
        "nested": [{"ids": [1, 2]}, ["1.0"]]}
    assert type(jsonable(True)) is bool and type(jsonable(Role.APPROVER)) is str


def test_jsonable_refuses_floats_anywhere():
    with pytest.raises(TypeError):
        jsonable({"rate": [0.1]})
