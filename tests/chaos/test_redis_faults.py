"""Redis (cache, live state and broker) restarted or away while executions run and
schedules fire: every execution ends, its output is in the database, none runs twice.

The worker and beat use a Redis of the test's own with no persistence, so a restart
loses every queued message, live stamp and log stream it held; what must bring it
all back is the database and the outbox sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs import services
from jobs.models import Execution, Job, Schedule
from tests.chaos.conftest import LONG, RedisServer, slot_gaps, start_beat
from tests.integration.conftest import Processes
from tests.waiting import wait_for

FINAL = Execution.FINAL_STATUSES

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


def run_through_outages(
    *,
    processes: Processes,
    redis_server: RedisServer,
    queue: str,
    job: Job,
    schedule: Schedule,
    runs: Path,
    outages: list[float],
) -> int:
    """Worker and beat on `redis_server`; stop it for each of `outages` seconds.

    The worker is supervised as in production (compose `restart:`, systemd): when it
    exits it is started again. Answers how many times that was needed (none since
    the kombu fix below). Checks that nothing was lost and nothing ran twice.
    """
    env = {
        "REDIS_URL": redis_server.url(0),
        "CELERY_BROKER_URL": redis_server.url(1),
        "CELERY_RESULT_BACKEND": redis_server.url(0),
        # Pending runs whose message was lost are sent again after 2 s.
        "KARMCHARI_OUTBOX_SECONDS": "2",
        # Liveness on a short fuse, with the database copy of heartbeats refreshed
        # as rarely as by default: only Redis keeps a healthy agent alive.
        "KARMCHARI_HEARTBEAT_SECONDS": "0.5",
        "KARMCHARI_AGENT_WINDOW_SECONDS": "2",
        "KARMCHARI_AGENT_DB_SECONDS": "30",
    }
    workers = [processes.worker(queue, concurrency=4, **env)]

    def supervise() -> None:
        if workers[-1].poll() is not None:
            workers.append(processes.worker(queue, concurrency=4, **env))

    def at_least(count: int, since: float = 0.0) -> bool:
        supervise()
        return done.filter(finished_at__gt=_aware(since)).count() >= count

    start_beat(processes, "beat", **env)
    done = Execution.objects.filter(job=job, status="succeeded")
    wait_for(lambda: at_least(3), timeout=30)
    for seconds in outages:
        redis_server.stop()
        back_at = time.monotonic() + seconds
        wait_for(lambda: time.monotonic() >= back_at, timeout=seconds + 5)  # noqa: B023
        redis_server.start()
        restarted = time.time()
        wait_for(lambda: at_least(3, since=restarted), timeout=45)  # noqa: B023
    services.schedule_update(schedule=schedule, enabled=False)
    everything = Execution.objects.filter(job=job)
    wait_for(
        lambda: supervise() or not everything.exclude(status__in=FINAL).exists(),
        timeout=45,
    )

    # Each slot ran to success, itself or (if its worker died under it) its retry.
    unfinished = []
    for execution in Execution.objects.filter(schedule=schedule):
        last = execution
        while last.status == "lost" and (retry := last.retries.first()) is not None:
            last = retry
        if last.status != "succeeded":
            unfinished.append((execution.pk, last.pk, last.status, last.reason))
    assert unfinished == []
    succeeded = list(done)
    assert [e.pk for e in succeeded if e.output != f"run {e.pk}\n"] == []
    ran = [int(line) for line in runs.read_text().split()]
    assert len(ran) == len(set(ran))  # no execution ran twice
    assert {e.pk for e in succeeded} <= set(ran)
    assert slot_gaps(schedule) == []
    return len(workers) - 1


def _aware(timestamp: float) -> object:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, tz=UTC)


@pytest.fixture
def fault_job(
    queue: str,
    tmp_path: Path,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
) -> tuple[Job, Schedule, Path]:
    runs = tmp_path / "runs"
    job = make_job(
        f'echo "run $KARMCHARI_EXECUTION_ID"; echo $KARMCHARI_EXECUTION_ID >> {runs}; '
        "sleep 0.7",
        queue=queue,
        overlap_policy="allow_all",
        max_retries=1,
        retry_backoff=0,
    )
    schedule = make_schedule("*/1 * * * * *", job=job, misfire_policy="run_all")
    return job, schedule, runs


# Celery 5.7 / kombu 5.7 with a Redis broker: when the broker connection was lost,
# the consumer's cleanup (Channel.close -> restore_unacked -> _connparams) raised
# AttributeError ('NoneType' object has no attribute 'hostname') and the worker
# exited with "Unrecoverable error" (every time the broker stayed away for a moment).
# karmchari_site/kombu_fixes.py fixes it: the worker must ride out every outage
# itself. It is still supervised, as in production, so that a regression fails the
# assertion below instead of stalling the test.


def test_it_loses_nothing_when_redis_restarts_while_jobs_run(
    processes: Processes,
    own_redis: RedisServer,
    queue: str,
    fault_job: tuple[Job, Schedule, Path],
) -> None:
    job, schedule, runs = fault_job
    restarts = run_through_outages(
        processes=processes,
        redis_server=own_redis,
        queue=queue,
        job=job,
        schedule=schedule,
        runs=runs,
        outages=[0.0] * (5 if LONG else 1),
    )
    assert restarts == 0, "the worker exited when Redis restarted"


def test_it_delivers_what_fired_while_the_broker_was_away(
    processes: Processes,
    own_redis: RedisServer,
    queue: str,
    fault_job: tuple[Job, Schedule, Path],
) -> None:
    job, schedule, runs = fault_job
    restarts = run_through_outages(
        processes=processes,
        redis_server=own_redis,
        queue=queue,
        job=job,
        schedule=schedule,
        runs=runs,
        outages=[60.0] if LONG else [10.0],
    )
    assert restarts == 0, "the worker exited while the broker was away"
    outage = Execution.objects.filter(schedule=schedule, dispatched_at__isnull=False)
    # Slots fired while Redis was down were still recorded and run once each.
    assert outage.count() >= 10
