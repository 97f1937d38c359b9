"""jobs.schedules.base: what every parsed schedule does (iter_fires)."""

from __future__ import annotations

from jobs.schedules import parse
from tests.jobs.schedules.conftest import utc


def test_it_iterates_fires_between_two_times() -> None:
    parsed = parse("cron", "0 * * * *")
    slots = list(parsed.iter_fires(utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 3)))
    assert slots == [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2), utc(2026, 1, 1, 3)]
    assert list(
        parse("interval", "R1/2026-01-01T00:00:00Z/P1D").iter_fires(utc(2025, 1, 1))
    ) == [utc(2026, 1, 1), utc(2026, 1, 2)]
