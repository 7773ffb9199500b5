"""Business-time arithmetic, by property: for the three demo tenants' calendars, across
weekends, public holidays and daylight-saving changes."""
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.work.calendar import BusinessCalendar

CALENDARS = {
    "northwind": BusinessCalendar("America/New_York", "US"),
    "contoso": BusinessCalendar("Europe/Berlin", "DE"),
    "fabrikam": BusinessCalendar("Europe/London", "GB", start=time(8, 30), end=time(17, 30)),
    # A reseller with its own closures: a year-end shutdown each year and single days, some
    # next to public holidays and weekends, one across the spring DST change.
    "reseller": BusinessCalendar(
        "Europe/Berlin", "DE", working_days=frozenset({1, 2, 3, 4, 5, 6}),
        closures=frozenset(
            {date(year, 12, 24) + timedelta(days=n) for year in (2025, 2026, 2027)
             for n in range(10)}
            | {date(2026, 3, 27), date(2026, 3, 30), date(2026, 5, 15), date(2027, 7, 5)})),
}
moments = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31),
                       timezones=st.just(UTC))
durations = st.integers(min_value=0, max_value=60 * 8 * 15).map(lambda m: timedelta(minutes=m))
calendars = st.sampled_from(sorted(CALENDARS))
common = settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])


def _inside_or_closing(cal, moment):
    window = cal.window(moment.astimezone(cal.tz).date())
    return window is not None and window[0] <= moment <= window[1]


@common
@given(calendars, moments, durations)
def test_a_due_time_never_falls_outside_working_time(name, start, duration):
    cal = CALENDARS[name]
    due = cal.add(start, duration)
    assert due >= start
    assert _inside_or_closing(cal, due)


@common
@given(calendars, moments, durations)
def test_adding_then_measuring_gives_back_the_same_amount(name, start, duration):
    cal = CALENDARS[name]
    assert cal.between(start, cal.add(start, duration)) == duration


@common
@given(calendars, moments, durations, durations)
def test_a_pause_adds_exactly_its_length(name, start, first, pause):
    """Waiting on someone outside stops the clock: the due time moves by the paused
    business time, no more and no less."""
    cal = CALENDARS[name]
    target = timedelta(hours=16)
    paused_at = cal.add(start, first)
    resumed_at = cal.add(paused_at, pause)
    due_without_pause = cal.add(start, target)
    due_with_pause = cal.add(start, target + cal.between(paused_at, resumed_at))
    assert cal.between(due_without_pause, due_with_pause) == cal.between(paused_at, resumed_at)


@common
@given(calendars, moments, moments)
def test_business_time_between_is_antisymmetric_and_additive(name, a, b):
    cal = CALENDARS[name]
    assert cal.between(a, b) == -cal.between(b, a)
    middle = min(a, b) + (max(a, b) - min(a, b)) / 2
    assert cal.between(min(a, b), max(a, b)) == (cal.between(min(a, b), middle)
                                                  + cal.between(middle, max(a, b)))


@pytest.mark.parametrize("name, day", [
    ("northwind", date(2026, 7, 3)),   # Independence Day observed (a Friday)
    ("northwind", date(2026, 11, 26)),  # Thanksgiving
    ("contoso", date(2026, 10, 3)),    # German Unity Day (a Saturday anyway)
    ("contoso", date(2026, 12, 25)),
    ("fabrikam", date(2026, 12, 28)),  # Boxing Day substitute
])
def test_public_holidays_are_not_working_days(name, day):
    assert not CALENDARS[name].is_working_day(day)


@pytest.mark.parametrize("name, spring, autumn", [
    ("northwind", date(2026, 3, 8), date(2026, 11, 1)),
    ("contoso", date(2026, 3, 29), date(2026, 10, 25)),
    ("fabrikam", date(2026, 3, 29), date(2026, 10, 25)),
])
def test_working_days_keep_their_length_across_daylight_saving_changes(name, spring, autumn):
    cal = CALENDARS[name]
    hours = (datetime.combine(date.min, cal.end) - datetime.combine(date.min, cal.start))
    for change in (spring, autumn):
        # The Monday after each change: a full working day, in local hours.
        monday = change + timedelta(days=(7 - change.weekday()) % 7 or 7)
        opens, closes = cal.window(monday)
        assert closes - opens == hours
        assert opens.astimezone(cal.tz).time() == cal.start
        # A day's work from Friday before the change ends at the same local hour on Monday.
        friday = change - timedelta(days=(change.weekday() - 4) % 7)
        start = datetime.combine(friday, time(13, 0), cal.tz)
        due = cal.add(start, hours)
        assert due.astimezone(cal.tz).time() == time(13, 0)
        assert due.astimezone(cal.tz).date() > change


