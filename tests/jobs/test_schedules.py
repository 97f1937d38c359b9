"""Schedule maths: no database, no clock. Dates are checked against the calendar
module, or against croniter where croniter is right, never against the code's own
helpers."""

from __future__ import annotations

import calendar
import itertools
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import schedules
from jobs.schedules import ScheduleError, next_fire, parse, preview

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def wall(tz: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold)  # type: ignore[misc]


def local(moments: list[datetime], tz: str) -> list[str]:
    return [m.astimezone(ZoneInfo(tz)).isoformat() for m in moments]


def fires(expr: str, after: datetime, n: int = 5, tz: str = "UTC") -> list[datetime]:
    return preview("cron", expr, tz, after, n)


def days(moments: list[datetime]) -> list[tuple[int, int, int]]:
    return [(m.year, m.month, m.day) for m in moments]


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


# ------------------------------------------------------------------------ DST


def test_it_fires_a_skipped_wall_time_at_the_end_of_the_gap_in_berlin() -> None:
    got = fires("30 2 * * *", utc(2026, 3, 27, 12), 3, BERLIN)
    assert local(got, BERLIN) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    # Several skipped wall times collapse into one fire.
    got = fires("*/20 2 * * *", utc(2026, 3, 28, 12), 4, BERLIN)
    assert local(got, BERLIN) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:00:00+02:00",
        "2026-03-30T02:20:00+02:00",
        "2026-03-30T02:40:00+02:00",
    ]


def test_it_fires_a_skipped_wall_time_at_the_end_of_the_gap_in_new_york() -> None:
    got = fires("30 2 * * *", utc(2026, 3, 7, 12), 2, NEW_YORK)
    assert got == [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]
    assert local(got, NEW_YORK)[0] == "2026-03-08T03:00:00-04:00"
    got = fires("0 0 2 ? * SUN", utc(2026, 3, 7, 12), 1, NEW_YORK)  # Quartz
    assert local(got, NEW_YORK) == ["2026-03-08T03:00:00-04:00"]


def test_it_fires_a_repeated_wall_time_once_in_berlin() -> None:
    got = fires("30 2 * * *", utc(2026, 10, 24, 12), 2, BERLIN)
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    got = fires("*/20 2 * * *", utc(2026, 10, 24, 12), 4, BERLIN)
    assert got == [
        utc(2026, 10, 25, 0, 0),
        utc(2026, 10, 25, 0, 20),
        utc(2026, 10, 25, 0, 40),
        utc(2026, 10, 26, 1, 0),
    ]


def test_it_fires_a_repeated_wall_time_once_in_new_york() -> None:
    got = fires("30 1 * * *", utc(2026, 10, 31, 12), 2, NEW_YORK)
    assert got == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    # Asked during the repeat itself: the first 01:30 is past, nothing more today.
    assert next_fire("cron", "30 1 * * *", NEW_YORK, utc(2026, 11, 1, 6, 10)) == utc(
        2026, 11, 2, 6, 30
    )


def test_it_fires_wildcard_hours_in_both_occurrences() -> None:
    got = fires("30 * * * *", utc(2026, 10, 24, 23, 0), 4, BERLIN)
    assert got == [
        utc(2026, 10, 24, 23, 30),  # 01:30 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 1, 30),  # 02:30 CET, the repeat
        utc(2026, 10, 25, 2, 30),  # 03:30 CET
    ]
    got = fires("0 15 * * * ?", utc(2026, 11, 1, 4), 4, NEW_YORK)
    assert local(got, NEW_YORK) == [
        "2026-11-01T00:15:00-04:00",
        "2026-11-01T01:15:00-04:00",
        "2026-11-01T01:15:00-05:00",
        "2026-11-01T02:15:00-05:00",
    ]
    got = fires("0 */1 * * *", utc(2026, 11, 1, 4, 30), 3, NEW_YORK)
    assert got == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)]


