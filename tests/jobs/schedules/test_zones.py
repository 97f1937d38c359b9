"""jobs.schedules.zones: wall times across DST gaps and repeats (cron schedules)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.schedules import next_fire, preview
from tests.jobs.schedules.conftest import (
    BERLIN,
    LORD_HOWE,
    NEW_YORK,
    fires,
    local,
    moments,
    utc,
)


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