def test_a_weekend_is_skipped_and_an_evening_start_waits_for_the_morning():
    cal = CALENDARS["contoso"]
    friday_evening = datetime(2026, 11, 27, 20, 0, tzinfo=cal.tz)
    due = cal.add(friday_evening, timedelta(hours=2))
    assert due == datetime(2026, 11, 30, 11, 0, tzinfo=cal.tz)
    assert cal.add(friday_evening, timedelta(0)) == datetime(2026, 11, 30, 9, 0, tzinfo=cal.tz)


def test_a_calendar_without_working_hours_is_refused():
    with pytest.raises(ValueError):
        BusinessCalendar("UTC", None, start=time(17), end=time(9))


def test_sla_due_and_state_follow_business_time_and_priority():
    from app.models import Tenant
    from app.work.sla_clock import sla_due_at, sla_state_at

    tenant = Tenant(slug="contoso", name="Contoso", currency="EUR", timezone="Europe/Berlin",
                    calendar_country="DE", working_days=[1, 2, 3, 4, 5], work_start="09:00",
                    work_end="17:00")
    tz = CALENDARS["contoso"].tz
    friday_3pm = datetime(2026, 11, 27, 15, 0, tzinfo=tz)
    due = sla_due_at(tenant, "approval", "normal", friday_3pm)  # 8 business hours
    assert due == datetime(2026, 11, 30, 15, 0, tzinfo=tz)
    assert sla_due_at(tenant, "approval", "urgent", friday_3pm) == datetime(
        2026, 11, 27, 17, 0, tzinfo=tz)
    assert sla_state_at(tenant, "approval", "normal", due, friday_3pm) == "on_track"
    # Monday 1 pm: 2 of 8 hours left, the at-risk line (25% left) is crossed.
    assert sla_state_at(tenant, "approval", "normal", due,
                        datetime(2026, 11, 30, 13, 0, tzinfo=tz)) == "at_risk"
    assert sla_state_at(tenant, "approval", "normal", due,
                        datetime(2026, 11, 30, 15, 0, tzinfo=tz)) == "breached"


@common
@given(calendars, moments, durations)
def test_a_due_time_never_falls_on_a_closure(name, start, duration):
    cal = CALENDARS[name]
    due = cal.add(start, duration)
    local = due.astimezone(cal.tz)
    # A due time at the very close of a day belongs to that day.
    assert local.date() not in cal.closures


@common
@given(moments, durations)
def test_closures_only_ever_add_time_to_a_due_time(start, duration):
    """The same calendar without its closures is never later: a closure takes working time
    away and gives none."""
    with_closures = CALENDARS["reseller"]
    without = BusinessCalendar(with_closures.timezone, with_closures.country,
                               working_days=with_closures.working_days)
    assert with_closures.add(start, duration) >= without.add(start, duration)
    later = start + timedelta(days=20)
    assert with_closures.between(start, later) <= without.between(start, later)


def test_a_closure_is_skipped_like_a_holiday():
    plain = BusinessCalendar("Europe/Berlin", "DE")
    closed = BusinessCalendar("Europe/Berlin", "DE", closures=frozenset({date(2026, 12, 1)}))
    monday_4pm = datetime(2026, 11, 30, 16, 0, tzinfo=plain.tz)
    assert plain.add(monday_4pm, timedelta(hours=2)) == datetime(2026, 12, 1, 10, 0,
                                                                 tzinfo=plain.tz)
    assert closed.add(monday_4pm, timedelta(hours=2)) == datetime(2026, 12, 2, 10, 0,
                                                                  tzinfo=plain.tz)
    assert not closed.is_working_day(date(2026, 12, 1))
    assert closed.between(monday_4pm, datetime(2026, 12, 2, 10, 0, tzinfo=plain.tz)) == (
        timedelta(hours=2))
    assert not closed.is_open(datetime(2026, 12, 1, 11, 0, tzinfo=plain.tz))


def test_the_reseller_works_saturdays_but_not_its_closures():
    cal = CALENDARS["reseller"]
    assert cal.is_working_day(date(2026, 11, 28))  # a Saturday
    for day in (date(2026, 12, 24), date(2027, 1, 1), date(2027, 1, 2), date(2026, 3, 27)):
        assert not cal.is_working_day(day)
    assert cal.is_working_day(date(2027, 1, 4))


@common
@given(calendars, moments)
def test_hourly_marks_are_the_same_as_adding_each_hour(name, start):
    cal = CALENDARS[name]
    assert cal.hour_marks(start, 24) == [cal.add(start, timedelta(hours=h))
                                         for h in range(1, 25)]
