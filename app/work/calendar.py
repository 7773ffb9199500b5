"""Business-time arithmetic for one tenant: its timezone, working days and hours, its country's
public holidays (from the `holidays` library) and its own closures. Correct across daylight
saving changes: windows are built in local time and measured in UTC."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from app.extensions import db

ZERO = timedelta(0)
# A calendar with no working time at all would loop forever; no real one is closed this long.
MAX_SEARCH_DAYS = 3 * 366


class NoWorkingTime(ValueError):
    pass


@dataclass(frozen=True)
class BusinessCalendar:
    timezone: str
    country: str | None
    working_days: frozenset[int] = frozenset({1, 2, 3, 4, 5})  # ISO weekdays
    start: time = time(9, 0)
    end: time = time(17, 0)
    closures: frozenset[date] = field(default_factory=frozenset)
    # Each day's working window, once worked out: a calendar is kept per tenant and its
    # settings (calendar_for), and a report asks the same few days thousands of times.
    _windows: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self):
        if not self.start < self.end:
            raise ValueError("working hours must start before they end")
        if not self.working_days:
            raise ValueError("a business calendar needs at least one working day")

    @property
    def tz(self) -> ZoneInfo:
        return _zone(self.timezone)

    def is_working_day(self, day: date) -> bool:
        return (day.isoweekday() in self.working_days and day not in self.closures
                and not (self.country and day in _holidays(self.country)))

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The day's working window in UTC, or None when it is not a working day."""
        try:
            return self._windows[day]
        except KeyError:
            pass
        window = None
        if self.is_working_day(day):
            tz = self.tz
            window = (datetime.combine(day, self.start, tz).astimezone(UTC),
                      datetime.combine(day, self.end, tz).astimezone(UTC))
        self._windows[day] = window
        return window

    def _days_from(self, moment: datetime):
        day = moment.astimezone(self.tz).date()
        for offset in range(MAX_SEARCH_DAYS):
            yield day + timedelta(days=offset)
        raise NoWorkingTime("no working time within three years")

    def _spans(self, start: datetime):
        """The working time from `start` on, as (from, to) spans in order."""
        cursor = start.astimezone(UTC)
        for day in self._days_from(cursor):
            window = self.window(day)
            if window is None:
                continue
            opens, closes = window
            if cursor < closes:
                yield max(cursor, opens), closes

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The moment `duration` of working time after `start`. A zero duration from outside
        working hours gives the next opening."""
        if duration < ZERO:
            raise ValueError("use a positive duration")
        remaining = duration
        for begins, ends in self._spans(start):
            if remaining <= ends - begins:
                return begins + remaining
            remaining -= ends - begins
        raise NoWorkingTime("unreachable")  # pragma: no cover

    def hour_marks(self, start: datetime, hours: int) -> list[datetime]:
        """add(start, 1 h), add(start, 2 h), ... add(start, `hours` h), in one walk over the
        working windows."""
        marks: list[datetime] = []
        step = timedelta(hours=1)
        remaining = step
        for cursor, ends in self._spans(start):
            while remaining <= ends - cursor:
                cursor += remaining
                marks.append(cursor)
                if len(marks) == hours:
                    return marks
                remaining = step
            remaining -= ends - cursor
        raise NoWorkingTime("unreachable")  # pragma: no cover

    def between(self, start: datetime, end: datetime) -> timedelta:
        """Working time from `start` to `end` (negative when `end` is earlier)."""
        if end < start:
            return -self.between(end, start)
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        total = ZERO
        day = start.astimezone(self.tz).date()
        last = end.astimezone(self.tz).date()
        while day <= last:
            window = self.window(day)
            if window:
                opens, closes = window
                overlap = min(closes, end) - max(opens, start)
                if overlap > ZERO:
                    total += overlap
            day += timedelta(days=1)
        return total

    def is_open(self, moment: datetime) -> bool:
        window = self.window(moment.astimezone(self.tz).date())
        return bool(window) and window[0] <= moment.astimezone(UTC) < window[1]


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=16)
def _holidays(country: str) -> holidays.HolidayBase:
    # The library fills in further years on demand as dates are looked up.
    return holidays.country_holidays(country)


def calendar_for(tenant) -> BusinessCalendar:
    """The business calendar of a tenant, with its own closures (cached by its settings and
    its calendar revision, a new random tag at every change of closures, so each process
    reloads the closures only after they changed)."""
    return _calendar(tenant.id, getattr(tenant, "calendar_revision", None), tenant.timezone,
                     tenant.calendar_country, tuple(tenant.working_days or ()),
                     tenant.work_start or "09:00", tenant.work_end or "17:00")


def closure_days(tenant_id: int | None, revision: str | None = "") -> frozenset[date]:
    """Every day of the tenant's own closures (none before its closures were first changed)."""
    if tenant_id is None or revision is None:
        return frozenset()
    from sqlalchemy import select

    # Imported here: closures are the admin package's, which builds on work.
    from app.admin.models import TenantClosure

    closures = db.session.scalars(
        select(TenantClosure).where(TenantClosure.tenant_id == tenant_id)).all()
    return frozenset(day for closure in closures for day in closure.days())


@lru_cache(maxsize=256)
def _calendar(tenant_id: int | None, revision: str | None, timezone: str, country: str | None,
              days: tuple, start: str, end: str) -> BusinessCalendar:
    return BusinessCalendar(timezone=timezone, country=country,
                            working_days=frozenset(days or (1, 2, 3, 4, 5)),
                            start=time.fromisoformat(start), end=time.fromisoformat(end),
                            closures=closure_days(tenant_id, revision))
