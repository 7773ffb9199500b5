"""Column types shared by every model: UTC-aware times and exact money."""
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum

from sqlalchemy import DateTime, Numeric
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Stores UTC; always returns an aware UTC datetime, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Cleardesk stores only timezone-aware times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


CENT = Decimal("0.01")


class Money(TypeDecorator):
    """Decimal with two places. PostgreSQL stores NUMERIC(18,2); SQLite has no decimal type and
    keeps a number with NUMERIC affinity, which this type turns back into an exact Decimal."""

    impl = Numeric(18, 2, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(18, 2, asdecimal=False))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money must be a Decimal, not a float")
        value = Decimal(value).quantize(CENT)
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, float):
            value = repr(value)
        return Decimal(value).quantize(CENT)


def utcnow() -> datetime:
    return datetime.now(UTC)


def tenant_time(value: datetime, timezone: str | None) -> str:
    """A stored UTC time as people read it: in the tenant's timezone (UTC without one)."""
    from zoneinfo import ZoneInfo

    local = value.astimezone(ZoneInfo(timezone or "UTC"))
    return local.strftime("%Y-%m-%d %H:%M ") + local.tzname()


_PLAIN = frozenset({str, int, bool, type(None)})


class PlainJSON(dict):
    """A dict of plain JSON values already (made by `plain_json`): jsonable hands it back as
    it is, so data kept in two places (a policy decision's receipt and its audit event) is
    walked once. Never changed after it is made."""


def plain_json(value: dict) -> PlainJSON:
    return PlainJSON(jsonable(value))


def jsonable(value):
    """Plain JSON values (audit event data, outbox payloads): what is stored is exactly what
    was hashed. Decimals and times become text; floats are refused (use Decimal or str)."""
    # Most values are plain already (every audit event's data goes through here): their exact
    # type answers first.
    kind = type(value)
    if kind in _PLAIN or kind is PlainJSON:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): jsonable(v) for k, v in value.items()}
    if kind is Decimal:
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        raise TypeError("floats are not allowed in audit data; use Decimal or str")
    return str(value)


def money_text(item, amount: Decimal) -> str:
    """An amount in the item's currency, as people read it: 'USD 12,345.67'."""
    return f"{item.currency} {amount:,.2f}"
