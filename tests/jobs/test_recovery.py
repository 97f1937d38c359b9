from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from jobs import services
from jobs.models import Execution, Job
from jobs.recovery import executions_recover_lost

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def sent() -> Iterator[mock.MagicMock]:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


@pytest.fixture
def agent(db: None) -> Agent:
    return Agent.objects.create(
        name="q@box1", instance_id=uuid.uuid4(), queues=["q"], last_heartbeat=T0
    )


def running_on(
    make_execution: Callable[..., Execution], worker: str, **fields: object
) -> Execution:
    fields.setdefault("status", Execution.Status.RUNNING)
    return make_execution(worker=worker, started_at=timezone.now(), **fields)


def test_it_marks_the_swept_agents_executions_lost_and_retries_them(
    agent: Agent,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable[..., object],
) -> None:
    job = make_job(max_retries=2, queue="q")
    running = running_on(make_execution, "q@box1", job=job)
    paused = running_on(make_execution, "q@box1", status=Execution.Status.PAUSED)
    elsewhere = running_on(make_execution, "other@box2")
    done = running_on(make_execution, "q@box1", status=Execution.Status.SUCCEEDED)

    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[attr-defined]
        assert agent_services.agents_sweep_stale(now=T0 + timedelta(hours=1)) == [agent]

    running.refresh_from_db()
    assert running.status == Execution.Status.LOST
    assert "Its agent q@box1 went offline. No heartbeat since" in running.reason
    assert running.finished_at is not None
    assert Execution.objects.get(pk=paused.pk).status == Execution.Status.LOST
    assert Execution.objects.get(pk=elsewhere.pk).status == Execution.Status.RUNNING
    assert Execution.objects.get(pk=done.pk).status == Execution.Status.SUCCEEDED

    retry = Execution.objects.get(retry_of=running)
    assert (retry.status, retry.trigger, retry.attempt) == ("pending", "retry", 2)
    assert retry.job_id == job.pk
    sent.assert_any_call((retry.pk,), queue="q", countdown=mock.ANY, producer=mock.ANY)
    # The paused one's job has max_retries=0: lost for good.
    assert not Execution.objects.filter(retry_of=paused).exists()
    job.refresh_from_db()
    assert job.error_count == 1


def test_it_matches_by_the_agent_foreign_key_too(
    agent: Agent, make_execution: Callable[..., Execution]
) -> None:
    execution = running_on(make_execution, "", agent=agent)
    assert executions_recover_lost(agent=agent) == [execution]


def test_it_keeps_what_a_lost_run_printed_as_its_output(
    agent: Agent, make_execution: Callable[..., Execution]
) -> None:
    from jobs import logs

    execution = running_on(make_execution, "q@box1")
    writer = logs.LogWriter(execution.pk)
    writer.write(b"tick 1\ntick 2\n")
    writer.flush()
    silent = running_on(make_execution, "q@box1")

    executions_recover_lost(agent=agent)

    execution.refresh_from_db()
    assert (execution.status, execution.output) == ("lost", "tick 1\ntick 2\n")
    assert Execution.objects.get(pk=silent.pk).output == ""


