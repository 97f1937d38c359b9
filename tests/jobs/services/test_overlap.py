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
