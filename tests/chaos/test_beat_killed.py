"""Beat killed with SIGKILL, mid-tick, then started again: no slot lost or doubled."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from jobs.models import Execution, Job, Schedule
from tests.chaos.conftest import LONG, kill_group, slot_gaps, start_beat
from tests.integration.conftest import Processes
from tests.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

# Enough per-second schedules that a tick (insert, advance, send) takes a good part
# of each second, so a kill at a random moment often lands inside one.
SCHEDULES = 200


def test_it_loses_and_doubles_no_slot_when_beat_is_killed_mid_tick(
    processes: Processes,
    queue: str,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
) -> None:
    schedules = [
        make_schedule(
            "*/1 * * * * *",
            job=make_job(queue=queue, overlap_policy="allow_all"),
            misfire_policy="run_all",
        )
        for _ in range(SCHEDULES)
    ]
    first_due = {s.pk: s.next_run_at for s in schedules}
    fired = Execution.objects.filter(schedule__in=schedules)
    rng = random.Random()
    for cycle in range(20 if LONG else 3):
        beat = start_beat(processes, f"beat-{cycle}")
        before = fired.count()
        wait_for(lambda: fired.count() > before, timeout=30)  # noqa: B023
        # Kill at a random moment within the next second and a half.
        kill_at = time.monotonic() + rng.uniform(0.0, 1.5)
        wait_for(lambda: time.monotonic() >= kill_at, timeout=5)  # noqa: B023
        kill_group(beat)

    beat = start_beat(processes, "beat-last")
    restarted = time.time()
    wait_for(
        lambda: all(
            (latest := fired.filter(schedule=s).order_by("-scheduled_for").first())
            and latest.scheduled_for.timestamp() >= restarted + 1
            for s in schedules
        ),
        timeout=30,
    )
    beat.terminate()
    assert beat.wait(timeout=15) == 0

    for schedule in schedules:
        assert slot_gaps(schedule) == [], schedule
    # None lost its first slots either.
    firsts = {
        s.pk: fired.filter(schedule=s).order_by("scheduled_for")[0].scheduled_for
        for s in schedules
    }
    assert firsts == first_due
    assert fired.count() == len(set(fired.values_list("schedule", "scheduled_for")))
