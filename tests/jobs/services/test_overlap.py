"""jobs.services.overlap: buffered runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.utils import timezone

from jobs import services
from jobs.models import Execution, Job

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_it_sends_buffered_runs_when_the_policy_stops_buffering(
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    job = make_job(overlap_policy="buffer_all")
    held = Execution.objects.create(job=job)  # pending, never dispatched: buffered
    with (
        mock.patch("jobs.services.overlap.executions_send") as send,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.job_update(job=job, overlap_policy="allow_all")
    [(execution, delay)] = send.call_args.args[0]
    assert (execution.pk, delay) == (held.pk, 0.0)
    held.refresh_from_db()
    assert held.dispatched_at is not None


def switch_policy(job: Job, capture: Callable[..., Any], **fields: Any) -> list[int]:
    """job_update with these fields: the ids of the runs it sent."""
    with (
        mock.patch("jobs.services.overlap.executions_send") as send,
        capture(execute=True),
    ):
        services.job_update(job=job, **fields)
    return [e.pk for call in send.call_args_list for e, _ in call.args[0]]


def held_runs(job: Job, n: int) -> list[Execution]:
    """n runs a buffering policy holds back, oldest first (pending, never sent)."""
    return [
        Execution.objects.create(job=job, scheduled_for=T0 + timedelta(minutes=i))
        for i in range(n)
    ]


def test_it_skips_held_runs_when_the_policy_becomes_skip_while_one_runs(
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    job = make_job(overlap_policy="buffer_all")
    Execution.objects.create(job=job, status="running", started_at=timezone.now())
    held = held_runs(job, 2)
    assert (
        switch_policy(job, django_capture_on_commit_callbacks, overlap_policy="skip")
        == []
    )
    for execution in held:
        execution.refresh_from_db()
        assert execution.status == "skipped"
        assert execution.reason == (
            "overlap: 1 run(s) of this job still active (skip); "
            "its job's overlap policy became skip while it waited"
        )


def test_it_starts_only_the_oldest_held_run_when_the_policy_becomes_skip(
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    job = make_job(overlap_policy="buffer_all")
    oldest, newer = held_runs(job, 2)
    sent = switch_policy(job, django_capture_on_commit_callbacks, overlap_policy="skip")
    assert sent == [oldest.pk]
    newer.refresh_from_db()
    assert newer.status == "skipped"


def test_it_starts_held_runs_up_to_max_concurrent_when_the_policy_allows_all(
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    job = make_job(overlap_policy="buffer_all", max_concurrent=2)
    Execution.objects.create(job=job, status="running", started_at=timezone.now())
    first, second, third = held_runs(job, 3)
    sent = switch_policy(
        job, django_capture_on_commit_callbacks, overlap_policy="allow_all"
    )
    assert sent == [first.pk]
    assert set(
        Execution.objects.filter(pk__in=[second.pk, third.pk]).values_list(
            "status", flat=True
        )
    ) == {"skipped"}


def test_it_starts_the_newest_held_run_and_stops_the_rest_under_terminate_other(
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    job = make_job(overlap_policy="buffer_all")
    running = Execution.objects.create(
        job=job, status="running", started_at=timezone.now(), worker="w1"
    )
    older, newest = held_runs(job, 2)
    with mock.patch("jobs.control.publish") as publish:
        sent = switch_policy(
            job, django_capture_on_commit_callbacks, overlap_policy="terminate_other"
        )
    assert sent == [newest.pk]
    older.refresh_from_db()
    running.refresh_from_db()
    assert older.status == "killed"
    assert running.desired_state == "kill"
    publish.assert_called_once_with(
        execution_id=running.pk, desired_state="kill", worker="w1"
    )


def test_it_starts_the_new_run_when_cancel_other_ended_only_a_run_not_started(
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Any],
    sent: mock.MagicMock,
    settings: Any,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """cancel_other: the other run was sent but not claimed yet (the workers were
    busy). The slot ends it before it starts, so no end of it will ever release the
    new run: the slot starts it itself."""
    settings.KARMCHARI_FIRE_AHEAD = 0
    job = make_job(overlap_policy="cancel_other")
    with time_machine.travel(T0 - timedelta(seconds=30), tick=False) as clock:
        schedule = make_schedule("0 9 * * *", job=job)
        queued = Execution.objects.create(job=job, dispatched_at=timezone.now())
        clock.move_to(T0)
        with django_capture_on_commit_callbacks(execute=True):
            services.schedules_fire_due(now=timezone.now())
    queued.refresh_from_db()
    assert queued.status == Execution.Status.KILLED
    [new] = Execution.objects.filter(schedule=schedule)
    assert (new.status, new.dispatched_at is not None) == ("pending", True)
    assert [call.args[0][0] for call in sent.call_args_list] == [new.pk]
