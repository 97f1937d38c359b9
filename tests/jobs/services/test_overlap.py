"""jobs.services.overlap: buffered runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

from jobs import services
from jobs.models import Execution, Job

pytestmark = pytest.mark.django_db


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
