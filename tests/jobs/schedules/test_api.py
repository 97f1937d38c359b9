"""jobs.schedules' functions across every kind: the contract, errors, properties."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import schedules
from jobs.schedules import ScheduleError, next_fire, parse, preview
from tests.jobs.schedules.conftest import BERLIN, LORD_HOWE, NEW_YORK, moments, utc


def wall(tz: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold)  # type: ignore[misc]


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


def test_it_refuses_an_expression_longer_than_a_schedule_holds() -> None:
    minutes = ",".join(str(m) for m in range(60))
    long = f"{minutes} {','.join(str(h) for h in range(24))} * * *"
    assert len(long) > 200
    with pytest.raises(schedules.ScheduleError, match="longer than 200"):
        schedules.parse("cron", long)


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
