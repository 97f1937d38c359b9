"""A real beat and a real worker fire an every-second schedule."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs.models import Execution, Job, Schedule
from tests.integration.conftest import Processes
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_it_fires_every_second_on_real_processes(
    processes: Processes,
    queue: str,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
) -> None:
    job = make_job("echo tick", queue=queue, overlap_policy="allow_all")
    schedule = make_schedule("*/1 * * * * *", job=job)
    processes.worker(queue, concurrency=4)
    beat = processes.beat()

    def eight_done() -> list[Execution] | None:
        done = list(
            Execution.objects.filter(schedule=schedule, status="succeeded").order_by(
                "scheduled_for"
            )
        )
        return done if len(done) >= 8 else None

    done = wait_for(eight_done, timeout=60)
    slots = [e.scheduled_for for e in done]
    assert len(set(slots)) == len(slots)  # one execution per slot
    assert all(e.output == "tick\n" for e in done)
    # Slot to start: beat lag + broker + worker pickup, once the worker is up (the
    # first slots wait for its pool to start). Generous for a loaded CI box.
    lags = [(e.started_at - e.scheduled_for).total_seconds() for e in done[-4:]]
    assert max(lags) < 2.0, lags
    assert not Execution.objects.filter(schedule=schedule, status="skipped").exists()

    # Beat stops cleanly and promptly on SIGTERM, even while waiting for a slot.
    beat.terminate()
    assert beat.wait(timeout=10) == 0
