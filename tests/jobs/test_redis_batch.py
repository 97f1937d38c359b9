"""Stats and metrics writes gathered per process and sent together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone
from django_redis import get_redis_connection
from redis.client import Pipeline

from jobs import metrics, services, stats
from jobs.models import Execution, Job
from jobs.redis_batch import Batch
from jobs.runners import Outcome
from tests.integration.conftest import Processes, processes, queue  # noqa: F401
from tests.waiting import wait_for

KEY = "karmchari:test:redis-batch"


@pytest.fixture
def redis() -> Any:
    connection = get_redis_connection("default")
    connection.delete(KEY, f"{KEY}:gone")
    yield connection
    connection.delete(KEY, f"{KEY}:gone")


def test_it_sends_what_it_gathered_in_one_pipeline_with_sums(redis: Any) -> None:
    batch = Batch()
    redis.set(f"{KEY}:gone", 1)
    batch.delete(f"{KEY}:gone")
    batch.delete(f"{KEY}:gone")
    for seconds in (0.5, 2.0):
        batch.hincrby(KEY, "count", 1)
        batch.hincrbyfloat(KEY, "sum", seconds)
    with mock.patch.object(
        Pipeline, "execute", autospec=True, side_effect=Pipeline.execute
    ) as sent:
        assert batch.flush() == 3  # one DEL, one HINCRBY, one HINCRBYFLOAT
    assert sent.call_count == 1
    assert not redis.exists(f"{KEY}:gone")
    assert redis.hgetall(KEY) == {b"count": b"2", b"sum": b"2.5"}
    assert batch.flush() == 0  # nothing left, nothing sent


@override_settings(KARMCHARI_REDIS_BATCH_SECONDS=0)
def test_it_sends_at_once_when_batching_is_off(redis: Any) -> None:
    batch = Batch()
    batch.hincrby(KEY, "count", 1)
    batch.send()
    assert redis.hget(KEY, "count") == b"1"


@override_settings(KARMCHARI_REDIS_BATCH_SECONDS=0.01)
def test_it_sends_the_batch_soon_from_its_thread(redis: Any) -> None:
    batch = Batch()
    for _ in range(3):
        batch.hincrby(KEY, "count", 1)
        batch.send()
    assert wait_for(lambda: redis.hget(KEY, "count") == b"3", timeout=5)
    batch.hincrby(KEY, "count", 1)
    batch.send()  # the same thread, a second round
    assert wait_for(lambda: redis.hget(KEY, "count") == b"4", timeout=5)


def test_it_gives_a_forked_process_a_batch_of_its_own(redis: Any) -> None:
    batch = Batch()
    batch.hincrby(KEY, "count", 1)  # the parent's, sent by the parent
    with mock.patch("jobs.redis_batch.os.getpid", return_value=-1):
        batch.hincrby(KEY, "count", 5)
        assert batch.flush() == 1
    assert redis.hget(KEY, "count") == b"5"


def test_it_never_raises_when_redis_is_down() -> None:
    batch = Batch()
    batch.hincrby(KEY, "count", 1)
    with mock.patch(
        "jobs.redis_batch.get_redis_connection", side_effect=ConnectionError("down")
    ):
        assert batch.flush() == 1


@pytest.mark.django_db
@override_settings(KARMCHARI_REDIS_BATCH_SECONDS=60)
def test_it_puts_an_end_in_the_stats_and_metrics_once_its_batch_is_sent(
    make_execution: Callable[..., Execution],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    from jobs.redis_batch import batch

    batch.flush()
    execution = make_execution(
        status=Execution.Status.RUNNING, started_at=timezone.now()
    )
    stats.stats_job(job=execution.job)  # cached
    get_redis_connection("default").delete(metrics.DURATION_KEY)
    with django_capture_on_commit_callbacks(execute=True):
        services.execution_finish(
            execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
        )
    assert cache.get(stats._job_key(execution.job_id)) is not None  # not sent yet
    batch.flush()  # what the sender thread does 60 s later here
    assert cache.get(stats._job_key(execution.job_id)) is None
    count = get_redis_connection("default").hget(
        metrics.DURATION_KEY, f"{execution.job_id}|count"
    )
    assert count == b"1"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_it_sends_what_a_real_worker_holds_when_the_worker_stops(
    processes: Processes,  # noqa: F811
    queue: str,  # noqa: F811
    make_app: Callable[..., Any],
) -> None:
    get_redis_connection("default").delete(metrics.DURATION_KEY)
    # Batching on in the worker (the tests' own default is 0, to look at once), with
    # a delay so long that the batches can only leave when the worker stops.
    worker = processes.worker(queue, KARMCHARI_REDIS_BATCH_SECONDS="600")
    job = services.job_create(
        app=make_app("batch"),
        name="quick",
        spec={"command": "true"},
        queue=queue,
        overlap_policy=Job.OverlapPolicy.ALLOW_ALL,
    )
    for _ in range(4):
        services.job_trigger(job=job)
    wait_for(
        lambda: Execution.objects.filter(job=job, status="succeeded").count() == 4,
        timeout=60,
    )
    stats.stats_job(job=job)  # cached; the worker's DELs are still held
    redis = get_redis_connection("default")
    assert redis.hget(metrics.DURATION_KEY, f"{job.pk}|count") is None
    worker.terminate()  # a warm shutdown: each pool process sends what it holds
    worker.wait(timeout=30)
    assert redis.hget(metrics.DURATION_KEY, f"{job.pk}|count") == b"4"
    assert cache.get(stats._job_key(job.pk)) is None
