from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.utils import timezone

from jobs import services
from jobs.models import Execution, Job
from jobs.runners import Outcome

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent() -> mock.MagicMock:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


def test_it_sends_the_task_only_after_commit(
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job(queue="reports")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        execution = services.job_trigger(job=job)
        assert not sent.called
    assert len(callbacks) == 1
    sent.assert_called_once_with((execution.pk,), queue="reports")
    assert execution.status == Execution.Status.PENDING
    assert execution.dispatched_at is not None


def test_it_refuses_to_run_a_disabled_job(make_job: Callable[..., Job]) -> None:
    job = make_job(enabled=False)
    with pytest.raises(services.Conflict, match="disabled"):
        services.job_trigger(job=job)
    assert not Execution.objects.exists()


def test_it_claims_an_execution_once(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution()
    first = services.execution_claim(execution_id=execution.pk, worker="w1")
    second = services.execution_claim(execution_id=execution.pk, worker="w2")
    assert first is not None and first.status == Execution.Status.RUNNING
    assert first.worker == "w1"
    assert second is None
    execution.job.refresh_from_db()
    assert execution.job.last_attempted_at == first.started_at


def test_it_runs_and_counts_a_success(make_execution: Callable[..., Execution]) -> None:
    execution = make_execution()
    services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.exit_code == 0
    assert execution.pid is not None
    assert execution.finished_at is not None
    job = execution.job
    job.refresh_from_db()
    assert (job.success_count, job.error_count) == (1, 0)
    assert job.last_success_at == execution.finished_at
    assert job.average_duration is not None


def test_it_counts_a_failure(make_job: Callable[..., Job]) -> None:
    job = make_job("exit 4")
    execution = Execution.objects.create(job=job)
    services.execution_run(execution_id=execution.pk, worker="w")
    job.refresh_from_db()
    assert (job.success_count, job.error_count) == (0, 1)
    assert job.last_error_at is not None


def test_it_ignores_an_execution_that_is_not_pending(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution(status=Execution.Status.SUCCEEDED)
    assert services.execution_run(execution_id=execution.pk, worker="w") is None
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED


def test_it_does_not_overwrite_a_final_status(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution(status=Execution.Status.LOST)
    services.execution_finish(
        execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
    )
    execution.refresh_from_db()
    assert execution.status == Execution.Status.LOST
    execution.job.refresh_from_db()
    assert execution.job.success_count == 0


def test_it_records_a_crashing_runner_as_failed(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution()
    with mock.patch("jobs.runners.shell.ShellRunner.run", side_effect=OSError("boom")):
        services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    assert execution.status == Execution.Status.FAILED
    assert execution.reason == "Runner error: boom"


def test_it_resends_stale_pending_executions_once_per_window(
    make_execution: Callable[..., Execution], sent: mock.MagicMock
) -> None:
    with time_machine.travel(timezone.now() - timedelta(minutes=5), tick=False):
        stale = make_execution(dispatched_at=timezone.now())
    fresh = make_execution(dispatched_at=timezone.now())
    assert services.execution_resend_stale(older_than=timedelta(seconds=60)) == 1
    sent.assert_called_once_with((stale.pk,), queue=stale.job.queue)
    # Stamped: the next sweep within the window leaves it alone.
    assert services.execution_resend_stale(older_than=timedelta(seconds=60)) == 0
    fresh.refresh_from_db()
    assert fresh.status == Execution.Status.PENDING