def test_it_finds_the_repeat_when_asked_between_occurrences() -> None:
    # 02:45 CEST: the repeat of 02:30 (CET) is next, before 03:30 CET.
    assert next_fire("cron", "30 * * * *", BERLIN, utc(2026, 10, 25, 0, 45)) == utc(
        2026, 10, 25, 1, 30
    )
    # 02:30 CET itself: next is 03:30 CET.
    assert next_fire("cron", "30 * * * *", BERLIN, utc(2026, 10, 25, 1, 30)) == utc(
        2026, 10, 25, 2, 30
    )
    # 02:15 CET, fixed hour: nothing until tomorrow.
    assert next_fire("cron", "30 2 * * *", BERLIN, utc(2026, 10, 25, 1, 15)) == utc(
        2026, 10, 26, 1, 30
    )


def test_it_skips_a_missing_hour_for_wildcard_hours() -> None:
    got = fires("30 * * * *", utc(2026, 3, 29, 0, 0), 3, BERLIN)
    assert local(got, BERLIN) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:30:00+02:00",
        "2026-03-29T04:30:00+02:00",
    ]


def test_it_handles_half_hour_dst_on_lord_howe() -> None:
    # DST ends 2026-04-05: 01:30-02:00 happens twice.
    got = fires("45 1 * * *", utc(2026, 4, 3, 12), 3, LORD_HOWE)
    assert local(got, LORD_HOWE) == [
        "2026-04-04T01:45:00+11:00",
        "2026-04-05T01:45:00+11:00",
        "2026-04-06T01:45:00+10:30",
    ]
    # DST starts 2026-10-04: 02:00-02:30 is skipped.
    got = fires("15 2 * * *", utc(2026, 10, 2, 12), 3, LORD_HOWE)
    assert local(got, LORD_HOWE) == [
        "2026-10-03T02:15:00+10:30",
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]
    # A wildcard hour fires in both passes of the repeated half hour.
    got = fires("*/20 * * * *", utc(2026, 4, 4, 14, 30), 5, LORD_HOWE)
    assert local(got, LORD_HOWE) == [
        "2026-04-05T01:40:00+11:00",
        "2026-04-05T01:40:00+10:30",
        "2026-04-05T02:00:00+10:30",
        "2026-04-05T02:20:00+10:30",
        "2026-04-05T02:40:00+10:30",
    ]


# ------------------------------------------------------------------- interval


def interval(expr: str, tz: str = "UTC", after: datetime | None = None, n: int = 10):  # type: ignore[no-untyped-def]
    return preview("interval", expr, tz, after or utc(2000, 1, 1), n)


@pytest.mark.parametrize(
    ("repeat", "runs"), [("R0", 1), ("R1", 2), ("R2", 3), ("R5", 6)]
)
def test_it_counts_repeats_after_the_first_run(repeat: str, runs: int) -> None:
    expr = f"{repeat}/2026-01-01T00:00:00Z/PT10M"
    got = interval(expr, n=100)
    assert got == [utc(2026, 1, 1) + timedelta(minutes=10 * i) for i in range(runs)]
    assert next_fire("interval", expr, "UTC", got[-1]) is None
    assert schedules.repetitions(expr) == runs - 1


@pytest.mark.parametrize("repeat", ["R", "R-1", "r-5"])
def test_it_repeats_forever(repeat: str) -> None:
    expr = f"{repeat}/2026-01-01T00:00:00Z/P1D"
    assert schedules.repetitions(expr) is None
    assert next_fire("interval", expr, "UTC", utc(2090, 6, 1, 12)) == utc(2090, 6, 2)


