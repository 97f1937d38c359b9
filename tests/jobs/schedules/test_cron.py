"""jobs.schedules.cron: cron and Quartz syntax, L/W/#, Quartz detection."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime, timedelta

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import schedules
from jobs.schedules import ScheduleError, describe, next_fire, parse
from tests.jobs.schedules.conftest import BERLIN, days, fires, moments, utc


def months_from(year: int, month: int, count: int) -> list[tuple[int, int]]:
    index = year * 12 + month - 1
    return [((index + i) // 12, (index + i) % 12 + 1) for i in range(count)]


def nth_weekday(year: int, month: int, weekday: int, n: int) -> int | None:
    """weekday: Monday=0 (calendar module); n = -1 for the last one."""
    found = [
        d
        for d in range(1, calendar.monthrange(year, month)[1] + 1)
        if calendar.weekday(year, month, d) == weekday
    ]
    if n == -1:
        return found[-1]
    return found[n - 1] if len(found) >= n else None


# ------------------------------------------------------------------ cron syntax


def test_it_fires_every_five_minutes() -> None:
    assert fires("*/5 * * * *", utc(2026, 1, 1, 10, 7, 30), 3) == [
        utc(2026, 1, 1, 10, 10),
        utc(2026, 1, 1, 10, 15),
        utc(2026, 1, 1, 10, 20),
    ]


def test_it_reads_six_fields_with_seconds_first() -> None:
    assert fires("*/10 * * * * *", utc(2026, 1, 1, 10, 0, 55), 3) == [
        utc(2026, 1, 1, 10, 1, 0),
        utc(2026, 1, 1, 10, 1, 10),
        utc(2026, 1, 1, 10, 1, 20),
    ]
    # Seconds first: minute 5 of every hour, not second 5.
    assert fires("0 5 * * * *", utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 0, 5),
        utc(2026, 1, 1, 1, 5),
    ]


def test_it_reads_quartz_hourly() -> None:
    assert fires("0 0 * * * ?", utc(2026, 1, 1, 10, 0), 2) == [
        utc(2026, 1, 1, 11),
        utc(2026, 1, 1, 12),
    ]
    assert parse("cron", "0 0 * * * ?").quartz  # type: ignore[attr-defined]


def test_it_numbers_quartz_weekdays_from_sunday() -> None:
    monday_noon = utc(2026, 1, 5, 12)  # 2026-01-05 is a Monday
    assert calendar.weekday(2026, 1, 5) == calendar.MONDAY
    after = utc(2026, 1, 1)
    assert next_fire("cron", "0 0 12 ? * 2", "UTC", after) == monday_noon  # Quartz
    assert next_fire("cron", "0 12 * * 1", "UTC", after) == monday_noon  # cron
    assert next_fire("cron", "0 0 12 * * 1", "UTC", after) == monday_noon  # 6-field
    assert next_fire("quartz", "0 0 12 * * 2", "UTC", after) == monday_noon
    assert next_fire("cron", "0 0 12 ? * MON", "UTC", after) == monday_noon
    # Quartz 1 and cron 0/7 are Sunday; Quartz 7 is Saturday.
    assert next_fire("cron", "0 0 12 ? * 1", "UTC", after) == utc(2026, 1, 4, 12)
    assert next_fire("cron", "0 12 * * 0", "UTC", after) == utc(2026, 1, 4, 12)
    assert next_fire("cron", "0 12 * * 7", "UTC", after) == utc(2026, 1, 4, 12)
    assert next_fire("cron", "0 0 12 ? * 7", "UTC", after) == utc(2026, 1, 3, 12)
    assert next_fire("cron", "0 0 12 ? * L", "UTC", after) == utc(2026, 1, 3, 12)


def test_it_translates_quartz_weekday_ranges_and_steps() -> None:
    after = utc(2026, 1, 3, 13)  # Saturday afternoon
    weekdays = [utc(2026, 1, d, 12) for d in (5, 6, 7, 8, 9)]
    assert fires("0 0 12 ? * 2-6", after) == weekdays
    assert fires("0 0 12 ? * MON-FRI", after) == weekdays
    assert fires("0 0 12 ? * mon-fri", after) == weekdays
    assert fires("0 12 * * 1-5", after) == weekdays
    assert fires("0 12 * * MON-FRI", after) == weekdays
    # Quartz 1/2 = SUN,TUE,THU,SAT.
    assert days(fires("0 0 12 ? * 1/2", after, 4)) == [
        (2026, 1, 4),
        (2026, 1, 6),
        (2026, 1, 8),
        (2026, 1, 10),
    ]
    # A range that wraps past Saturday: FRI-MON = FRI, SAT, SUN, MON.
    assert days(fires("0 0 12 ? * FRI-MON", after, 4)) == [
        (2026, 1, 4),
        (2026, 1, 5),
        (2026, 1, 9),
        (2026, 1, 10),
    ]
    assert days(fires("0 12 * * FRI-MON", after, 4)) == [
        (2026, 1, 4),
        (2026, 1, 5),
        (2026, 1, 9),
        (2026, 1, 10),
    ]


def test_it_reads_month_names() -> None:
    assert fires("0 0 1 JAN,jul *", utc(2026, 2, 1), 3) == [
        utc(2026, 7, 1),
        utc(2027, 1, 1),
        utc(2027, 7, 1),
    ]


def test_it_treats_an_equal_range_as_one_value() -> None:
    # croniter reads "5-5" as the whole cycle and fires every hour.
    assert fires("0 5-5 * * *", utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 5),
        utc(2026, 1, 2, 5),
    ]


def test_it_wraps_hour_ranges() -> None:
    assert [m.hour for m in fires("0 22-2 * * *", utc(2026, 1, 1, 12), 5)] == [
        22,
        23,
        0,
        1,
        2,
    ]
    assert [m.hour for m in fires("0 22-2/2 * * *", utc(2026, 1, 1, 12), 3)] == [
        22,
        0,
        2,
    ]


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@yearly", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@annually", [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@monthly", [utc(2026, 7, 1), utc(2026, 8, 1)]),
        ("@weekly", [utc(2026, 6, 21), utc(2026, 6, 28)]),  # Sundays
        ("@daily", [utc(2026, 6, 16), utc(2026, 6, 17)]),
        ("@midnight", [utc(2026, 6, 16), utc(2026, 6, 17)]),
        ("@hourly", [utc(2026, 6, 15, 11), utc(2026, 6, 15, 12)]),
        ("@HOURLY", [utc(2026, 6, 15, 11), utc(2026, 6, 15, 12)]),
    ],
)
def test_it_expands_macros(macro: str, expected: list[datetime]) -> None:
    assert fires(macro, utc(2026, 6, 15, 10, 30), 2) == expected


def test_it_reads_the_quartz_year_field() -> None:
    expr = "0 0 12 1 JAN ? 2027-2028"
    assert fires(expr, utc(2026, 6, 1), 5) == [utc(2027, 1, 1, 12), utc(2028, 1, 1, 12)]
    assert next_fire("cron", expr, "UTC", utc(2028, 1, 1, 12)) is None
    assert next_fire("cron", "0 0 0 1 1 ? 2020", "UTC", utc(2026, 1, 1)) is None


def test_it_fires_on_leap_days_only() -> None:
    assert fires("0 0 29 2 *", utc(2026, 1, 1), 3) == [
        utc(2028, 2, 29),
        utc(2032, 2, 29),
        utc(2036, 2, 29),
    ]
    assert fires("0 0 0 29 2 ? 2028,2032", utc(2026, 1, 1), 3) == [
        utc(2028, 2, 29),
        utc(2032, 2, 29),
    ]


def test_it_ors_day_of_month_and_day_of_week_in_standard_cron() -> None:
    # The 1st, or any Tuesday (POSIX / croniter).
    assert days(fires("0 12 1 * 2", utc(2026, 1, 1, 13), 4)) == [
        (2026, 1, 6),
        (2026, 1, 13),
        (2026, 1, 20),
        (2026, 1, 27),
    ]
    assert (2026, 2, 1) in days(fires("0 12 1 * 2", utc(2026, 1, 28), 2))


# --------------------------------------------- L, W, # (checked against calendar)


def test_it_fires_on_the_last_day_of_the_month() -> None:
    got = fires("0 0 12 L * ?", utc(2027, 12, 31, 13), 26)
    expected = [
        (y, m, calendar.monthrange(y, m)[1]) for y, m in months_from(2028, 1, 26)
    ]
    assert days(got) == expected
    assert (2028, 2, 29) in days(got)


def test_it_fires_on_the_last_weekday_of_the_month() -> None:
    got = fires("0 0 12 LW * ?", utc(2026, 1, 1), 36)
    expected = []
    for y, m in months_from(2026, 1, 36):
        last = calendar.monthrange(y, m)[1]
        while calendar.weekday(y, m, last) >= calendar.SATURDAY:
            last -= 1
        expected.append((y, m, last))
    assert days(got) == expected
    assert all(m.hour == 12 for m in got)
    # 2026-01-31 is a Saturday, 2026-05-31 a Sunday.
    assert (2026, 1, 30) in expected and (2026, 5, 29) in expected


def test_it_fires_days_before_the_end_of_the_month() -> None:
    got = fires("0 30 6 L-3 * ?", utc(2026, 1, 1), 30)
    expected = [
        (y, m, calendar.monthrange(y, m)[1] - 3) for y, m in months_from(2026, 1, 30)
    ]
    assert days(got) == expected
    assert all((m.hour, m.minute) == (6, 30) for m in got)
    assert days(fires("0 0 12 L-0 * ?", utc(2026, 1, 1), 1)) == [(2026, 1, 31)]
    # Only in the months asked for; L-30 exists only in 31-day months.
    assert days(fires("0 0 0 L-30 * ?", utc(2026, 1, 2), 3)) == [
        (2026, 3, 1),
        (2026, 5, 1),
        (2026, 7, 1),
    ]
    assert days(fires("0 0 0 L-1 FEB ?", utc(2026, 1, 1), 3)) == [
        (2026, 2, 27),
        (2027, 2, 27),
        (2028, 2, 28),
    ]


@pytest.mark.parametrize(
    ("expr", "weekday"),
    [
        ("0 0 12 ? * 6L", calendar.FRIDAY),  # Quartz 6 = FRI
        ("0 0 12 ? * FRIL", calendar.FRIDAY),
        ("0 0 12 ? * 1L", calendar.SUNDAY),
        ("0 12 * * 5L", calendar.FRIDAY),  # cron 5 = FRI
        ("0 12 * * 0L", calendar.SUNDAY),
    ],
)
def test_it_fires_on_the_last_weekday_n(expr: str, weekday: int) -> None:
    got = fires(expr, utc(2026, 1, 1), 24)
    expected = [
        (y, m, nth_weekday(y, m, weekday, -1)) for y, m in months_from(2026, 1, 24)
    ]
    assert days(got) == expected


@pytest.mark.parametrize(
    ("expr", "weekday", "n"),
    [
        ("0 0 12 ? * 6#3", calendar.FRIDAY, 3),  # Quartz
        ("0 0 12 ? * 2#1", calendar.MONDAY, 1),
        ("0 0 12 ? * MON#2", calendar.MONDAY, 2),
        ("0 0 12 * * 2#5", calendar.MONDAY, 5),  # '#' makes 6 fields Quartz
        ("0 12 * * 5#3", calendar.FRIDAY, 3),  # 5-field cron: 5 = FRI
        ("0 12 * * 1#5", calendar.MONDAY, 5),
    ],
)
def test_it_fires_on_the_nth_weekday(expr: str, weekday: int, n: int) -> None:
    got = fires(expr, utc(2026, 1, 1), 12)
    expected = []
    for y, m in months_from(2026, 1, 60):
        day = nth_weekday(y, m, weekday, n)
        if day is not None:  # months without a 5th Monday are skipped
            expected.append((y, m, day))
    assert days(got) == expected[:12]


def test_it_fires_on_the_nearest_weekday() -> None:
    got = fires("0 0 9 15W * ?", utc(2026, 1, 1), 24)
    expected = []
    for y, m in months_from(2026, 1, 24):
        wd = calendar.weekday(y, m, 15)
        shift = {calendar.SATURDAY: -1, calendar.SUNDAY: 1}.get(wd, 0)
        expected.append((y, m, 15 + shift))
    assert days(got) == expected
    # 1W never leaves the month: 2026-08-01 is a Saturday, so Monday the 3rd.
    assert calendar.weekday(2026, 8, 1) == calendar.SATURDAY
    assert days(fires("0 0 9 1W * ?", utc(2026, 7, 2), 1)) == [(2026, 8, 3)]


def test_it_accepts_l_in_a_day_of_month_list() -> None:
    assert days(fires("0 0 1,15,L * *", utc(2026, 2, 1, 1), 4)) == [
        (2026, 2, 15),
        (2026, 2, 28),
        (2026, 3, 1),
        (2026, 3, 15),
    ]


# ------------------------------------------------------------- auto-detection


@pytest.mark.parametrize(
    ("expr", "quartz"),
    [
        ("*/5 * * * *", False),
        ("@daily", False),
        ("0 0 12 * * 1", False),  # 6 fields, nothing Quartz-only: seconds-first cron
        ("0 0 12 * * WED", False),  # the W in WED is a name, not 'W'
        ("0 0 12 ? * 2", True),
        ("0 0 12 L * *", True),
        ("0 0 12 15W * *", True),
        ("0 0 12 * * 6L", True),
        ("0 0 12 * * 6#3", True),
        ("0 0 12 * * 2 2027", True),  # 7 fields
        ("0 12 L * *", False),  # 5 fields are always cron
    ],
)
def test_it_detects_quartz(expr: str, quartz: bool) -> None:
    parsed = parse("cron", expr)
    assert isinstance(parsed, schedules.CronSchedule)
    assert parsed.quartz is quartz
    assert parsed.kind == "cron"


def test_it_forces_quartz_when_asked() -> None:
    parsed = parse("quartz", "0 0 12 * * 2")
    assert isinstance(parsed, schedules.CronSchedule)
    assert parsed.quartz
    with pytest.raises(ScheduleError, match="Quartz needs 6 or 7 fields"):
        parse("quartz", "0 12 * * 1")
    with pytest.raises(ScheduleError, match="macro"):
        parse("quartz", "@daily")


# ----------------------------------------------------------------------- speed


def test_it_is_fast_enough_for_the_scheduler() -> None:
    parsed = parse("cron", "*/5 * * * *", BERLIN)
    after = utc(2026, 1, 1)
    started = time.perf_counter()
    for i in range(500):
        parsed.next_after(after + timedelta(seconds=97 * i))
    assert (time.perf_counter() - started) / 500 < 0.001


# ------------------------------------------------------------------ properties


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(
        ["*/5 * * * *", "0 9 * * 1-5", "0 0 29 2 *", "30 4 1,15 * *", "0 12 * * 5#3"]
    ),
    moments,
)
def test_it_agrees_with_croniter_in_utc(expr: str, after: datetime) -> None:
    expected = croniter(expr, after.replace(tzinfo=None)).get_next(datetime)
    assert next_fire("cron", expr, "UTC", after) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize("expr", ["0 0 */2 * 1-7", "0 0 */11 * 0-6", "0 0 */11 * */1"])
def test_it_ands_the_day_fields_when_one_starts_with_a_star(expr: str) -> None:
    """Vixie cron and croniter: a day field written "*..." makes the pair an AND
    (`*/2` + `1-7`: odd days only). The lists croniter was handed had lost the "*",
    so these fired every day."""
    after = utc(2026, 1, 1)
    expected = croniter(expr, after.replace(tzinfo=None))
    assert fires(expr, after, 6) == [
        expected.get_next(datetime).replace(tzinfo=UTC) for _ in range(6)
    ]
    assert " and " in describe("cron", expr, "UTC")


def test_it_ands_the_day_fields_when_the_weekday_starts_with_a_star() -> None:
    """Vixie cron's rule both ways round (croniter reads `*/2` weekdays here as
    every day): the first week's Sat 3, Sun 4 and Tue 6 of January 2026."""
    assert days(fires("0 0 1-7 * */2", utc(2026, 1, 1), 3)) == [
        (2026, 1, 3),
        (2026, 1, 4),
        (2026, 1, 6),
    ]
