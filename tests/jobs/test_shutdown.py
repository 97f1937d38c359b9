"""A stopping worker kills the runs still going after its grace (jobs/shutdown.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

from jobs import shutdown
from jobs.models import Execution, ExecutionEvent, Job

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "w1@host"


def test_it_kills_the_runs_of_the_stopping_worker_only(
    make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    job = make_job()
    running = make_execution(job=job, status="running", worker=WORKER)
    paused = make_execution(job=job, status="paused", worker=WORKER)
    elsewhere = make_execution(job=job, status="running", worker="w2@host")
    ended = make_execution(job=job, status="succeeded", worker=WORKER)
    pending = make_execution(job=job)

    with mock.patch("jobs.control.publish") as publish:
        assert shutdown.runs_kill(worker=WORKER) == 2

    told = {call.kwargs["execution_id"] for call in publish.call_args_list}
    assert told == {running.pk, paused.pk}
    states = dict(Execution.objects.values_list("pk", "desired_state"))
    assert states[running.pk] == states[paused.pk] == "kill"
    assert states[elsewhere.pk] == states[ended.pk] == states[pending.pk] == "run"
    event = ExecutionEvent.objects.get(execution=running)
    assert (event.action, event.actor, event.detail) == (
        "kill",
        None,
        "The worker w1@host was stopping.",
    )


def test_it_tells_a_run_being_killed_again(
    make_execution: Callable[..., Execution],
) -> None:
    """Harmless (a kill is final), and the trail says the worker asked too."""
    make_execution(status="running", worker=WORKER, desired_state="kill")
    with mock.patch("jobs.control.publish") as publish:
        assert shutdown.runs_kill(worker=WORKER) == 1
    assert publish.call_count == 1 and ExecutionEvent.objects.count() == 1


def test_it_waits_for_the_runs_when_no_grace_is_set(settings: Any) -> None:
    settings.KARMCHARI_WORKER_STOP_GRACE = float("inf")
    with mock.patch.object(shutdown, "runs_kill") as runs_kill:
        assert shutdown.on_worker_stopping(worker=WORKER, how="Warm") is None
    runs_kill.assert_not_called()


@pytest.mark.parametrize(
    ("grace", "how", "waited"),
    [(3.0, "Warm", 3.0), (float("inf"), "Cold", 0.0), (3.0, "Cold", 0.0)],
)
def test_it_kills_after_the_grace_or_at_once_on_a_cold_shutdown(
    settings: Any, grace: float, how: str, waited: float
) -> None:
    settings.KARMCHARI_WORKER_STOP_GRACE = grace
    with (
        mock.patch.object(shutdown, "runs_kill", return_value=1) as runs_kill,
        mock.patch("jobs.shutdown.sleep") as sleep,
    ):
        thread = shutdown.on_worker_stopping(worker=WORKER, how=how)
        assert thread is not None
        thread.join(5)
    sleep.assert_called_once_with(waited)
    runs_kill.assert_called_once_with(worker=WORKER)
