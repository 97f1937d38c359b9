from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services, stats
from jobs.models import App, Execution, Job
from jobs.runners import Outcome
from jobs.services import executions

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


def test_it_needs_the_view_permission_for_stats(anon: APIClient) -> None:
    assert anon.get("/api/stats/").status_code == 401


def test_it_shows_a_claimed_run_as_running_once_committed(
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


def test_it_forgets_global_figures_when_a_job_is_disabled_or_deleted(
    api: APIClient,
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job, gone = make_job(), make_job()
    assert api.get("/api/stats/").json()["enabled_jobs"] == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(f"/api/jobs/{job.pk}/disable/").status_code == 200
    body = api.get("/api/stats/").json()
    assert (body["enabled_jobs"], body["disabled_jobs"]) == (1, 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/jobs/{gone.pk}/").status_code == 204
    assert api.get("/api/stats/").json()["jobs"] == 1


def test_it_shows_a_new_schedule_and_no_next_run_once_disabled(
    api: APIClient,
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job()
    assert api.get(f"/api/jobs/{job.pk}/stats/").json()["next_run_at"] is None
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/schedules/",
            {"job": job.pk, "kind": "cron", "expression": "* * * * *"},
            format="json",
        )
    assert response.status_code == 201, response.content
    assert api.get(f"/api/jobs/{job.pk}/stats/").json()["next_run_at"] is not None
    with django_capture_on_commit_callbacks(execute=True):
        services.job_update(job=job, enabled=False)
    assert api.get(f"/api/jobs/{job.pk}/stats/").json()["next_run_at"] is None


def test_it_forgets_the_next_run_of_a_job_a_schedule_moved_away_from(
    api: APIClient,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Any],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    old, new = make_job(), make_job()
    schedule = make_schedule(job=old)
    assert api.get(f"/api/jobs/{old.pk}/stats/").json()["next_run_at"] is not None
    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch(
            f"/api/schedules/{schedule.pk}/", {"job": new.pk}, format="json"
        )
    assert response.status_code == 200, response.content
    assert api.get(f"/api/jobs/{new.pk}/stats/").json()["next_run_at"] is not None
    assert api.get(f"/api/jobs/{old.pk}/stats/").json()["next_run_at"] is None


def test_it_counts_a_skipped_child_and_a_lost_run_at_once(
    api: APIClient,
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    from jobs.recovery import executions_recover_lost
    from tests.jobs.conftest import make_agent

    parent, child = make_job("true"), make_job(enabled=False)
    child.parents.set([parent])
    assert api.get(f"/api/jobs/{child.pk}/stats/").json()["executions"]["skipped"] == 0
    assert api.get(f"/api/jobs/{parent.pk}/stats/").json()["error_count"] == 0
    execution = Execution.objects.create(job=parent, status=Execution.Status.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        services.execution_finish(
            execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
        )
    assert api.get(f"/api/jobs/{child.pk}/stats/").json()["executions"]["skipped"] == 1
    agent = make_agent("w9@host")
    Execution.objects.create(
        job=parent, status=Execution.Status.RUNNING, worker=agent.name
    )
    with django_capture_on_commit_callbacks(execute=True):
        executions_recover_lost(agent=agent)
    figures = api.get(f"/api/jobs/{parent.pk}/stats/").json()
    assert (figures["executions"]["lost"], figures["error_count"]) == (1, 1)


def test_it_answers_one_app_s_figures_from_the_cache_until_a_change(
    api: APIClient,
    make_job: Callable[..., Job],
    make_app: Callable[..., object],
    django_assert_num_queries: Callable,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job()
    make_job(app=make_app(name="other"))
    url = f"/api/apps/{job.app.name}/stats/"
    body = api.get(url).json()
    assert (body["app"], body["jobs"], body["success_count"]) == (job.app.name, 1, 0)
    assert body["created"]
    with django_assert_num_queries(4):  # the auth token, the app (users, groups)
        api.get(url)
    execution = Execution.objects.create(job=job, status=Execution.Status.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        services.execution_finish(
            execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
        )
    assert api.get(url).json()["success_count"] == 1
    assert api.get("/api/apps/nope/stats/").status_code == 404


def test_it_lists_a_job_s_recent_executions_newest_first(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    for status in ["succeeded"] * 11 + ["failed"]:
        Execution.objects.create(job=job, status=status)
    recent = api.get(f"/api/jobs/{job.pk}/stats/").json()["recent_executions"]
    assert len(recent) == 10
    assert recent[0]["status"] == "failed"
    assert recent[0]["id"] > recent[1]["id"]
    assert set(recent[0]) >= {"trigger", "attempt", "started_at", "duration"}


def test_it_makes_an_app_s_figures_follow_its_rename(
    api: APIClient,
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job()
    assert api.get(f"/api/apps/{job.app.name}/stats/").json()["app"] == job.app.name
    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch(f"/api/apps/{job.app.name}/", {"name": "renamed"})
    assert response.status_code == 200
    assert api.get("/api/apps/renamed/stats/").json()["app"] == "renamed"


def test_it_does_not_let_one_app_s_figures_bring_back_another_s_forgotten_ones(
    make_job: Callable[..., Job], make_app: Callable[..., object]
) -> None:
    from jobs import stats

    first, second = make_job(), make_job(app=make_app(name="second"))
    stats.stats_app(app=first.app)
    Execution.objects.create(job=first)  # a change: forgotten below
    real = stats.stats_global

    def change_meanwhile(**kwargs: object) -> dict[str, object]:
        figures = real(**kwargs)  # type: ignore[arg-type]
        stats.stats_invalidate(job_id=first.pk)  # lands while second is computed
        return figures

    with mock.patch.object(stats, "stats_global", change_meanwhile):
        stats.stats_app(app=second.app)
    assert stats.stats_app(app=first.app)["executions"]["pending"] == 1


def test_it_needs_the_jobs_view_permission_for_an_app_s_figures_too(
    make_user: Callable[..., object], make_app: Callable[..., object]
) -> None:
    from tests.tokens import make_token

    app = make_app(name="seen")
    user = make_user("apps-only", perms=["jobs.view_app"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(user).key}")
    assert client.get("/api/apps/seen/").status_code == 200
    assert client.get("/api/apps/seen/stats/").status_code == 403
    assert app


def test_it_drops_an_apps_stale_figures_within_the_cache_timeout(
    api: APIClient,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    settings: Any,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    """The module's promise: the cache timeout (KARMCHARI_STATS_CACHE_SECONDS)
    bounds how stale cached figures can be when an invalidation did not reach
    Redis. An app's figures must not outlive it because another app's figures were
    cached later (each of those pushes the expiry of the shared hash forward)."""
    settings.KARMCHARI_STATS_CACHE_SECONDS = 2
    settings.KARMCHARI_REDIS_BATCH_SECONDS = 0
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        ops, other = make_app("ops"), make_app("other")
        job = make_job(app=ops)
        execution = Execution.objects.create(
            job=job, status=Execution.Status.RUNNING, started_at=timezone.now()
        )
        assert api.get("/api/apps/ops/stats/").json()["success_count"] == 0
        # The run ends while Redis is away for a moment: its invalidation is lost.
        with (
            mock.patch(
                "jobs.redis_batch.get_redis_connection",
                side_effect=ConnectionError("Redis away"),
            ),
            django_capture_on_commit_callbacks(execute=True),
        ):
            services.execution_finish(
                execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
            )
        traveller.shift(1.3)
        api.get(f"/api/apps/{other.name}/stats/")  # someone looks at another app
        traveller.shift(1.3)  # ops' figures are now older than the cache timeout
        body = api.get("/api/apps/ops/stats/").json()
        assert (body["success_count"], body["active_executions"]) == (1, 0)


@pytest.mark.django_db(transaction=True)
def test_it_forgets_the_job_s_cached_stats_once_its_retry_exists(
    make_job: Callable[..., Job],
) -> None:
    """Outside a transaction the end's stats invalidation runs at its commit, before
    the retry is inserted; nothing forgets the job's figures after that insert. A
    stats read in between (a dashboard, an API poll) caches figures without the
    pending retry for KARMCHARI_STATS_CACHE_SECONDS."""
    job = make_job(max_retries=1, retry_backoff=1)
    execution = Execution.objects.create(
        job=job, status=Execution.Status.RUNNING, started_at=timezone.now()
    )
    real_delay = executions.retry_delay

    def delay_with_a_reader(**kwargs: Any) -> float:
        stats.stats_job(job=Job.objects.get(pk=job.pk))  # someone looks meanwhile
        return real_delay(**kwargs)

    with (
        mock.patch("jobs.services.executions.retry_delay", delay_with_a_reader),
        mock.patch("jobs.tasks.run_execution.apply_async"),
    ):
        services.execution_finish(
            execution=execution, outcome=Outcome(status=Execution.Status.FAILED)
        )
    assert Execution.objects.filter(job=job, status="pending").count() == 1
    figures = stats.stats_job(job=Job.objects.get(pk=job.pk))
    assert figures["executions"]["pending"] == 1
    assert figures["active_executions"] == 1


def test_it_reads_a_job_s_recent_runs_in_one_query(
    api: APIClient,
    make_job: Callable[..., Job],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not one more per run shown (an .only() without job_id reloaded it per row)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    job = make_job()
    Execution.objects.bulk_create([Execution(job=job) for _ in range(8)])
    api.get(f"/api/jobs/{job.pk}/stats/")  # the token's first use is written once
    counts = []
    for recent in (2, 8):
        monkeypatch.setattr(stats, "RECENT", recent)
        stats.stats_invalidate(job_id=job.pk)
        with CaptureQueriesContext(connection) as queries:
            body = api.get(f"/api/jobs/{job.pk}/stats/").json()
        assert len(body["recent_executions"]) == recent
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("policy", ["skip", "buffer_one", "cancel_other"])
def test_it_shows_what_an_overlap_decision_of_beat_recorded(
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Any],
    settings: Any,
    django_capture_on_commit_callbacks: Callable,
    policy: str,
) -> None:
    """A slot skipped, buffered, or ending the run before it (cancel_other): rows
    no claim follows, so the tick itself forgets the job's cached figures."""
    settings.KARMCHARI_FIRE_AHEAD = 0
    slot = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    job = make_job(overlap_policy=policy)
    with (
        time_machine.travel(slot - timedelta(seconds=30), tick=False) as clock,
        mock.patch("jobs.tasks.run_execution.apply_async"),
    ):
        make_schedule("0 9 * * *", job=job)
        Execution.objects.create(job=job, dispatched_at=timezone.now())  # queued
        assert stats.stats_job(job=job)["executions"]["pending"] == 1  # cached
        clock.move_to(slot)
        with django_capture_on_commit_callbacks(execute=True):
            services.schedules_fire_due(now=timezone.now())
        shown = stats.stats_job(job=job)["executions"]
    stored = {
        status: Execution.objects.filter(job=job, status=status).count()
        for status in ("pending", "skipped", "killed")
    }
    assert {status: shown[status] for status in stored} == stored
