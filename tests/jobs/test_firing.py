from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobs import firing, schedules

EVERY_MINUTE = schedules.parse("cron", "* * * * *", "UTC")
EVERY_SECOND = schedules.parse("cron", "* * * * * *", "UTC")
HOURLY = schedules.parse("cron", "0 * * * *", "UTC")
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
EPS = timedelta(seconds=30)


def plan(parsed: schedules.Parsed = EVERY_MINUTE, **kwargs: object) -> firing.Plan:
    kwargs.setdefault("epsilon", EPS)
    kwargs.setdefault("policy", firing.RUN_ONCE)
    return firing.plan(parsed, **kwargs)  # type: ignore[arg-type]


def test_it_runs_a_slot_that_is_on_time() -> None:
    result = plan(first=T0, now=T0 + timedelta(seconds=1))
    assert result.run == [T0]
    assert result.skipped == []
    assert result.next_run_at == T0 + MIN


def test_it_runs_a_slot_exactly_at_epsilon() -> None:
    result = plan(first=T0, now=T0 + EPS, policy=firing.SKIP)
    assert result.run == [T0]


def test_it_skips_a_slot_older_than_epsilon_under_skip() -> None:
    result = plan(first=T0, now=T0 + EPS + timedelta(seconds=1), policy=firing.SKIP)
    assert result.run == []
    assert len(result.skipped) == 1
    assert result.skipped[0].slot == T0
    assert "later than epsilon (30s)" in result.skipped[0].reason
    assert result.next_run_at == T0 + MIN


def test_it_runs_only_the_latest_missed_slot_under_run_once() -> None:
    now = T0 + 10 * MIN + timedelta(seconds=45)  # slots 12:00..12:10, all late
    result = plan(first=T0, now=now)
    assert result.run == [T0 + 10 * MIN]
    assert len(result.skipped) == 1
    skip = result.skipped[0]
    assert skip.slot == T0
    assert "10 slots" in skip.reason and "run_once" in skip.reason
    assert result.next_run_at == T0 + 11 * MIN


def test_it_prefers_an_on_time_slot_over_late_ones_under_run_once() -> None:
    now = T0 + 5 * MIN + timedelta(seconds=10)
    result = plan(first=T0, now=now)
    assert result.run == [T0 + 5 * MIN]
    assert result.skipped[0].slot == T0
    assert "5 slots" in result.skipped[0].reason


def test_it_runs_every_missed_slot_within_the_window_under_run_all() -> None:
    now = T0 + 5 * MIN + timedelta(seconds=45)
    result = plan(first=T0, now=now, policy=firing.RUN_ALL)
    assert result.run == [T0 + k * MIN for k in range(6)]
    assert result.skipped == []


def test_it_bounds_run_all_by_the_catchup_limit() -> None:
    now = T0 + 5 * MIN + timedelta(seconds=45)
    result = plan(first=T0, now=now, policy=firing.RUN_ALL, catchup_max=2)
    assert result.run == [T0 + 4 * MIN, T0 + 5 * MIN]
    assert result.skipped[0].slot == T0
    assert "4 slots" in result.skipped[0].reason


def test_it_bounds_run_all_by_the_catchup_window() -> None:
    now = T0 + 5 * MIN + timedelta(seconds=45)
    result = plan(
        first=T0, now=now, policy=firing.RUN_ALL, catchup_window=timedelta(minutes=3)
    )
    assert result.run == [T0 + 3 * MIN, T0 + 4 * MIN, T0 + 5 * MIN]


def test_it_stops_at_end_at() -> None:
    result = plan(
        first=T0, now=T0 + timedelta(seconds=5), end_at=T0 + 30 * timedelta(seconds=1)
    )
    assert result.run == [T0]
    assert result.next_run_at is None


def test_it_stops_when_repetitions_run_out() -> None:
    result = plan(first=T0, now=T0 + timedelta(seconds=1), repetitions_left=1)
    assert result.run == [T0]
    assert result.next_run_at is None


def test_it_runs_nothing_with_no_repetitions_left() -> None:
    result = plan(first=T0, now=T0 + timedelta(seconds=1), repetitions_left=0)
    assert result.run == []
    assert result.next_run_at is None


def test_it_summarises_a_huge_backlog_without_scanning_it_all() -> None:
    now = T0 + timedelta(days=2, seconds=0.5)
    result = plan(EVERY_SECOND, first=T0, now=now, policy=firing.SKIP, scan_limit=1000)
    # Only the slots within epsilon run; everything before is named, once.
    assert result.run[0] >= now - EPS
    assert result.run[-1] == T0 + timedelta(days=2)
    assert result.skipped[0].slot == T0
    assert "more than 1000 slots" in result.skipped[0].reason
    assert result.next_run_at == T0 + timedelta(days=2, seconds=1)


