from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Execution, Job
from jobs.runners import Outcome

pytestmark = pytest.mark.django_db


def test_it_answers_global_and_job_stats(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    make_job(enabled=False)
    Execution.objects.create(job=job, status=Execution.Status.RUNNING)
    body = api.get("/api/stats/").json()
    assert (body["jobs"], body["enabled_jobs"], body["disabled_jobs"]) == (2, 1, 1)
    assert body["active_executions"] == 1
    assert body["executions"]["running"] == 1
    per_job = api.get(f"/api/jobs/{job.pk}/stats/").json()
    assert per_job["job"] == job.pk
    assert per_job["executions"]["running"] == 1


def test_it_serves_stats_from_the_cache_until_something_changes(
    api: APIClient,
    make_job: Callable[..., Job],
    django_assert_num_queries: Callable,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job()
    execution = Execution.objects.create(job=job, status=Execution.Status.RUNNING)
    api.get("/api/stats/")
    api.get(f"/api/jobs/{job.pk}/stats/")
    with django_assert_num_queries(1):  # the auth token only
        assert api.get("/api/stats/").json()["success_count"] == 0
    # Forgotten once the end is committed (before, a reader could cache it again).
    with django_capture_on_commit_callbacks(execute=True):
        services.execution_finish(
            execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
        )
    assert api.get("/api/stats/").json()["success_count"] == 1
    per_job = api.get(f"/api/jobs/{job.pk}/stats/").json()
    assert (per_job["success_count"], per_job["executions"]["succeeded"]) == (1, 1)


def test_stats_need_the_view_permission(anon: APIClient) -> None:
    assert anon.get("/api/stats/").status_code == 401


def test_a_claimed_run_shows_as_running_once_committed(
    api: APIClient,
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job()
    execution = Execution.objects.create(job=job)
    assert api.get(f"/api/jobs/{job.pk}/stats/").json()["executions"]["pending"] == 1
    with django_capture_on_commit_callbacks(execute=True):
        services.execution_claim(execution_id=execution.pk, worker="w")
    running = api.get(f"/api/jobs/{job.pk}/stats/").json()["executions"]
    assert (running["pending"], running["running"]) == (0, 1)