def test_it_steps_months_from_the_original_start() -> None:
    got = interval("R4/2026-01-31T10:00:00Z/P1M")
    assert got == [
        utc(2026, 1, 31, 10),
        utc(2026, 2, 28, 10),
        utc(2026, 3, 31, 10),
        utc(2026, 4, 30, 10),
        utc(2026, 5, 31, 10),
    ]
    assert days(interval("R2/2028-01-31T00:00:00Z/P1M")) == [
        (2028, 1, 31),
        (2028, 2, 29),
        (2028, 3, 31),
    ]
    assert days(interval("R4/2028-02-29T00:00:00Z/P1Y")) == [
        (2028, 2, 29),
        (2029, 2, 28),
        (2030, 2, 28),
        (2031, 2, 28),
        (2032, 2, 29),
    ]


def test_it_keeps_calendar_periods_on_local_wall_time() -> None:
    got = interval("R3/2026-03-27T09:00:00/P1D", BERLIN)
    assert local(got, BERLIN) == [
        "2026-03-27T09:00:00+01:00",
        "2026-03-28T09:00:00+01:00",
        "2026-03-29T09:00:00+02:00",
        "2026-03-30T09:00:00+02:00",
    ]
    got = interval("R2/2026-10-31T09:00:00-04:00/P1D", NEW_YORK)
    assert local(got, NEW_YORK) == [
        "2026-10-31T09:00:00-04:00",
        "2026-11-01T09:00:00-05:00",
        "2026-11-02T09:00:00-05:00",
    ]
    # Hours are elapsed time: PT24H drifts to 10:00 local across spring-forward.
    got = interval("R2/2026-03-28T09:00:00/PT24H", BERLIN)
    assert local(got, BERLIN)[1:] == [
        "2026-03-29T10:00:00+02:00",
        "2026-03-30T10:00:00+02:00",
    ]


def test_it_adds_calendar_then_elapsed_parts() -> None:
    assert interval("R2/2026-01-01T00:00:00Z/P1DT1M") == [
        utc(2026, 1, 1),
        utc(2026, 1, 2, 0, 1),
        utc(2026, 1, 3, 0, 2),
    ]
    assert interval("R1/2026-01-01T00:00:00Z/P1Y2M10DT2H30M15S") == [
        utc(2026, 1, 1),
        utc(2027, 3, 11, 2, 30, 15),
    ]
    assert interval("R2/2026-01-01T00:00:00Z/P2W") == [
        utc(2026, 1, 1),
        utc(2026, 1, 15),
        utc(2026, 1, 29),
    ]
    assert interval("R1/2026-01-01T00:00:00Z/PT10S") == [
        utc(2026, 1, 1),
        utc(2026, 1, 1, 0, 0, 10),
    ]


def test_it_jumps_straight_to_a_late_occurrence() -> None:
    expr = "R/2020-01-01T00:00:00Z/PT10S"
    after = utc(2026, 5, 17, 13, 45, 3)
    assert next_fire("interval", expr, "UTC", after) == utc(2026, 5, 17, 13, 45, 10)
    month_expr = "R/2000-01-31T12:00:00/P1M"
    assert next_fire("interval", month_expr, BERLIN, utc(2026, 2, 10)) == utc(
        2026, 2, 28, 11
    )


def test_it_reads_interval_starts() -> None:
    # No offset: the schedule's zone. With an offset: that exact instant.
    assert schedules.start("R/2026-01-01T09:00:00/P1D", BERLIN) == utc(2026, 1, 1, 8)
    assert schedules.start("R/2026-01-01T09:00:00+05:00/P1D", BERLIN) == utc(
        2026, 1, 1, 4
    )
    assert schedules.start("R/20260101T090000Z/P1D") == utc(2026, 1, 1, 9)
    assert schedules.start("R/2026-01-01/P1D", NEW_YORK) == utc(2026, 1, 1, 5)
    # Fractions of a second round up: never fire before the time asked for.
    assert schedules.start("R/2026-01-01T09:00:00.25Z/P1D") == utc(2026, 1, 1, 9, 0, 1)
    # A start in a DST gap fires at the gap's end, then at the asked wall time.
    got = interval("R1/2026-03-29T02:30:00/P1D", BERLIN)
    assert local(got, BERLIN) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_it_returns_the_start_first_and_never_fires_before_it() -> None:
    expr = "R3/2026-01-01T00:00:00Z/PT1H"
    assert next_fire("interval", expr, "UTC", utc(2025, 1, 1)) == utc(2026, 1, 1)
    assert next_fire("interval", expr, "UTC", utc(2026, 1, 1)) == utc(2026, 1, 1, 1)
    assert next_fire("interval", expr, "UTC", utc(2026, 1, 1, 0, 59, 59)) == utc(
        2026, 1, 1, 1
    )


