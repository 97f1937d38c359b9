"""The REST API under concurrent requests, on PostgreSQL (row locks; skipped on
SQLite, which serialises writers). Each race is forced: one request is held inside
its service call until the other has answered."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.db import connection, connections
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services
from jobs.models import App, Execution, Job, Schedule
from jobs.runners import Outcome
from tests.tokens import make_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _pg() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL: SQLite serialises writers, no race")


@pytest.fixture
def sent() -> Iterator[mock.MagicMock]:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


@pytest.fixture
def client(admin_user: Any) -> APIClient:
    c = APIClient(raise_request_exception=False)
    c.credentials(HTTP_AUTHORIZATION=f"Token {make_token(admin_user).key}")
    return c


def held(target: str, *, entered: threading.Event, go: threading.Event) -> Any:
    """Patch `target` (a services name) so that its call waits for `go`."""
    module, name = target.rsplit(".", 1)
    import importlib

    real = getattr(importlib.import_module(module), name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            entered.set()
            assert go.wait(10)
        return real(*args, **kwargs)

    return mock.patch(target, wrapper)


def race(target: str, first: Callable[[], Any], meanwhile: Callable[[], None]) -> Any:
    """Run `first` in a thread, held inside `target` (a services name) until
    `meanwhile` has run in this one; what `first` answered (or raised)."""
    entered, go = threading.Event(), threading.Event()
    with held(target, entered=entered, go=go):
        t, out = in_thread(first)
        try:
            assert entered.wait(10)
            meanwhile()
        finally:
            go.set()
            t.join(10)
    return out[0]


def answers(response: Any, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.content)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)
        finally:
            connections.close_all()

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_it_does_not_bring_back_a_schedule_deleted_while_patched(
    client: APIClient, make_job: Callable[..., Job], make_schedule: Any
) -> None:
    schedule = make_schedule("0 3 * * *", job=make_job())
    answer = race(
        "jobs.services.schedule_update",
        lambda: client.patch(
            f"/api/schedules/{schedule.pk}/", {"jitter": "00:00:05"}, format="json"
        ),
        meanwhile=lambda: answers(client.delete(f"/api/schedules/{schedule.pk}/"), 204),
    )
    # The DELETE answered 204: the schedule must stay deleted (the PATCH may 404/409).
    assert not Schedule.objects.filter(pk=schedule.pk).exists(), answer.status_code


def test_it_answers_a_patch_of_a_job_deleted_meanwhile_without_500(
    client: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    answer = race(
        "jobs.services.job_update",
        lambda: client.patch(
            f"/api/jobs/{job.pk}/", {"description": "x"}, format="json"
        ),
        meanwhile=lambda: answers(client.delete(f"/api/jobs/{job.pk}/"), 204),
    )
    assert answer.status_code in (404, 409), (answer.status_code, answer.content[:300])


def test_it_answers_disable_of_a_job_deleted_meanwhile_without_500(
    client: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    answer = race(
        "jobs.services.job_update",
        lambda: client.post(f"/api/jobs/{job.pk}/disable/"),
        meanwhile=lambda: answers(client.delete(f"/api/jobs/{job.pk}/"), 204),
    )
    assert answer.status_code in (404, 409), (answer.status_code, answer.content[:300])


def test_it_does_not_leave_a_pending_run_of_a_job_disabled_while_triggered(
    client: APIClient, make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    job = make_job()
    answer = race(
        "jobs.services.job_trigger",
        lambda: client.post(f"/api/jobs/{job.pk}/run/"),
        meanwhile=lambda: answers(client.post(f"/api/jobs/{job.pk}/disable/"), 200),
    )
    job.refresh_from_db()
    assert not job.enabled
    assert answer.status_code in (202, 409), answer.content
    # Whatever made it, a pending run of a disabled job does not start: the worker's
    # claim refuses it, and it ends skipped.
    assert_none_starts(job)


def assert_none_starts(job: Job) -> None:
    for execution in Execution.objects.filter(job=job, status="pending"):
        assert services.execution_run(execution_id=execution.pk, worker="w@t") is None
    statuses = set(job.executions.values_list("status", flat=True))
    assert statuses <= {"skipped"}, statuses
    assert not job.executions.filter(started_at__isnull=False).exists()


def test_it_does_not_start_a_scheduled_run_of_a_job_disabled_during_the_tick(
    client: APIClient,
    make_job: Callable[..., Job],
    make_schedule: Any,
    sent: mock.MagicMock,
) -> None:
    """Beat read the job as enabled, then the disable committed, then beat inserted
    the slot's run: it must not start."""
    job = make_job()
    make_schedule("* * * * *", job=job)
    later = timezone.now() + timedelta(minutes=2)
    with mock.patch("jobs.services.schedules.executions_send"):
        fired = race(
            "jobs.services.schedules._insert_executions",
            lambda: services.schedules_fire_due(now=later),
            meanwhile=lambda: answers(client.post(f"/api/jobs/{job.pk}/disable/"), 200),
        )
    assert fired == 1
    assert job.executions.exists()
    assert_none_starts(job)


def test_it_refuses_two_children_patches_that_make_a_cycle(
    client: APIClient, make_job: Callable[..., Job]
) -> None:
    a, b = make_job(name="a"), make_job(name="b")
    answer = race(
        "jobs.services.job_update",
        # B's children := [A]  (A runs after B), held after its object was read.
        lambda: client.patch(f"/api/jobs/{b.pk}/", {"children": [a.pk]}, format="json"),
        # Meanwhile A's children := [B]  (B runs after A).
        meanwhile=lambda: answers(
            client.patch(f"/api/jobs/{a.pk}/", {"children": [b.pk]}, format="json"),
            200,
        ),
    )
    cycle = a.parents.filter(pk=b.pk).exists() and b.parents.filter(pk=a.pk).exists()
    assert not cycle, (answer.status_code, answer.content[:300])


