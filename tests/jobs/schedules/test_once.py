"""jobs.schedules.once: one-shot times."""

from __future__ import annotations

from jobs.schedules import next_fire, preview
from tests.jobs.schedules.conftest import BERLIN, NEW_YORK, utc


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
