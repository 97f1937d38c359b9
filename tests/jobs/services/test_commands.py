"""jobs.services.commands: external jobs' reports, retries by hand."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services
from jobs.models import (
    MAX_ATTEMPT,
    Execution,
    ExecutionEvent,
    ExecutionLogChunk,
    Job,
)

pytestmark = pytest.mark.django_db


def test_it_retries_by_hand(
    api: Any,
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    failed = Execution.objects.create(
        job=make_job(), status=Execution.Status.FAILED, attempt=1
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/executions/{failed.pk}/retry/")
    assert response.status_code == 202
    assert (response.json()["attempt"], response.json()["retry_of"]) == (2, failed.pk)
    sent.assert_called_once()
    running = Execution.objects.create(job=failed.job, status="running")
    assert api.post(f"/api/executions/{running.pk}/retry/").status_code == 409
    # Once, while that retry is under way: a second POST does not run it twice.
    again = api.post(f"/api/executions/{failed.pk}/retry/")
    assert again.status_code == 409
    assert "already being retried as" in again.json()["detail"]


def test_it_refuses_a_retry_past_the_highest_attempt_number(
    api: Any, make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    last = Execution.objects.create(
        job=make_job(), status=Execution.Status.FAILED, attempt=MAX_ATTEMPT
    )
    response = api.post(f"/api/executions/{last.pk}/retry/")
    assert response.status_code == 409
    assert "the highest a run can have" in response.json()["detail"]
    assert not sent.called and Execution.objects.count() == 1


def test_it_refuses_more_retries_than_a_run_can_number(
    api: Any, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    response = api.patch(
        f"/api/jobs/{job.pk}/", {"max_retries": MAX_ATTEMPT}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["max_retries"] == [
        f"Ensure this value is less than or equal to {MAX_ATTEMPT - 1}."
    ]
    response = api.patch(
        f"/api/jobs/{job.pk}/", {"max_retries": MAX_ATTEMPT - 1}, format="json"
    )
    assert response.status_code == 200


def test_it_runs_an_external_job_as_soon_as_it_is_triggered_and_lets_it_report(
    api: Any, make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    response = api.post(f"/api/jobs/{job.pk}/run/")
    assert response.json()["status"] == "running"
    assert not sent.called
    execution_id = response.json()["id"]
    report = api.post(
        f"/api/executions/{execution_id}/report/",
        {"status": "running", "output": "half way\n"},
    )
    assert report.status_code == 200
    api.post(f"/api/executions/{execution_id}/pause/")
    assert api.get(f"/api/executions/{execution_id}/").json()["desired_state"] == (
        "pause"
    )
    assert (
        api.post(
            f"/api/executions/{execution_id}/report/", {"status": "paused"}
        ).json()["status"]
        == "paused"
    )
    done = api.post(
        f"/api/executions/{execution_id}/report/",
        {"status": "succeeded", "output": "done\n", "exit_code": 0},
    ).json()
    assert (done["status"], done["output"]) == ("succeeded", "half way\ndone\n")
    job.refresh_from_db()
    assert job.success_count == 1
    late = api.post(f"/api/executions/{execution_id}/report/", {"status": "failed"})
    assert late.status_code == 409


def test_it_lets_only_external_jobs_report(
    api: Any, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(status=Execution.Status.RUNNING)
    response = api.post(f"/api/executions/{execution.pk}/report/", {"status": "failed"})
    assert response.status_code == 409


def test_it_stores_nothing_for_a_report_with_an_exit_code_out_of_range(
    api: Any, make_job: Callable[..., Job]
) -> None:
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    run = api.post(f"/api/jobs/{job.pk}/run/").json()["id"]
    response = api.post(
        f"/api/executions/{run}/report/",
        {"status": "succeeded", "output": "x\n", "exit_code": 2**40},
        format="json",
    )
    assert response.status_code == 400
    assert "exit_code" in response.json()
    assert not ExecutionEvent.objects.filter(execution_id=run).exists()
    assert not ExecutionLogChunk.objects.filter(execution_id=run).exists()
    assert Execution.objects.get(pk=run).status == Execution.Status.RUNNING


def test_it_starts_an_external_run_still_pending_on_a_report(
    api: Any, make_job: Callable[..., Job]
) -> None:
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    pending = Execution.objects.create(job=job)  # fired, not yet taken up
    done = api.post(
        f"/api/executions/{pending.pk}/report/", {"status": "succeeded"}
    ).json()
    assert done["status"] == "succeeded"
    assert done["started_at"] is not None
    job.refresh_from_db()
    assert (job.success_count, job.last_attempted_at is not None) == (1, True)


def test_it_appends_concurrent_reports_in_turn_and_lets_one_end_win(
    make_job: Callable[..., Job], admin_user: Any, transactional_db: None
) -> None:
    from django.db import connection, connections

    from tests.tokens import make_token

    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    token = make_token(admin_user).key
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})

    def client() -> APIClient:
        each = APIClient()
        each.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        each.raise_request_exception = False
        return each

    run = client().post(f"/api/jobs/{job.pk}/run/").json()["id"]
    codes: list[int] = []
    barrier = threading.Barrier(6)

    def report(n: int) -> None:
        mine = client()
        barrier.wait()
        for line in range(5):
            body = {"status": "running", "output": f"{n}-{line}\n"}
            codes.append(mine.post(f"/api/executions/{run}/report/", body).status_code)
        body = {"status": "succeeded" if n % 2 else "failed"}
        codes.append(mine.post(f"/api/executions/{run}/report/", body).status_code)
        connections.close_all()

    threads = [threading.Thread(target=report, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 500 not in codes
    assert codes.count(409) >= 5  # every final report after the first
    ends = ExecutionEvent.objects.filter(execution_id=run, detail__startswith="Rep")
    finished = Execution.objects.get(pk=run)
    assert finished.status in ("succeeded", "failed")
    assert f"Reported {finished.status}." in set(ends.values_list("detail", flat=True))


def test_it_starts_the_run_buffered_behind_a_pending_run_it_kills(
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    admin_user: Any,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    """Killed before it started, the queued run never ends: the kill itself lets
    the run buffered behind it start."""
    job = make_job(overlap_policy="buffer_one")
    queued = Execution.objects.create(job=job, dispatched_at=timezone.now())
    held = Execution.objects.create(job=job)  # buffered: never dispatched
    with django_capture_on_commit_callbacks(execute=True):
        services.execution_control(execution=queued, action="kill", user=admin_user)
    queued.refresh_from_db()
    held.refresh_from_db()
    assert queued.status == Execution.Status.KILLED
    assert held.dispatched_at is not None
    assert [call.args[0][0] for call in sent.call_args_list] == [held.pk]