def test_it_does_not_cache_job_stats_from_before_a_concurrent_end(
    client: APIClient, make_job: Callable[..., Job]
) -> None:
    from jobs import redis_batch, stats

    job = make_job()
    execution = Execution.objects.create(
        job=job, status=Execution.Status.RUNNING, started_at=timezone.now()
    )
    computed, go = threading.Event(), threading.Event()
    real_set = stats._cache_set

    def slow_set(key: str, *args: Any, **kwargs: Any) -> Any:
        if key.startswith("stats:job:") and (
            threading.current_thread() is not threading.main_thread()
        ):
            computed.set()
            assert go.wait(10)
        return real_set(key, *args, **kwargs)

    with mock.patch.object(stats, "_cache_set", slow_set):
        t, out = in_thread(lambda: client.get(f"/api/jobs/{job.pk}/stats/"))
        assert computed.wait(10)
        run = Execution.objects.select_related("job").get(pk=execution.pk)
        services.execution_finish(
            execution=run, outcome=Outcome(status=Execution.Status.SUCCEEDED)
        )
        redis_batch.batch.flush()  # the end's invalidation, sent now, not in 0.05 s
        go.set()
        t.join(10)
    assert out[0].status_code == 200
    now = client.get(f"/api/jobs/{job.pk}/stats/").json()
    assert now["success_count"] == 1 and now["executions"]["succeeded"] == 1, now


def test_it_counts_every_one_of_concurrent_ends(make_job: Callable[..., Job]) -> None:
    job = make_job()
    n = 8
    runs = [
        Execution.objects.create(
            job=job, status=Execution.Status.RUNNING, started_at=timezone.now()
        )
        for _ in range(n)
    ]
    barrier = threading.Barrier(n)

    def finish(pk: int, ok: bool) -> None:
        run = Execution.objects.select_related("job").get(pk=pk)
        barrier.wait()
        services.execution_finish(
            execution=run,
            outcome=Outcome(status="succeeded" if ok else "failed"),
        )

    with mock.patch("jobs.tasks.run_execution.apply_async"):
        threads = [
            in_thread(lambda pk=r.pk, i=i: finish(pk, i % 2 == 0))[0]
            for i, r in enumerate(runs)
        ]
        for t in threads:
            t.join(20)
    job.refresh_from_db()
    assert (job.success_count, job.error_count) == (n // 2, n // 2)


def test_it_answers_two_retries_at_once_with_one_retry(
    client: APIClient, make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    job = make_job()
    failed = Execution.objects.create(
        job=job, status="failed", started_at=timezone.now(), finished_at=timezone.now()
    )
    barrier = threading.Barrier(2)

    def retry() -> Any:
        barrier.wait()
        return client.post(f"/api/executions/{failed.pk}/retry/")

    pairs = [in_thread(retry) for _ in range(2)]
    for t, _ in pairs:
        t.join(10)
    codes = sorted(out[0].status_code for _, out in pairs)
    assert codes == [202, 409]
    assert Execution.objects.filter(retry_of=failed).count() == 1


def test_it_answers_two_renames_to_one_name_with_409(
    client: APIClient, make_job: Callable[..., Job]
) -> None:
    a, b = make_job(name="a"), make_job(name="b")
    answer = race(
        "jobs.services.job_update",
        lambda: client.patch(f"/api/jobs/{a.pk}/", {"name": "same"}, format="json"),
        meanwhile=lambda: answers(
            client.patch(f"/api/jobs/{b.pk}/", {"name": "same"}, format="json"), 200
        ),
    )
    answers(answer, 409)


def test_it_answers_a_schedule_for_a_job_deleted_meanwhile_with_4xx(
    client: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    answer = race(
        "jobs.services.schedule_create",
        lambda: client.post(
            "/api/schedules/", {"job": job.pk, "expression": "0 3 * * *"}, format="json"
        ),
        meanwhile=lambda: answers(client.delete(f"/api/jobs/{job.pk}/"), 204),
    )
    assert answer.status_code in (400, 404, 409), answer.content
    assert not Schedule.objects.exists()


def test_it_answers_a_run_of_a_job_deleted_meanwhile_with_4xx(
    client: APIClient, make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    job = make_job()
    answer = race(
        "jobs.services.job_trigger",
        lambda: client.post(f"/api/jobs/{job.pk}/run/"),
        meanwhile=lambda: answers(client.delete(f"/api/jobs/{job.pk}/"), 204),
    )
    assert answer.status_code in (404, 409), answer.content
    assert sent.call_count == 0


def test_it_answers_pause_and_kill_at_once_consistently(
    client: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    run = Execution.objects.create(
        job=job, status="running", started_at=timezone.now(), worker="w1"
    )
    answer = race(
        "jobs.services.execution_control",
        lambda: client.post(f"/api/executions/{run.pk}/pause/"),
        meanwhile=lambda: answers(client.post(f"/api/executions/{run.pk}/kill/"), 202),
    )
    run.refresh_from_db()
    assert run.desired_state == "kill"
    answers(answer, 409)


def test_it_answers_a_patch_of_an_app_deleted_meanwhile_with_404(
    client: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("doomed")
    answer = race(
        "jobs.services.app_update",
        lambda: client.patch("/api/apps/doomed/", {"description": "x"}, format="json"),
        meanwhile=lambda: answers(client.delete("/api/apps/doomed/"), 204),
    )
    answers(answer, 404)
    assert not App.objects.exists()
