"""The database drops the worker's and beat's connections (pg_terminate_backend, as
a restart or failover would) during beat ticks and while runs are finishing: both
recover without an operator, no slot is lost, no run is left `running`."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.db import connection

from jobs import services
from jobs.models import Execution, Job, Schedule
from tests.chaos.conftest import LONG, not_final, slot_gaps, start_beat
from tests.integration.conftest import Processes
from tests.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


def terminate_other_backends() -> int:
    """Drop every connection to the test database but this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def test_it_recovers_from_dropped_database_connections(
    processes: Processes,
    queue: str,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend needs PostgreSQL")
    # Runs long enough that the worker's connection sits idle while they run, so
    # the drop is first noticed by the write that records their end.
    job = make_job(
        'echo "run $KARMCHARI_EXECUTION_ID"; sleep 1.2',
        queue=queue,
        overlap_policy="allow_all",
    )
    schedule = make_schedule("*/1 * * * * *", job=job, misfire_policy="run_all")
    processes.worker(queue, concurrency=4)
    start_beat(processes, "beat")
    done = Execution.objects.filter(schedule=schedule, status="succeeded")
    wait_for(lambda: done.count() >= 2, timeout=30)

    dropped = 0
    for _ in range(15 if LONG else 4):
        dropped += terminate_other_backends()
        # At a different phase of beat's one-second tick each time.
        next_at = time.monotonic() + 0.7
        wait_for(lambda: time.monotonic() >= next_at, timeout=5)  # noqa: B023
    assert dropped > 0
    after = time.time()
    from datetime import UTC, datetime

    since = datetime.fromtimestamp(after, tz=UTC)
    # Beat fires again and the worker records the ends of runs again.
    wait_for(lambda: done.filter(finished_at__gt=since).count() >= 3, timeout=30)
    services.schedule_update(schedule=schedule, enabled=False)
    wait_for(lambda: not not_final(schedule), timeout=30)

    executions = list(Execution.objects.filter(schedule=schedule))
    assert [
        (e.pk, e.status, e.reason) for e in executions if e.status != "succeeded"
    ] == []
    assert [e.pk for e in executions if e.output != f"run {e.pk}\n"] == []
    assert slot_gaps(schedule) == []
