"""Queue filters and sort orders, read from the query string (so a filtered queue is a URL
that can be bookmarked and shared) and turned into SQL conditions and keyset cursors."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from zoneinfo import ZoneInfo

from sqlalchemy import false, literal, or_, select, tuple_

from app import params
from app.extensions import db
from app.models import SlaState, Tenant, WorkItem
from app.types import utcnow
from app.work.kinds import SUBTYPES
from app.work.states import ALL_STATES

SORTS = {
    # name: (label, column, descending)
    "sla": ("SLA due", WorkItem.sla_due_at, False),
    "amount": ("Amount", WorkItem.amount, True),
    "age": ("Oldest first", WorkItem.created_at, False),
}
AGES = {"1": "older than 1 day", "3": "older than 3 days", "7": "older than a week",
        "30": "older than 30 days"}
SLA_STATES = {SlaState.ON_TRACK.value: "On track", SlaState.AT_RISK.value: "At risk",
              SlaState.BREACHED.value: "Breached", SlaState.PAUSED.value: "Paused",
              SlaState.MET.value: "Met"}
# Open items (the default), decided ones, or both: the dashboard drills into history too.
STATUSES = {"open": "Open", "closed": "Decided", "all": "Open and decided"}
# Filters the dashboard's drill-downs set; dates are each item's tenant-local days.
DRILL_KEYS = ("status", "state", "created_from", "created_to", "resolved_from", "resolved_to",
              "aged", "decided_by")
MAX_AGED_DAYS = 36_500
FILTER_KEYS = ("kind", "subtype", "tenant", "region", "partner_type", "product_line",
               "min_amount", "max_amount", "age", "sla", "assignee", "team_queue", "q", "sort",
               *DRILL_KEYS)


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
    team_queue: str | None = None  # a named team queue the policy routed items to
    q: str | None = None
    sort: str = "sla"
    status: str | None = None  # None = open
    state: str | None = None
    created_from: date | None = None
    created_to: date | None = None
    resolved_from: date | None = None
    resolved_to: date | None = None
    aged: str | None = None  # "N-M" or "N-": days since arrival, in the item's tenant
    decided_by: str | None = None  # "policy", "none" (no person) or a user id
    tenant_ids: frozenset[int] = frozenset()
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, args, tenant_ids: set[int]) -> QueueFilters:
        """Read filters; a value that makes no sense is dropped with a message, never an error
        page, and a tenant outside the viewer's own is refused without saying whether it exists."""
        f = cls()

        def text(name, limit=100):
            raw = (args.get(name) or "").strip()[:limit] or None
            return f._read(raw, params.storable, name)
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
        tenant = f._read(text("tenant"), params.record_id, "tenant")
        if tenant is not None:
            if tenant in tenant_ids:
                f.tenant = tenant
            else:
                f.errors["tenant"] = "not one of your tenants"
        f.region, f.partner_type, f.product_line = (text("region"), text("partner_type"),
                                                    text("product_line"))
        for name in ("min_amount", "max_amount"):
            setattr(f, name, f._read(text(name, 30), params.money, name))
        f.age = text("age")
        if f.age and f.age not in AGES:
            f.errors["age"] = "unknown age"
            f.age = None
        f.sla = text("sla")
        if f.sla and f.sla not in SLA_STATES:
            f.errors["sla"] = "unknown SLA state"
            f.sla = None
        f.assignee = text("assignee")
        if f.assignee not in (None, "me", "none"):
            person = f._read(f.assignee, params.record_id, "assignee")
            f.assignee = None if person is None else str(person)
        f.team_queue = text("team_queue", 64)
        f.q = text("q")
        f.sort = text("sort") or "sla"
        if f.sort not in SORTS:
            f.errors["sort"] = "unknown sort"
            f.sort = "sla"
        f.tenant_ids = frozenset(tenant_ids)
        f._parse_drill(text)
        return f

    def _read(self, raw: str | None, read, name: str):
        return params.gathered(self.errors, read, raw, name)

    def _parse_drill(self, text) -> None:
        self.status = text("status")
        if self.status == "open":
            self.status = None
        if self.status and self.status not in STATUSES:
            self.errors["status"] = "unknown status"
            self.status = None
        self.state = text("state")
        if self.state and self.state not in ALL_STATES:
            self.errors["state"] = "unknown state"
            self.state = None
        for name in ("created_from", "created_to", "resolved_from", "resolved_to"):
            setattr(self, name, self._read(text(name, 30), params.day, name))
        self.aged = text("aged", 12)
        if self.aged:
            low, _, high = self.aged.partition("-")
            try:
                first = params.whole_number(low, "aged", maximum=MAX_AGED_DAYS)
                if high and params.whole_number(high, "aged", maximum=MAX_AGED_DAYS) < first:
                    raise params.BadParam("aged", "must not end before it starts")
            except params.BadParam:
                self.errors["aged"] = "must be days like 2-3 or 31-"
                self.aged = None
        self.decided_by = text("decided_by", 30)
        if self.decided_by not in (None, "policy", "none"):
            person = self._read(self.decided_by, params.record_id, "decided_by")
            self.decided_by = None if person is None else str(person)

    def _tenant_zones(self) -> dict[int, str]:
        ids = {self.tenant} if self.tenant else set(self.tenant_ids)
        if not ids:
            return {}
        return dict(db.session.execute(select(Tenant.id, Tenant.timezone)
                                       .where(Tenant.id.in_(ids))).all())

    def _local_days(self, column, first: date | None, last: date | None, zones) -> list:
        """column within [first, last], each a tenant-local day, for each of the tenants."""
        if first is None and last is None:
            return []
        parts = []
        for tenant_id, zone in zones.items():
            tz = ZoneInfo(zone)
            part = WorkItem.tenant_id == tenant_id
            if first is not None:
                part = part & (column >= datetime.combine(first, time(0), tz))
            if last is not None:
                part = part & (column < datetime.combine(last + timedelta(days=1), time(0), tz))
            parts.append(part)
        return [or_(*parts) if parts else false()]

    def drill_conditions(self) -> list:
        out = []
        if self.state:
            out.append(WorkItem.state == self.state)
        needs_zones = (self.created_from or self.created_to or self.resolved_from
                       or self.resolved_to or self.aged)
        zones = self._tenant_zones() if needs_zones else {}
        out += self._local_days(WorkItem.created_at, self.created_from, self.created_to, zones)
        out += self._local_days(WorkItem.resolved_at, self.resolved_from, self.resolved_to, zones)
        if self.aged:
            low, _, high = self.aged.partition("-")
            parts = []
            for tenant_id, zone in zones.items():
                today = utcnow().astimezone(ZoneInfo(zone)).date()
                first = today - timedelta(days=int(high)) if high else None
                parts += self._local_days(WorkItem.created_at, first,
                                          today - timedelta(days=int(low)), {tenant_id: zone})
            out.append(or_(*parts) if parts else false())
        if self.decided_by == "policy":
            out.append(WorkItem.decided_by_type == "policy")
        elif self.decided_by == "none":
            out.append(or_(WorkItem.decided_by_type == "policy", WorkItem.last_actor_id.is_(None)))
        elif self.decided_by:
            out.append((WorkItem.last_actor_id == int(self.decided_by))
                       & or_(WorkItem.decided_by_type.is_(None),
                             WorkItem.decided_by_type != "policy"))
        return out

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
        if self.team_queue:
            out.append(WorkItem.team_queue == self.team_queue)
        if self.q:
            pattern = "%" + self.q.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
            out.append(or_(WorkItem.title.ilike(pattern, escape="\\"),
                           WorkItem.counterparty.ilike(pattern, escape="\\"),
                           WorkItem.external_ref.ilike(pattern, escape="\\")))
        return out + self.drill_conditions()

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
        return params.encode_cursor(
            [self.sort, value.isoformat() if isinstance(value, datetime) else str(value), item.id])

    def query_args(self, **overrides) -> dict:
        """The filters as query-string arguments (for links, pushed URLs and saved views)."""
        args = {}
        for key in FILTER_KEYS:
            value = getattr(self, key)
            if value is not None and value != "" and not (key == "sort" and value == "sla"):
                args[key] = value.isoformat() if isinstance(value, date) else str(value)
        args.update({k: v for k, v in overrides.items() if v is not None})
        return args

    def query_string(self) -> str:
        return urlencode(self.query_args())

    @property
    def drill(self) -> dict:
        """The drill-down filters set (shown above the results, kept by the filter form)."""
        return {k: v for k, v in self.query_args().items() if k in DRILL_KEYS}

    def args_without_drill(self) -> dict:
        return {k: v for k, v in self.query_args().items() if k not in DRILL_KEYS}

    @property
    def active(self) -> bool:
        return any(getattr(self, k) not in (None, "") for k in FILTER_KEYS if k != "sort")


def decode_cursor(cursor: str, sort: str):
    """The (sort value, id) of the last row a page showed: a cursor this code made for the
    same sort order, or BadCursor."""
    try:
        parts = params.decode_cursor(cursor, sort)
        if len(parts) != 2 or not isinstance(parts[0], str):
            raise params.BadParam("cursor", "is not one this page gave")
        raw, last_id = parts
        value = params.money(raw, "cursor") if sort == "amount" else params.instant(raw, "cursor")
        return value, params.cursor_id(last_id)
    except params.BadParam as bad:
        raise BadCursor(bad.reason) from None