def test_it_finds_the_latest_slot_of_a_huge_backlog_under_run_once() -> None:
    first = T0
    now = T0 + timedelta(days=500, minutes=20)  # 12,000 hourly slots missed
    result = plan(HOURLY, first=first, now=now, scan_limit=1000)
    assert result.run == [T0 + timedelta(days=500)]
    assert result.skipped[0].slot == T0
    assert result.next_run_at == T0 + timedelta(days=500, hours=1)


def test_it_names_why_slots_were_missed_with_a_late_reason() -> None:
    result = plan(
        first=T0,
        now=T0 + 3 * MIN,
        policy=firing.SKIP,
        late_reason="schedule was disabled",
    )
    assert result.skipped[0].reason.startswith("schedule was disabled:")


def test_it_records_the_slots_the_last_repetitions_leave_out_under_run_all() -> None:
    now = T0 + 4 * MIN + timedelta(seconds=50)  # 12:00..12:04 all missed
    result = plan(first=T0, now=now, policy=firing.RUN_ALL, repetitions_left=2)
    assert result.run == [T0 + 3 * MIN, T0 + 4 * MIN]
    [skip] = result.skipped
    assert skip.slot == T0
    assert skip.reason == (
        "repetitions: only 2 left for these slots; 3 slots to 2026-01-01T12:02:00Z"
    )
    assert result.next_run_at is None


# A daily 09:00 in Berlin: 07:00 UTC in summer. A slot stored under other rules (a
# tzdata upgrade moved the zone's offset) is no slot of the schedule any more.
BERLIN_NINE = schedules.parse("cron", "0 9 * * *", "Europe/Berlin")
SUMMER_NINE = datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def test_it_does_not_fire_a_stored_slot_the_zone_rules_moved_earlier() -> None:
    """Stored 08:00 UTC (as if Berlin were UTC+1); today's real 09:00 has passed:
    running the stale one would run the job twice today."""
    stale = SUMMER_NINE + timedelta(hours=1)
    result = plan(BERLIN_NINE, first=stale, now=stale + timedelta(seconds=5))
    assert result.run == []
    assert [s.slot for s in result.skipped] == [stale]
    assert result.skipped[0].reason == firing.STALE
    assert result.next_run_at == SUMMER_NINE + DAY


def test_it_moves_a_stored_slot_the_zone_rules_moved_later_to_the_real_one() -> None:
    stale = SUMMER_NINE - timedelta(hours=1)
    early = plan(BERLIN_NINE, first=stale, now=stale + timedelta(seconds=5))
    assert early.run == [] and early.next_run_at == SUMMER_NINE
    assert early.skipped[0].reason == firing.STALE
    on_time = plan(BERLIN_NINE, first=SUMMER_NINE, now=SUMMER_NINE)
    assert on_time.run == [SUMMER_NINE] and on_time.skipped == []


def test_it_runs_the_real_slots_after_a_stale_one_that_is_long_overdue() -> None:
    stale = SUMMER_NINE - timedelta(hours=1)
    result = plan(BERLIN_NINE, first=stale, now=SUMMER_NINE + timedelta(seconds=5))
    assert result.run == [SUMMER_NINE]
    assert [s.slot for s in result.skipped] == [stale]
    assert result.next_run_at == SUMMER_NINE + DAY


def test_it_names_the_slots_a_re_timing_drops_once() -> None:
    [skip] = firing.unrun(EVERY_MINUTE, first=T0, until=T0 + 2 * MIN, why="gone")
    assert skip == firing.Skip(T0, "gone; 3 slots to 2026-01-01T12:02:00Z")
    # Bounded by the schedule's end and by its repetitions left.
    [skip] = firing.unrun(
        EVERY_MINUTE, first=T0, until=T0 + 9 * MIN, why="gone", end_at=T0 + MIN
    )
    assert skip.reason == "gone; 2 slots to 2026-01-01T12:01:00Z"
    [skip] = firing.unrun(
        EVERY_MINUTE, first=T0, until=T0 + 9 * MIN, why="gone", repetitions_left=1
    )
    assert skip == firing.Skip(T0, "gone")
    assert firing.unrun(EVERY_MINUTE, first=T0 + MIN, until=T0, why="gone") == []


def test_it_names_a_huge_dropped_backlog_without_scanning_it_all() -> None:
    until = T0 + timedelta(days=2)
    [skip] = firing.unrun(
        EVERY_SECOND, first=T0, until=until, why="gone", scan_limit=1000
    )
    assert skip == firing.Skip(T0, "gone; more than 1000 slots to 2026-01-03T12:00:00Z")