# ----------------------------------------------------------------------- once


def test_it_fires_once() -> None:
    assert next_fire("once", "2026-05-01T10:00:00Z", "UTC", utc(2026, 1, 1)) == utc(
        2026, 5, 1, 10
    )
    assert next_fire("once", "2026-05-01T10:00:00Z", "UTC", utc(2026, 5, 1, 10)) is None
    assert preview("once", "2026-05-01T10:00:00", BERLIN, utc(2026, 1, 1)) == [
        utc(2026, 5, 1, 8)
    ]


def test_it_resolves_one_shot_wall_times_in_dst_changes() -> None:
    skipped = next_fire("once", "2026-03-08T02:30:00", NEW_YORK, utc(2026, 1, 1))
    assert skipped == utc(2026, 3, 8, 7)  # 03:00 EDT
    repeated = next_fire("once", "2026-11-01T01:30:00", NEW_YORK, utc(2026, 1, 1))
    assert repeated == utc(2026, 11, 1, 5, 30)  # the first 01:30
    exact = next_fire("once", "2026-11-01T01:30:00-05:00", NEW_YORK, utc(2026, 1, 1))
    assert exact == utc(2026, 11, 1, 6, 30)


# ------------------------------------------------------------------- contract


def test_it_returns_aware_utc_without_microseconds() -> None:
    after = wall(BERLIN, 2026, 1, 1, 10, 0, 0, 500_000)
    for kind, expr in [
        ("cron", "*/5 * * * * *"),
        ("interval", "R/2026-01-01T09:00:00.5Z/PT1S"),
        ("once", "2026-02-01T00:00:00.5+01:00"),
    ]:
        result = next_fire(kind, expr, BERLIN, after)
        assert result is not None
        assert result.tzinfo is UTC
        assert result.microsecond == 0
        assert result > after


def test_it_counts_a_fraction_of_a_second_as_after() -> None:
    assert next_fire(
        "cron", "* * * * * *", "UTC", utc(2026, 1, 1).replace(microsecond=1)
    ) == utc(2026, 1, 1, 0, 0, 1)


def test_it_refuses_naive_after() -> None:
    with pytest.raises(TypeError, match="timezone-aware"):
        next_fire("cron", "* * * * *", "UTC", datetime(2026, 1, 1))


def test_it_caches_parsing() -> None:
    assert parse("cron", "*/7 * * * *", BERLIN) is parse("cron", "*/7 * * * *", BERLIN)


def test_it_iterates_fires_between_two_times() -> None:
    parsed = parse("cron", "0 * * * *")
    slots = list(parsed.iter_fires(utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 3)))
    assert slots == [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2), utc(2026, 1, 1, 3)]
    assert list(
        parse("interval", "R1/2026-01-01T00:00:00Z/P1D").iter_fires(utc(2025, 1, 1))
    ) == [utc(2026, 1, 1), utc(2026, 1, 2)]


