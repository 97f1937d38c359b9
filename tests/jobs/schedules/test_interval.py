"""jobs.schedules.interval: ISO 8601 repeating intervals."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from jobs import schedules
from jobs.schedules import next_fire, preview
from tests.jobs.schedules.conftest import BERLIN, NEW_YORK, days, local, utc


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
