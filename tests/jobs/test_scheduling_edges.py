"""Scheduling edge cases: year 9999, PUTs of finished schedules, sub-second starts,
re-enabling with a re-timing, the last repetition, non-ASCII digits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
import time_machine
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Execution, Job, Schedule

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def sent() -> Iterator[mock.MagicMock]:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


def executions() -> list[tuple[datetime, str, str]]:
    return list(
        Execution.objects.order_by("scheduled_for").values_list(
            "scheduled_for", "status", "reason"
        )
    )


def test_it_previews_a_late_slot_in_year_9999_west_of_utc_without_a_500(
    api: APIClient,
) -> None:
    # 23:00 on 9999-12-31 in New York is in year 10000 in UTC: there is no such
    # slot, so the preview ends there, rather than crashing with OverflowError.
    api.raise_request_exception = False
    response = api.get(
        "/api/schedules/preview/",
        {
            "expression": "0 23 31 12 *",
            "timezone": "America/New_York",
            "after": "9998-06-01T00:00:00Z",
            "n": 3,
        },
    )
    assert response.status_code == 200, response.content[:200]
    assert response.json()["fire_times"] == ["9998-12-31T23:00:00-05:00"]


def test_it_lets_a_put_disable_a_one_shot_schedule_that_already_fired(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    # Only a new or re-timed schedule that could never fire is refused; a PUT that
    # sends the same kind/expression/timezone back only to disable it is neither.
    with time_machine.travel(T0, tick=False) as clock:
        created = api.post(
            "/api/schedules/",
            {
                "job": make_job().pk,
                "kind": "once",
                "expression": "2026-03-02T09:05:00Z",
            },
            format="json",
        )
        assert created.status_code == 201, created.json()
        clock.move_to(T0 + timedelta(minutes=6))
        services.schedules_fire_due(now=T0 + timedelta(minutes=6))
        body = {
            k: v
            for k, v in created.json().items()
            if k not in ("id", "next_run_at", "last_run_at", "created", "updated")
        }
        body.pop("description")
        response = api.put(
            f"/api/schedules/{created.json()['id']}/",
            {**body, "enabled": False},
            format="json",
        )
    assert response.status_code == 200, response.json()
    assert Schedule.objects.get().enabled is False


def test_it_never_fires_before_a_start_at_with_a_fraction_of_a_second(
    make_job: Callable[..., Job],
) -> None:
    start_at = datetime(2026, 3, 2, 10, 0, 0, 500_000, tzinfo=UTC)
    with time_machine.travel(T0, tick=False):
        schedule = services.schedule_create(
            job=make_job(), kind="cron", expression="* * * * * *", start_at=start_at
        )
        upcoming = services.schedule_upcoming(schedule, after=T0, n=2)
    assert schedule.next_run_at is not None
    assert schedule.next_run_at >= start_at
    assert all(moment >= start_at for moment in upcoming), upcoming


def test_it_settles_slots_missed_while_disabled_when_re_enabled_with_a_new_end_at(
    make_job: Callable[..., Job],
) -> None:
    # Re-enabling settles the disabled time by the misfire policy (run_once: the
    # latest missed slot runs, the others are one skipped row), also when the same
    # edit moves the schedule's end.
    with time_machine.travel(T0 - timedelta(seconds=30), tick=False) as clock:
        schedule = services.schedule_create(
            job=make_job(), kind="cron", expression="* * * * *"
        )
        services.schedule_update(schedule=schedule, enabled=False)
        now = T0 + timedelta(minutes=10, seconds=20)
        clock.move_to(now)
        schedule = Schedule.objects.get()
        services.schedule_update(
            schedule=schedule, enabled=True, end_at=T0 + timedelta(days=3)
        )
    fired = executions()
    assert [(slot, status) for slot, status, _ in fired] == [
        (T0, "skipped"),
        (T0 + timedelta(minutes=10), "pending"),
    ], fired


def test_it_runs_the_on_time_slot_rather_than_a_fire_ahead_one_when_one_run_is_left(
    make_job: Callable[..., Job],
) -> None:
    # repetitions_left=1 and the preview says the run is the next slot. A beat
    # tick 0.3 s after that slot (fire-ahead 1 s) sees it and the following one:
    # the slot that is due must run; the one not yet due must not displace it.
    with time_machine.travel(T0, tick=False) as clock:
        schedule = services.schedule_create(
            job=make_job(),
            kind="cron",
            expression="* * * * * *",
            repetitions_left=1,
        )
        preview = services.schedule_upcoming(schedule, after=T0, n=5)
        assert preview == [T0 + timedelta(seconds=1)]
        now = T0 + timedelta(seconds=1, milliseconds=300)
        clock.move_to(now)
        services.schedules_fire_due(now=now, ahead=timedelta(seconds=1))
    fired = [(slot, status) for slot, status, _ in executions()]
    assert fired == [(T0 + timedelta(seconds=1), "pending")], executions()


@pytest.mark.parametrize("expression", ["² * * * *", "*/² * * * *", "0 0 ¹ * *"])
def test_it_refuses_non_ascii_digits_in_a_cron_field_with_a_400(
    api: APIClient, make_job: Callable[..., Job], expression: str
) -> None:
    # "²".isdigit() is True but int("²") raises: a ValueError, not a ScheduleError.
    api.raise_request_exception = False
    created = api.post(
        "/api/schedules/",
        {"job": make_job().pk, "expression": expression},
        format="json",
    )
    assert created.status_code == 400, created.content[:200]
    assert "expression" in created.json()
    preview = api.get("/api/schedules/preview/", {"expression": expression})
    assert preview.status_code == 400, preview.content[:200]


@pytest.mark.parametrize(
    ("job_enabled", "schedule_enabled", "cause"),
    [
        (False, True, "job was disabled"),
        (True, False, "schedule was disabled"),
        (True, True, "missed"),  # the beat was down
    ],
)
def test_it_records_the_slots_a_re_timing_drops_as_skipped(
    make_job: Callable[..., Job],
    job_enabled: bool,
    schedule_enabled: bool,
    cause: str,
) -> None:
    with time_machine.travel(T0 - timedelta(seconds=30), tick=False) as clock:
        schedule = services.schedule_create(
            job=make_job(enabled=job_enabled),
            kind="cron",
            expression="* * * * *",
            enabled=schedule_enabled,
        )
        clock.move_to(T0 + timedelta(minutes=10, seconds=20))
        schedule = Schedule.objects.get()
        services.schedule_update(schedule=schedule, expression="0 * * * *")
    [(slot, status, reason)] = executions()
    assert (slot, status) == (T0, "skipped")
    assert reason == (
        f"{cause}; its schedule was re-timed before it ran; "
        "11 slots to 2026-03-02T09:10:00Z"
    )
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(hours=1)


def test_it_records_nothing_when_a_schedule_is_re_timed_before_its_slot(
    make_job: Callable[..., Job],
) -> None:
    with time_machine.travel(T0 - timedelta(seconds=30), tick=False):
        schedule = services.schedule_create(
            job=make_job(), kind="cron", expression="* * * * *"
        )
        services.schedule_update(schedule=schedule, expression="0 * * * *")
    assert executions() == []