def test_it_describes_schedules() -> None:
    assert schedules.describe("cron", "0 0 * * * ?") == (
        "cron: at second 0 of minute 0 of every hour (Quartz, UTC)"
    )
    assert schedules.describe("cron", "0 9 * * MON-FRI", BERLIN) == (
        "cron: at 09:00 on MON-FRI (Europe/Berlin)"
    )
    assert schedules.describe("cron", "*/5 * * * *") == (
        "cron: every 5 minutes of every hour (UTC)"
    )
    assert "last FRI" in schedules.describe("cron", "0 0 12 ? * 6L")
    assert schedules.describe("interval", "R5/2026-01-01T00:00:00Z/P1DT2H") == (
        "interval: every 1 day, 2 hours from 2026-01-01T00:00:00+00:00, 6 run(s) (UTC)"
    )
    assert schedules.describe("once", "2026-01-01T10:00:00", BERLIN) == (
        "once: at 2026-01-01T10:00:00+01:00 (Europe/Berlin)"
    )


def test_it_is_fast_enough_for_the_scheduler() -> None:
    parsed = parse("cron", "*/5 * * * *", BERLIN)
    after = utc(2026, 1, 1)
    started = time.perf_counter()
    for i in range(500):
        parsed.next_after(after + timedelta(seconds=97 * i))
    assert (time.perf_counter() - started) / 500 < 0.001


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kind", "expr", "tz", "fragments"),
    [
        ("cron", "", "UTC", ["empty"]),
        ("cron", "   ", "UTC", ["empty"]),
        ("cron", "* * *", "UTC", ["5 fields", "got 3"]),
        ("cron", "* * * * * * * *", "UTC", ["got 8"]),
        ("cron", "0 0 12 ? * 8", "UTC", ["day-of-week field '8'", "1-7", "1=SUN"]),
        ("cron", "0 12 * * 8", "UTC", ["day-of-week field '8'", "0-7"]),
        ("cron", "61 * * * *", "UTC", ["minute field '61'", "0-59"]),
        ("cron", "0 24 * * *", "UTC", ["hour field '24'", "0-23"]),
        ("cron", "0 0 32 * *", "UTC", ["day-of-month field '32'", "1-31"]),
        ("cron", "0 0 0 1 13 ?", "UTC", ["month field '13'", "1-12"]),
        ("cron", "0 0 0 1 1 ? 1969", "UTC", ["year field '1969'", "1970-2099"]),
        ("cron", "0 0 0 1 1 ? 2030-2027", "UTC", ["year", "backwards"]),
        ("cron", "60 * * * * *", "UTC", ["second field '60'"]),
        ("cron", "0 0 * FOO *", "UTC", ["month field 'FOO'", "unknown name 'FOO'"]),
        ("cron", "0 0 * * FUN", "UTC", ["day-of-week field 'FUN'", "SUN-SAT"]),
        ("cron", "x * * * *", "UTC", ["minute field 'x'", "not a number"]),
        ("cron", "*/0 * * * *", "UTC", ["minute", "bad step '0'"]),
        ("cron", "*/x * * * *", "UTC", ["bad step 'x'"]),
        ("cron", "1,,2 * * * *", "UTC", ["empty list item"]),
        ("cron", "-5 * * * *", "UTC", ["bad range '-5'"]),
        ("cron", "0 0 12 ? * ?", "UTC", ["'?'", "only one"]),
        ("cron", "0 0 12 1 * 2 2027", "UTC", ["Quartz cannot combine", "'1'", "'2'"]),
        ("cron", "0 ? * * * *", "UTC", ["minute field '?'", "day-of-month or"]),
        ("cron", "? * * * *", "UTC", ["minute field '?'"]),
        ("cron", "0 0 12 L? * *", "UTC", ["day-of-month field 'L?'"]),
        ("cron", "0 0 12 ? * 2#6", "UTC", ["'#6'", "1-5"]),
        ("cron", "0 0 12 ? * 2#1,3", "UTC", ["cannot mix"]),
        ("cron", "0 0 12 15W,16 * ?", "UTC", ["stand alone"]),
        ("cron", "0 0 12 L-31 * ?", "UTC", ["0-30"]),
        ("cron", "0 12 L * 1", "UTC", ["'L'", "cannot be combined", "day-of-week"]),
        ("cron", "0 12 * * L", "UTC", ["day-of-week", "'L'"]),
        ("cron", "0 0 30 2 *", "UTC", ["'30' never occurs", "'2'"]),
        ("cron", "0 0 0 29 2 ? 2027", "UTC", ["never occurs", "2027"]),
        ("cron", "0 0 0 L-29 2 ?", "UTC", ["never occurs"]),
        ("cron", "@reboot", "UTC", ["macro"]),
        ("cron", "0 0 * * *", "Mars/Base", ["time zone 'Mars/Base'"]),
        ("cron", "0 0 * * *", "", ["time zone ''"]),
        ("cron", "0 0 * * *", "localtime", ["time zone 'localtime'"]),
        ("cron", "0 0 * * *", "Europe", ["time zone 'Europe'"]),
        (
            "interval",
            "R5/2026-01-01/PX",
            "UTC",
            ["ISO 8601 interval", "bad period 'PX'"],
        ),
        ("interval", "R5/2026-01-01T00:00:00Z/PT0S", "UTC", ["'PT0S' is zero"]),
        ("interval", "R/2026-01-01T00:00:00Z/P0D", "UTC", ["zero"]),
        ("interval", "R/2026-01-01T00:00:00Z/PT0.5S", "UTC", ["bad period", "whole"]),
        ("interval", "R/2026-01-01T00:00:00Z/P1DT", "UTC", ["bad period 'P1DT'"]),
        ("interval", "R/2026-01-01T00:00:00Z/10S", "UTC", ["bad period '10S'"]),
        ("interval", "R/2026-01-01T00:00:00Z/P", "UTC", ["bad period 'P'"]),
        ("interval", "Rx/2026-01-01T00:00:00Z/PT1S", "UTC", ["bad repeat 'Rx'"]),
        ("interval", "5/2026-01-01T00:00:00Z/PT1S", "UTC", ["bad repeat '5'"]),
        ("interval", "R/2026-01-01T00:00:00Z", "UTC", ["R[n]/<start>/<period>"]),
        ("interval", "R/garbage/PT1S", "UTC", ["bad date-time 'garbage'"]),
        ("interval", "R/2026-13-01T00:00:00/PT1S", "UTC", ["bad date-time"]),
        ("interval", "", "UTC", ["empty"]),
        ("interval", "R/2026/P1D", "UTC", ["bad date-time '2026'"]),
        ("interval", "R/2026-01-01T00:00:00Z/PT99999999999999H", "UTC", ["too long"]),
        ("interval", "R/2026-01-01T00:00:00Z/P9999Y", "UTC", ["too long"]),
        ("once", "00", "UTC", ["bad date-time '00'"]),
        ("once", "0001-01-01T00:00:00", BERLIN, ["bad date-time"]),
        ("once", "tomorrow", "UTC", ["one-shot time 'tomorrow'", "bad date-time"]),
        ("once", "2026-02-30T00:00:00", "UTC", ["bad date-time"]),
        ("once", "", "UTC", ["empty"]),
        ("weekly", "x", "UTC", ["unknown schedule kind 'weekly'"]),
    ],
)
def test_it_explains_bad_input(
    kind: str, expr: str, tz: str, fragments: list[str]
) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse(kind, expr, tz)
    assert type(caught.value) is ScheduleError
    for fragment in fragments:
        assert fragment in str(caught.value)