def test_it_stops_retrying_after_max_retries(
    agent: Agent,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    job = make_job(max_retries=1)
    last = running_on(make_execution, "q@box1", job=job, attempt=2)
    executions_recover_lost(agent=agent)
    assert Execution.objects.get(pk=last.pk).status == Execution.Status.LOST
    assert not Execution.objects.filter(retry_of=last).exists()


def test_it_does_not_retry_jobs_that_were_disabled(
    agent: Agent,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    execution = running_on(
        make_execution, "q@box1", job=make_job(max_retries=3, enabled=False)
    )
    executions_recover_lost(agent=agent)
    assert not Execution.objects.filter(retry_of=execution).exists()


def test_it_does_not_retry_a_run_asked_to_die_and_lets_the_buffered_run_start(
    agent: Agent,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable[..., object],
) -> None:
    """Asked to die (cancel_other, for the run buffered behind it), the run is lost
    with its agent before acting on it: a kill is final, so no retry takes the
    place the buffered run waits for."""
    job = make_job(overlap_policy="cancel_other", max_retries=3, queue="q")
    cancelled = running_on(make_execution, "q@box1", job=job)
    with mock.patch("jobs.control.publish"):
        services.execution_kill_active(job_id=job.pk, immediate=False, why="x")
    held = make_execution(job=job)  # buffered: never dispatched
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[attr-defined]
        assert executions_recover_lost(agent=agent) == [cancelled]
    assert not Execution.objects.filter(retry_of=cancelled).exists()
    held.refresh_from_db()
    assert held.dispatched_at is not None
    assert [call.args[0][0] for call in sent.call_args_list] == [held.pk]


def test_it_recovers_each_execution_once(
    agent: Agent,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    execution = running_on(make_execution, "q@box1", job=make_job(max_retries=3))
    assert executions_recover_lost(agent=agent) == [execution]
    assert executions_recover_lost(agent=agent) == []
    assert Execution.objects.filter(retry_of=execution).count() == 1


def test_it_never_runs_a_lost_execution_when_the_broker_redelivers_it(
    agent: Agent,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    execution = running_on(make_execution, "q@box1", job=make_job(max_retries=1))
    executions_recover_lost(agent=agent)
    with mock.patch("jobs.services.executions.get_runner") as get_runner:
        # acks_late: the dead worker's message comes back to another worker.
        assert services.execution_run(execution_id=execution.pk, worker="b@x") is None
    get_runner.assert_not_called()
    execution.refresh_from_db()
    assert execution.status == Execution.Status.LOST
    assert execution.worker == "q@box1"


def test_it_keeps_the_outcome_of_a_run_that_finished_meanwhile(
    agent: Agent, make_execution: Callable[..., Execution]
) -> None:
    execution = running_on(make_execution, "q@box1")
    real_update = Execution.objects.filter(pk=execution.pk).update

    original_filter = Execution.objects.filter

    calls = []

    def finish_first(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        if len(calls) == 2:
            # The race: the worker finishes between the read and the conditional
            # write (the first call is the read).
            real_update(status=Execution.Status.SUCCEEDED)
        return original_filter(*args, **kwargs)

    with mock.patch.object(Execution.objects, "filter", side_effect=finish_first):
        assert executions_recover_lost(agent=agent) == []
    assert len(calls) == 2
    assert Execution.objects.get(pk=execution.pk).status == Execution.Status.SUCCEEDED


def test_it_counts_a_lost_run_as_an_error_but_not_in_the_average_duration(
    agent: Agent, make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    job = make_job(success_count=1, duration_total=10.0)
    running_on(make_execution, agent.name, job=job)
    executions_recover_lost(agent=agent)
    job.refresh_from_db()
    assert (job.error_count, job.untimed_count) == (1, 1)
    assert job.average_duration == 10.0


def test_it_sends_a_lost_run_s_failure_notifications(
    agent: Agent,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    from jobs.models import NotificationChannel, NotificationDelivery, NotificationRule

    job = make_job()
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="http://127.0.0.1:9/"
    )
    NotificationRule.objects.create(channel=channel, job=job, events=["failure"])
    lost = running_on(make_execution, agent.name, job=job)
    with (
        mock.patch("jobs.tasks.deliver_notification.delay"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        executions_recover_lost(agent=agent)
    assert NotificationDelivery.objects.filter(execution=lost, event="failure").exists()


def test_it_keeps_an_external_run_a_worker_took_up_when_that_worker_stops(
    make_job: Callable[..., Job],
) -> None:
    """A scheduled (or retried) external run is flipped to running by whichever
    Celery worker claims it; its process runs elsewhere. That worker's clean
    shutdown must not mark the external run lost (and start a second one)."""
    agent = Agent.objects.create(name="w1@box", instance_id=uuid.uuid4(), queues=["q"])
    job = make_job(kind=Job.Kind.EXTERNAL, spec={}, max_retries=2, queue="q")
    fired = Execution.objects.create(job=job, trigger=Execution.Trigger.SCHEDULE)
    with mock.patch("jobs.tasks.run_execution.apply_async"):
        run = services.execution_run(execution_id=fired.pk, worker="w1@box")
        assert run is not None and run.status == Execution.Status.RUNNING
        agent_services.agent_mark_offline(agent=agent, reason="warm shutdown")
    fired.refresh_from_db()
    assert fired.status == Execution.Status.RUNNING, (fired.worker, fired.reason)
    assert not Execution.objects.filter(retry_of=fired).exists()
