"""Queue filters and sort orders, read from the query string (so a filtered queue is a URL
that can be bookmarked and shared) and turned into SQL conditions and keyset cursors."""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from sqlalchemy import literal, or_, tuple_

from app.models import SlaState, WorkItem
from app.types import utcnow
from app.work.kinds import SUBTYPES

SORTS = {
    # name: (label, column, descending)
    "sla": ("SLA due", WorkItem.sla_due_at, False),
    "amount": ("Amount", WorkItem.amount, True),
    "age": ("Oldest first", WorkItem.created_at, False),
}
AGES = {"1": "older than 1 day", "3": "older than 3 days", "7": "older than a week",
        "30": "older than 30 days"}
SLA_STATES = {SlaState.ON_TRACK.value: "On track", SlaState.AT_RISK.value: "At risk",
              SlaState.BREACHED.value: "Breached", SlaState.PAUSED.value: "Paused"}
FILTER_KEYS = ("kind", "subtype", "tenant", "region", "partner_type", "product_line",
               "min_amount", "max_amount", "age", "sla", "assignee", "q", "sort")


class BadCursor(ValueError):
    pass


@dataclass
class QueueFilters:
    kind: str | None = None
    subtype: str | None = None
    tenant: int | None = None
    region: str | None = None
    partner_type: str | None = None
    product_line: str | None = None
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    age: str | None = None
    sla: str | None = None
    assignee: str | None = None  # "me", "none" or a user id
    q: str | None = None
    sort: str = "sla"
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, args, tenant_ids: set[int]) -> QueueFilters:
        """Read filters; a value that makes no sense is dropped with a message, never an error
        page, and a tenant outside the viewer's own is refused without saying whether it exists."""
        f = cls()
        text = lambda name, limit=100: (args.get(name) or "").strip()[:limit] or None  # noqa: E731
        f.kind = text("kind")
        if f.kind and f.kind not in SUBTYPES:
            f.errors["kind"] = "unknown kind"
            f.kind = None
        f.subtype = text("subtype")
        known_subtypes = SUBTYPES.get(f.kind) if f.kind else {
            s for subtypes in SUBTYPES.values() for s in subtypes}
        if f.subtype and f.subtype not in known_subtypes:
            f.errors["subtype"] = "unknown subtype"
            f.subtype = None
        tenant = text("tenant")
        if tenant:
            if tenant.isdigit() and int(tenant) in tenant_ids:
                f.tenant = int(tenant)
            else:
                f.errors["tenant"] = "not one of your tenants"
        f.region, f.partner_type, f.product_line = (text("region"), text("partner_type"),
                                                    text("product_line"))
        for name in ("min_amount", "max_amount"):
            raw = text(name, 30)
            if raw:
                try:
                    value = Decimal(raw.replace(",", ""))
                    if not value.is_finite():
                        raise InvalidOperation
                    setattr(f, name, value)
                except InvalidOperation:
                    f.errors[name] = "must be a number"
        f.age = text("age")
        if f.age and f.age not in AGES:
            f.errors["age"] = "unknown age"
            f.age = None
        f.sla = text("sla")
        if f.sla and f.sla not in SLA_STATES:
            f.errors["sla"] = "unknown SLA state"
            f.sla = None
        f.assignee = text("assignee")
        if f.assignee and not (f.assignee in ("me", "none") or f.assignee.isdigit()):
            f.errors["assignee"] = "unknown assignee"
            f.assignee = None
        f.q = text("q")
        f.sort = text("sort") or "sla"
        if f.sort not in SORTS:
            f.errors["sort"] = "unknown sort"
            f.sort = "sla"
        return f

    def conditions(self, viewer_id: int) -> list:
        out = []
        if self.kind:
            out.append(WorkItem.kind == self.kind)
        if self.subtype:
            out.append(WorkItem.subtype == self.subtype)
        if self.tenant:
            out.append(WorkItem.tenant_id == self.tenant)
        for name in ("region", "partner_type", "product_line"):
            value = getattr(self, name)
            if value:
                out.append(getattr(WorkItem, name) == value)
        if self.min_amount is not None:
            out.append(WorkItem.amount >= self.min_amount)
        if self.max_amount is not None:
            out.append(WorkItem.amount <= self.max_amount)
        if self.age:
            out.append(WorkItem.created_at < utcnow() - timedelta(days=int(self.age)))
        if self.sla:
            out.append(WorkItem.sla_state == self.sla)
        if self.assignee == "me":
            out.append(WorkItem.assignee_id == viewer_id)
        elif self.assignee == "none":
            out.append(WorkItem.assignee_id.is_(None))
        elif self.assignee:
            out.append(WorkItem.assignee_id == int(self.assignee))
        if self.q:
            pattern = "%" + self.q.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
            out.append(or_(WorkItem.title.ilike(pattern, escape="\\"),
                           WorkItem.counterparty.ilike(pattern, escape="\\"),
                           WorkItem.external_ref.ilike(pattern, escape="\\")))
        return out

    def order_by(self) -> list:
        _label, column, descending = SORTS[self.sort]
        if descending:
            return [column.desc(), WorkItem.id.desc()]
        return [column.asc(), WorkItem.id.asc()]

    def after(self, cursor: str) -> list:
        """The keyset condition for the rows after `cursor` (never OFFSET)."""
        value, last_id = decode_cursor(cursor, self.sort)
        _label, column, descending = SORTS[self.sort]
        # A row-value comparison: the database reads it as one range on the (column, id)
        # index and starts there, where an OR of two conditions would scan from the top.
        key = tuple_(column, WorkItem.id)
        if descending:
            return [key < tuple_(literal(value, column.type), literal(last_id))]
        return [key > tuple_(literal(value, column.type), literal(last_id))]

    def cursor_for(self, item: WorkItem) -> str:
        value = getattr(item, SORTS[self.sort][1].key)
        payload = [self.sort, value.isoformat() if isinstance(value, datetime) else str(value),
                   item.id]
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")

    def query_args(self, **overrides) -> dict:
        """The filters as query-string arguments (for links, pushed URLs and saved views)."""
        args = {}
        for key in FILTER_KEYS:
            value = getattr(self, key)
            if value is not None and value != "" and not (key == "sort" and value == "sla"):
                args[key] = str(value)
        args.update({k: v for k, v in overrides.items() if v is not None})
        return args

    def query_string(self) -> str:
        return urlencode(self.query_args())

    @property
    def active(self) -> bool:
        return any(getattr(self, k) not in (None, "") for k in FILTER_KEYS if k != "sort")


def decode_cursor(cursor: str, sort: str):
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, raw, last_id = json.loads(base64.urlsafe_b64decode(padded))
        if kind != sort or not isinstance(last_id, int):
            raise BadCursor("the cursor belongs to another sort order")
        if sort == "amount":
            return Decimal(raw), last_id
        return datetime.fromisoformat(raw), last_id
    except (binascii.Error, ValueError, TypeError, InvalidOperation, UnicodeDecodeError) as exc:
        raise BadCursor(str(exc)) from None
