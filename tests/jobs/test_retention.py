from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import Execution, ExecutionEvent, ExecutionLogChunk, Job
from jobs.retention import executions_prune
from jobs.tasks import prune_executions

pytestmark = pytest.mark.django_db


def statuses(job: Job) -> list[str]:
    return list(job.executions.order_by("id").values_list("status", flat=True))


def test_it_keeps_the_newest_of_each_outcome_and_never_active_runs(
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    settings: object,
) -> None:
    job = make_job(keep_succeeded=2, keep_failed=1)
    for status in ["succeeded"] * 4 + ["failed", "timed_out", "running", "pending"]:
        make_execution(job=job, status=status)
    assert executions_prune() == 3
    assert statuses(job) == [
        "succeeded",
        "succeeded",
        "timed_out",
        "running",
        "pending",
    ]


def test_it_lets_a_job_setting_win_over_its_apps_which_wins_over_the_default(
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    settings: object,
) -> None:
    settings.KARMCHARI_KEEP_SUCCEEDED = 5  # type: ignore[attr-defined]
    own = make_job(keep_succeeded=1)
    from_app = make_job()
    from_app.app.keep_succeeded = 2
    from_app.app.save()
    for job in (own, from_app):
        for _ in range(4):
            make_execution(job=job, status="succeeded")
    executions_prune()
    assert len(statuses(own)) == 1
    assert len(statuses(from_app)) == 2


def test_it_drops_runs_older_than_the_days_kept(
    make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    job = make_job(keep_days=7)
    with time_machine.travel(timezone.now() - timedelta(days=8)):
        make_execution(job=job, status="failed")
        old_active = make_execution(job=job, status="paused")
    make_execution(job=job, status="failed")
    assert executions_prune() == 1
    assert statuses(job) == ["paused", "failed"]
    assert Execution.objects.filter(pk=old_active.pk).exists()


def test_it_removes_the_events_of_pruned_runs(
    make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    job = make_job(keep_failed=0)
    doomed = make_execution(job=job, status="killed")
    ExecutionEvent.objects.create(execution=doomed, action="kill", detail="by ops")
    prune_executions()
    assert not ExecutionEvent.objects.exists()


def test_it_keeps_everything_with_no_limit(
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    settings: object,
) -> None:
    settings.KARMCHARI_KEEP_SUCCEEDED = 0  # type: ignore[attr-defined]
    job = make_job()
    for _ in range(3):
        make_execution(job=job, status="succeeded")
    assert executions_prune() == 0


def test_it_lets_zero_days_on_a_job_lift_its_apps_limit(
    make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    job = make_job(keep_days=0, keep_succeeded=None, keep_failed=None)
    job.app.keep_days = 1
    job.app.save()
    with time_machine.travel(timezone.now() - timedelta(days=30)):
        make_execution(job=job, status="succeeded")
    make_execution(job=job, status="failed")
    assert executions_prune() == 0
    assert job.retention()[2] is None


def test_it_refreshes_the_job_s_cached_stats_on_a_prune(
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    api: object,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job(keep_failed=0)
    make_execution(job=job, status="failed")
    url = f"/api/jobs/{job.pk}/stats/"
    assert api.get(url).json()["executions"]["failed"] == 1  # type: ignore[attr-defined]
    with django_capture_on_commit_callbacks(execute=True):
        executions_prune()
    assert api.get(url).json()["executions"]["failed"] == 0  # type: ignore[attr-defined]


def test_it_keeps_an_attempt_whose_retry_is_still_to_run(
    make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    job = make_job(keep_failed=1)
    first = make_execution(job=job, status="failed")
    retry = make_execution(job=job, status="pending", retry_of=first, attempt=2)
    newer = make_execution(job=job, status="failed")
    assert executions_prune() == 0
    retry.refresh_from_db()
    assert retry.retry_of_id == first.pk

    Execution.objects.filter(pk=retry.pk).update(status="failed")
    executions_prune()
    assert list(job.executions.values_list("pk", flat=True)) == [newer.pk]


def test_it_counts_days_from_a_run_s_end(
    make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    """A run that took two days is not old the moment it ends (keep_days=1)."""
    job = make_job(keep_days=1)
    with time_machine.travel(timezone.now() - timedelta(days=2)):
        long_run = make_execution(job=job, status="running", started_at=timezone.now())
    Execution.objects.filter(pk=long_run.pk).update(
        status="succeeded", finished_at=timezone.now() - timedelta(minutes=1)
    )
    assert executions_prune() == 0
    assert executions_prune(now=timezone.now() + timedelta(days=1)) == 1


def test_it_keeps_every_attempt_of_a_retry_chain_still_to_end(
    make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    job = make_job(keep_failed=0)
    first = make_execution(job=job, status="failed")
    second = make_execution(job=job, status="failed", retry_of=first, attempt=2)
    third = make_execution(job=job, status="running", retry_of=second, attempt=3)
    assert executions_prune() == 0
    assert statuses(job) == ["failed", "failed", "running"]

    Execution.objects.filter(pk=third.pk).update(status="failed")
    assert executions_prune() == 3


def test_it_keeps_the_parent_run_of_a_dependant_still_to_end(
    make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    parent = make_job(keep_succeeded=0)
    child = make_job()
    child.parents.add(parent)
    released = make_execution(job=parent, status="succeeded")
    older = make_execution(job=parent, status="succeeded")
    waiting = make_execution(
        job=child,
        status="pending",
        trigger="dependency",
        parameters={"parent_execution": released.pk},
    )
    assert executions_prune() == 1
    assert list(parent.executions.values_list("pk", flat=True)) == [released.pk]

    Execution.objects.filter(pk=waiting.pk).update(status="succeeded")
    assert executions_prune() == 1
    assert not parent.executions.filter(pk__in=[released.pk, older.pk]).exists()


def test_it_deletes_runs_without_loading_their_output(
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    """A run's output and error tails may be a megabyte each: a batch of a thousand
    loaded to be deleted could take gigabytes."""
    job = make_job(keep_failed=0)
    doomed = make_execution(job=job, status="failed", output="o" * 1000)
    ExecutionLogChunk.objects.create(execution=doomed, offset=0, data=b"o" * 1000)
    ExecutionEvent.objects.create(execution=doomed, action="kill")
    with CaptureQueriesContext(connection) as queries:
        assert executions_prune() == 1
    assert not [q["sql"] for q in queries if '"output"' in q["sql"]]
    assert not ExecutionLogChunk.objects.exists()
    assert not ExecutionEvent.objects.exists()


def test_it_keeps_a_run_that_has_just_ended_until_what_follows_it_is_done(
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    # Its end is committed before its retry is made: a prune in between must not
    # take it (and with it the retry).
    job = make_job(keep_failed=0, max_retries=1)
    ended = timezone.now() - timedelta(seconds=10)
    make_execution(job=job, status="failed", finished_at=ended)
    assert executions_prune() == 0
    assert executions_prune(now=ended + timedelta(minutes=2)) == 1