# ----------------------------------------------------------------- properties

EXPRESSIONS = [
    ("cron", "*/5 * * * *"),
    ("cron", "30 2 * * *"),
    ("cron", "30 * * * *"),
    ("cron", "*/20 1-3 * * *"),
    ("cron", "15 */2 * * *"),
    ("cron", "0 0 29 2 *"),
    ("cron", "0 9 * * MON-FRI"),
    ("cron", "*/10 * * * * *"),
    ("cron", "0 0 * * * ?"),
    ("cron", "0 30 2 ? * 1"),
    ("cron", "0 0 12 LW * ?"),
    ("cron", "0 0 2 L-3 * ?"),
    ("cron", "0 45 1 ? * 6L"),
    ("cron", "0 0 3 ? * 2#1"),
    ("cron", "0 */15 0-3 15W * ?"),
    ("cron", "@hourly"),
    ("interval", "R/2000-01-31T02:30:00/P1M"),
    ("interval", "R/2001-03-25T02:30:00/P1D"),
    ("interval", "R/2000-01-01T00:00:00Z/PT7H"),
    ("interval", "R50/2010-06-01T01:30:00/P1DT1H"),
    ("once", "2030-10-27T02:30:00"),
]
ZONES = ["UTC", BERLIN, NEW_YORK, LORD_HOWE, "Asia/Kolkata", "America/Santiago"]
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2045, 12, 31)
).map(lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXPRESSIONS), st.sampled_from(ZONES), moments)
def test_it_always_moves_forward(
    schedule: tuple[str, str], tz: str, after: datetime
) -> None:
    kind, expr = schedule
    got = preview(kind, expr, tz, after, 6)
    if kind == "cron" or expr.startswith("R/"):
        assert got, "an endless schedule ran dry"
    assert all(m.tzinfo is UTC and m.microsecond == 0 for m in got)
    assert all(m > after for m in got)
    assert all(a < b for a, b in itertools.pairwise(got))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(EXPRESSIONS),
    st.sampled_from(ZONES),
    moments,
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_it_skips_no_slot(
    schedule: tuple[str, str], tz: str, after: datetime, fraction: float
) -> None:
    """Asking from any moment before the next fire gives that same fire."""
    kind, expr = schedule
    first = next_fire(kind, expr, tz, after)
    if first is None:
        return
    between = min(after + (first - after) * fraction, first - timedelta(microseconds=1))
    assert next_fire(kind, expr, tz, between) == first


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


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([BERLIN, NEW_YORK, LORD_HOWE]),
    st.integers(0, 23),
    st.sampled_from([0, 15, 30, 45]),
    moments,
)
def test_it_fires_fixed_times_once_a_day_at_that_wall_time(
    tz: str, hour: int, minute: int, after: datetime
) -> None:
    got = preview("cron", f"{minute} {hour} * * *", tz, after, 8)
    walls = [m.astimezone(ZoneInfo(tz)) for m in got]
    assert len({w.date() for w in walls}) == len(walls)
    for w in walls:
        # Either the asked time, or the end of a DST gap that swallowed it.
        if (w.hour, w.minute) != (hour, minute):
            before = (w - timedelta(seconds=1)).utcoffset()
            assert before != w.utcoffset()


CRON_TEXT = st.lists(
    st.text(alphabet="0123456789*/,-?LWlw#MONFRIJANSUT", min_size=1, max_size=6),
    min_size=5,
    max_size=7,
).map(" ".join)
ISO_TEXT = st.text(alphabet="0123456789-:TZ+.PRYMWDHS/ tz", max_size=40)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.tuples(st.sampled_from(["cron", "quartz"]), CRON_TEXT),
        st.tuples(st.sampled_from(["interval", "once"]), ISO_TEXT),
    ),
    st.sampled_from(["UTC", BERLIN]),
)
def test_it_raises_only_schedule_errors_on_garbage(
    schedule: tuple[str, str], tz: str
) -> None:
    kind, text = schedule
    try:
        parsed = parse(kind, text, tz)
    except ScheduleError as exc:
        assert type(exc) is ScheduleError
        return
    parsed.next_after(utc(2026, 1, 1))
    assert parsed.describe().startswith(parsed.kind)


def test_it_refuses_an_expression_longer_than_a_schedule_holds() -> None:
    minutes = ",".join(str(m) for m in range(60))
    long = f"{minutes} {','.join(str(h) for h in range(24))} * * *"
    assert len(long) > 200
    with pytest.raises(schedules.ScheduleError, match="longer than 200"):
        schedules.parse("cron", long)
