"""jobs.services.executions: triggering, claiming, running and ending runs;
automatic retries, dependants, dropped connections."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError
from django.utils import timezone

from jobs import services
from jobs.models import Execution, Job
from jobs.runners import Outcome
from jobs.services import executions
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db


def test_it_sends_the_task_only_after_commit(
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job(queue="reports")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        execution = services.job_trigger(job=job)
        assert not sent.called
    assert len(callbacks) == 1
    sent.assert_called_once_with(
        (execution.pk,), queue="reports", countdown=None, producer=mock.ANY
    )
    assert execution.status == Execution.Status.PENDING
    assert execution.dispatched_at is not None


def test_it_refuses_to_run_a_disabled_job(make_job: Callable[..., Job]) -> None:
    job = make_job(enabled=False)
    with pytest.raises(services.Conflict, match="disabled"):
        services.job_trigger(job=job)
    assert not Execution.objects.exists()


def test_it_claims_an_execution_once(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution()
    first = services.execution_claim(execution_id=execution.pk, worker="w1")
    second = services.execution_claim(execution_id=execution.pk, worker="w2")
    assert first is not None and first.status == Execution.Status.RUNNING
    assert first.worker == "w1"
    assert second is None
    execution.job.refresh_from_db()
    assert execution.job.last_attempted_at == first.started_at


def test_it_runs_and_counts_a_success(make_execution: Callable[..., Execution]) -> None:
    execution = make_execution()
    services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.exit_code == 0
    assert execution.pid is not None
    assert execution.finished_at is not None
    job = execution.job
    job.refresh_from_db()
    assert (job.success_count, job.error_count) == (1, 0)
    assert job.last_success_at == execution.finished_at
    assert job.average_duration is not None


def test_it_counts_a_failure(make_job: Callable[..., Job]) -> None:
    job = make_job("exit 4")
    execution = Execution.objects.create(job=job)
    services.execution_run(execution_id=execution.pk, worker="w")
    job.refresh_from_db()
    assert (job.success_count, job.error_count) == (0, 1)
    assert job.last_error_at is not None


def test_it_never_starts_a_pending_run_of_a_disabled_job(
    make_execution: Callable[..., Execution],
) -> None:
    """Made just before the disable committed (a trigger, a beat tick): the claim
    refuses it, and it ends skipped, its command not run."""
    execution = make_execution()
    Job.objects.filter(pk=execution.job_id).update(enabled=False)
    assert services.execution_run(execution_id=execution.pk, worker="w") is None
    execution.refresh_from_db()
    assert (execution.status, execution.pid) == (Execution.Status.SKIPPED, None)
    assert "disabled" in execution.reason
    assert execution.started_at is None


def test_it_ignores_an_execution_that_is_not_pending(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution(status=Execution.Status.SUCCEEDED)
    assert services.execution_run(execution_id=execution.pk, worker="w") is None
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED


def test_it_does_not_overwrite_a_final_status(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution(status=Execution.Status.LOST)
    services.execution_finish(
        execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
    )
    execution.refresh_from_db()
    assert execution.status == Execution.Status.LOST
    execution.job.refresh_from_db()
    assert execution.job.success_count == 0


def test_it_records_a_crashing_runner_as_failed(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution()
    with mock.patch("jobs.runners.shell.ShellRunner.run", side_effect=OSError("boom")):
        services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    assert execution.status == Execution.Status.FAILED
    assert execution.reason == "Runner error: boom"


def test_it_retries_a_failure_with_exponential_backoff_and_jitter(
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job("exit 1", max_retries=2, retry_backoff=10)
    execution = Execution.objects.create(job=job)

    def run_and_get_retry(execution: Execution) -> Execution | None:
        with (
            mock.patch(
                "jobs.services.executions.random.uniform", side_effect=lambda a, b: b
            ),
            django_capture_on_commit_callbacks(execute=True),
        ):
            services.execution_run(execution_id=execution.pk, worker="w")
        return Execution.objects.filter(retry_of=execution).first()

    retry = run_and_get_retry(execution)
    assert retry is not None
    assert (retry.trigger, retry.attempt, retry.status) == ("retry", 2, "pending")
    assert sent.call_args.kwargs["countdown"] == 10.0  # 5 fixed + up to 5 jitter
    # Not sent early by the outbox sweep: stamped with its due time.
    assert retry.dispatched_at is not None
    assert retry.dispatched_at > timezone.now() + timedelta(seconds=9)
    third = run_and_get_retry(retry)
    assert third is not None and third.attempt == 3
    assert sent.call_args.kwargs["countdown"] == 20.0
    assert run_and_get_retry(third) is None  # max_retries spent


def test_it_keeps_the_retry_delay_within_the_jitter_band() -> None:
    for attempt, base in ((1, 8.0), (2, 16.0), (3, 32.0)):
        delay = services.retry_delay(backoff=8, attempt=attempt)
        assert base / 2 <= delay <= base


def test_it_does_not_retry_a_success_or_a_kill(
    make_execution: Callable[..., Execution],
) -> None:
    killed = make_execution(status=Execution.Status.KILLED)
    killed.job.max_retries = 3
    assert services.execution_schedule_retry(execution=killed) is None


def test_it_ends_quietly_a_run_whose_job_is_deleted_while_it_runs(
    make_job: Callable[..., Job],
) -> None:
    class DeletingRunner:
        def validate(self, spec: Any) -> dict[str, Any]:
            return dict(spec)

        def run(self, spec: dict[str, Any], context: Any) -> Outcome:
            services.job_delete(job=Job.objects.get(name=context.job_name))
            return Outcome(status=Execution.Status.KILLED, exit_code=-15)

    execution = Execution.objects.create(job=make_job())
    with mock.patch.object(executions, "get_runner", return_value=DeletingRunner()):
        services.execution_run(execution_id=execution.pk, worker="w")
    assert not Execution.objects.exists()


def test_it_runs_children_after_the_parents_success_in_order(
    make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    parent = make_job("true")
    first, second = make_job(), make_job()
    disabled = make_job(enabled=False)
    for child in (first, second, disabled):
        child.parents.add(parent)
    execution = Execution.objects.create(job=parent)
    services.execution_run(execution_id=execution.pk, worker="w")
    runs = Execution.objects.filter(trigger="dependency").order_by("pk")
    assert [(r.job_id, r.status) for r in runs] == [
        (first.pk, "pending"),
        (second.pk, "pending"),
        (disabled.pk, "skipped"),
    ]
    assert "disabled" in runs[2].reason


def test_it_runs_a_child_linked_while_its_parent_ran(
    make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    parent, child = make_job(), make_job()
    claimed = services.execution_claim(
        execution_id=Execution.objects.create(job=parent).pk, worker="w"
    )
    assert claimed is not None
    child.parents.add(parent)  # after the claim looked at the job
    services.execution_finish(
        execution=claimed, outcome=Outcome(status=Execution.Status.SUCCEEDED)
    )
    assert Execution.objects.filter(job=child, trigger="dependency").exists()


def test_it_does_not_run_children_when_the_parent_fails(
    make_job: Callable[..., Job],
) -> None:
    parent = make_job("exit 2")
    make_job().parents.add(parent)
    services.execution_run(
        execution_id=Execution.objects.create(job=parent).pk, worker="w"
    )
    assert not Execution.objects.filter(trigger="dependency").exists()


def test_it_links_the_claim_to_the_workers_agent(
    make_execution: Callable[..., Execution],
) -> None:
    from agents.models import Agent

    agent = Agent.objects.create(name="q@box1")
    claimed = services.execution_claim(
        execution_id=make_execution().pk, worker="q@box1"
    )
    assert claimed is not None and claimed.agent_id == agent.pk
    unknown = services.execution_claim(execution_id=make_execution().pk, worker="x@y")
    assert unknown is not None and unknown.agent_id is None


@pytest.mark.django_db(transaction=True)
def test_it_retries_whole_a_claim_cut_short_by_a_dropped_connection(
    make_execution: Callable[..., Execution],
) -> None:
    from django.db import OperationalError, connection
    from django.db.models.query import QuerySet

    if connection.vendor == "postgresql":
        pytest.skip("the claim is one statement there: nothing to cut short")
    execution = make_execution()
    real_get = QuerySet.get
    calls = {"n": 0}

    def flaky_get(self: QuerySet, *args: object, **kwargs: object) -> object:
        # The claim's read after its UPDATE: the connection dies there, once.
        if self.model is Execution and calls["n"] == 0:
            calls["n"] += 1
            raise OperationalError("server closed the connection unexpectedly")
        return real_get(self, *args, **kwargs)

    with (
        mock.patch.object(QuerySet, "get", flaky_get),
        mock.patch("jobs.services.executions.time.sleep"),
        mock.patch("jobs.tasks.run_execution.apply_async"),
    ):
        services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    # Without the transaction the first UPDATE stayed: "running" for ever.
    assert execution.status == Execution.Status.SUCCEEDED
    assert calls["n"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_takes_up_a_claim_committed_but_unanswered_after_reconnecting(
    make_execution: Callable[..., Execution],
) -> None:
    from django.db import OperationalError, connection

    from jobs import pgsql

    execution = make_execution()
    postgres = connection.vendor == "postgresql"
    real = pgsql.claim if postgres else executions._claim_orm
    calls = {"n": 0}

    def answer_lost(**kwargs: Any) -> Execution | None:
        claimed = real(**kwargs)  # committed...
        calls["n"] += 1
        if calls["n"] == 1:  # ...but the connection dies before the answer arrives
            raise OperationalError("server closed the connection unexpectedly")
        return claimed

    with (
        mock.patch(
            "jobs.pgsql.claim" if postgres else "jobs.services.executions._claim_orm",
            answer_lost,
        ),
        mock.patch("jobs.services.executions.time.sleep"),
        mock.patch("jobs.tasks.run_execution.apply_async"),
    ):
        services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED
    assert calls["n"] == 2


def test_it_takes_up_its_own_claim_again_after_a_lost_answer(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution()
    now = timezone.now()
    first = services.execution_claim(execution_id=execution.pk, worker="w", now=now)
    # The commit went through but its answer was lost: execution_run asks again
    # with the same stamp and gets the run, where any other claim gets nothing.
    again = services.execution_claim(execution_id=execution.pk, worker="w", now=now)
    other = services.execution_claim(execution_id=execution.pk, worker="w")
    assert first is not None and again is not None and other is None
    assert again.started_at == first.started_at


@pytest.mark.django_db(transaction=True)
def test_it_still_sets_off_what_follows_an_end_committed_but_unanswered(
    make_job: Callable[..., Job],
) -> None:
    """The connection dies after the end's commit, before its answer: the retried
    end recognises its own stamp, counts the run once, and still releases the
    dependant job."""
    from django.db import OperationalError, connection

    from jobs import pgsql

    parent, child = make_job(name="parent"), make_job(name="child")
    services.job_set_parents(job=child, parents=[parent])
    execution = Execution.objects.create(job=parent)
    postgres = connection.vendor == "postgresql"
    real = pgsql.finish if postgres else executions._finish_orm
    calls = {"n": 0}

    def answer_lost(**kwargs: Any) -> bool:
        finished = real(**kwargs)  # committed...
        calls["n"] += 1
        if calls["n"] == 1:  # ...but the answer never arrives
            raise OperationalError("server closed the connection unexpectedly")
        return finished

    target = "jobs.pgsql.finish" if postgres else "jobs.services.executions._finish_orm"
    with (
        mock.patch(target, answer_lost),
        mock.patch("jobs.services.executions.time.sleep"),
        mock.patch("jobs.tasks.run_execution.apply_async") as sent,
    ):
        services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    parent.refresh_from_db()
    assert (execution.status, calls["n"]) == (Execution.Status.SUCCEEDED, 2)
    assert parent.success_count == 1
    released = Execution.objects.get(job=child)
    assert released.trigger == Execution.Trigger.DEPENDENCY
    sent.assert_called_once()


def test_it_forgets_stats_and_records_the_duration_in_one_redis_round_trip(
    make_execution: Callable[..., Execution],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    from django.core.cache import cache
    from redis.client import Pipeline

    from jobs import stats

    execution = make_execution(
        status=Execution.Status.RUNNING, started_at=timezone.now()
    )
    stats.stats_job(job=execution.job)  # cached
    assert cache.get(stats._job_key(execution.job_id)) is not None
    with (
        mock.patch.object(
            Pipeline, "execute", autospec=True, side_effect=Pipeline.execute
        ) as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.execution_finish(
            execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
        )
    assert sent.call_count == 1
    assert cache.get(stats._job_key(execution.job_id)) is None


def test_it_makes_an_external_job_s_retries_wait_for_their_backoff(
    api: Any,
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job(kind=Job.Kind.EXTERNAL, spec={}, max_retries=1, retry_backoff=600)
    run = api.post(f"/api/jobs/{job.pk}/run/").json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"/api/executions/{run}/report/", {"status": "failed"})
    retry = Execution.objects.get(retry_of_id=run)
    assert retry.status == Execution.Status.PENDING  # until a worker takes it, due
    assert sent.call_args.kwargs["countdown"] >= 300
    # By hand: at once, and answered as it is.
    other = Execution.objects.create(job=job, status=Execution.Status.FAILED)
    again = api.post(f"/api/executions/{other.pk}/retry/").json()
    assert again["status"] == "running"


def test_it_caps_the_retry_backoff(settings: Any) -> None:
    settings.KARMCHARI_RETRY_BACKOFF_MAX = 600
    assert services.retry_delay(backoff=10, attempt=3) <= 40
    for attempt in (8, 45, 5000):  # 2^4999 would overflow a float
        assert 300 <= services.retry_delay(backoff=10, attempt=attempt) <= 600
    # A backoff set above the cap is the job's own word for its first wait.
    assert 1800 <= services.retry_delay(backoff=3600, attempt=1) <= 3600


def test_it_gives_a_job_disabled_during_its_run_no_retry_and_skips_its_queued_runs(
    make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    job = make_job(max_retries=3)
    running = Execution.objects.create(job=job, status=Execution.Status.RUNNING)
    queued = Execution.objects.create(job=job)
    claimed_view = Execution.objects.select_related("job").get(pk=running.pk)
    services.job_update(job=job, enabled=False)
    queued.refresh_from_db()
    assert queued.status == Execution.Status.SKIPPED
    assert queued.reason == "Its job was disabled before it started."
    # The run's own copy of its job still says enabled: the retry asks the database.
    services.execution_finish(
        execution=claimed_view, outcome=Outcome(status=Execution.Status.FAILED)
    )
    assert not Execution.objects.filter(retry_of=running).exists()


@pytest.mark.parametrize("meanwhile", ["disable", "retry_by_hand"])
def test_it_makes_a_disable_or_a_retry_by_hand_wait_for_an_automatic_retry(
    make_job: Callable[..., Job],
    admin_user: Any,
    transactional_db: None,
    meanwhile: str,
) -> None:
    """The automatic retry holds its job's and its run's rows while it decides: a
    disable (which skips pending runs) or a retry by hand made meanwhile waits for
    it, then sees the retry: no pending run of a disabled job, never two retries."""
    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    job = make_job(max_retries=3, retry_backoff=1)
    failed = Execution.objects.create(
        job=job, status=Execution.Status.RUNNING, started_at=timezone.now()
    )
    deciding, go_on = threading.Event(), threading.Event()
    real_delay = executions.retry_delay
    answers: list[object] = []

    def slow_delay(**kwargs: Any) -> float:
        deciding.set()
        go_on.wait(10)
        return real_delay(**kwargs)

    def finish() -> None:
        run = Execution.objects.select_related("job").get(pk=failed.pk)
        services.execution_finish(
            execution=run, outcome=Outcome(status=Execution.Status.FAILED)
        )
        connections.close_all()

    def other() -> None:
        try:
            if meanwhile == "disable":
                services.job_update(job=Job.objects.get(pk=job.pk), enabled=False)
            else:
                services.execution_retry(
                    execution=Execution.objects.get(pk=failed.pk), user=admin_user
                )
            answers.append("done")
        except services.Conflict as exc:
            answers.append(exc)
        connections.close_all()

    def other_waits() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            return bool(cursor.fetchone()[0])

    with (
        mock.patch("jobs.services.executions.retry_delay", slow_delay),
        mock.patch("jobs.tasks.run_execution.apply_async"),
    ):
        first = threading.Thread(target=finish)
        first.start()
        assert deciding.wait(10)
        second = threading.Thread(target=other)
        second.start()
        assert wait_for(lambda: other_waits() or not second.is_alive(), timeout=10)
        go_on.set()
        first.join(10)
        second.join(10)
    retries = Execution.objects.filter(retry_of=failed)
    if meanwhile == "disable":
        assert answers == ["done"]
        assert not Execution.objects.filter(job=job, status="pending").exists()
    else:
        assert isinstance(answers[0], services.Conflict)  # "already being retried"
        assert retries.count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_releases_each_child_once_when_the_connection_drops_mid_release(
    make_job: Callable[..., Job],
) -> None:
    """The parent's end commits; releasing its children, the connection dies on the
    second child's INSERT. _with_reconnect runs execution_finish again, which sees
    its own stamp and releases *every* child again: the first child runs twice."""
    parent = make_job(name="parent")
    first, second = make_job(name="first"), make_job(name="second")
    services.job_set_parents(job=first, parents=[parent])
    services.job_set_parents(job=second, parents=[parent])
    execution = Execution.objects.create(job=parent)
    real = executions.job_trigger
    dropped = {"done": False}

    def trigger(**kwargs: Any) -> Execution:
        if kwargs["job"].pk == second.pk and not dropped["done"]:
            dropped["done"] = True
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    with (
        mock.patch("jobs.services.executions.job_trigger", trigger),
        mock.patch("jobs.services.executions.time.sleep"),
        mock.patch("jobs.tasks.run_execution.apply_async"),
    ):
        services.execution_run(execution_id=execution.pk, worker="w")
    assert dropped["done"]
    assert Execution.objects.filter(job=second).count() == 1
    assert Execution.objects.filter(job=first).count() == 1


@pytest.mark.parametrize("ended", [Execution.Status.FAILED, Execution.Status.TIMED_OUT])
def test_it_does_not_retry_a_run_asked_to_die_whatever_it_ended_as(
    make_job: Callable[..., Job], sent: mock.MagicMock, ended: str
) -> None:
    """A kill is final: a run that exited before its worker acted on the kill
    (failed), or was killed during its timeout's grace (timed out), is not run
    again."""
    job = make_job(max_retries=2, retry_backoff=1)
    claimed = services.execution_claim(
        execution_id=Execution.objects.create(job=job).pk, worker="w"
    )
    assert claimed is not None
    with mock.patch("jobs.control.publish"):
        services.execution_control(
            execution=Execution.objects.get(pk=claimed.pk), action="kill", user=None
        )
    services.execution_finish(execution=claimed, outcome=Outcome(status=ended))
    claimed.refresh_from_db()
    assert (claimed.status, claimed.desired_state) == (ended, "kill")
    assert not Execution.objects.filter(retry_of=claimed).exists()


def test_it_releases_a_buffered_run_when_the_policy_became_buffering_meanwhile(
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """The run was claimed under `skip`; the job switched to buffer_one while it
    ran, and a slot was buffered behind it. Its end goes by the policy as it is
    now, not as the claim loaded it."""
    job = make_job(overlap_policy="skip")
    claimed = services.execution_claim(
        execution_id=Execution.objects.create(job=job).pk, worker="w"
    )
    assert claimed is not None and claimed.job.overlap_policy == "skip"
    services.job_update(job=Job.objects.get(pk=job.pk), overlap_policy="buffer_one")
    held = Execution.objects.create(job=job)  # what the next slot does now
    with django_capture_on_commit_callbacks(execute=True):
        services.execution_finish(
            execution=claimed, outcome=Outcome(status=Execution.Status.SUCCEEDED)
        )
    held.refresh_from_db()
    assert held.dispatched_at is not None
    assert [call.args[0][0] for call in sent.call_args_list] == [held.pk]


def test_it_puts_a_failed_run_s_retry_before_the_run_buffered_behind_it(
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """buffer_one, max_concurrent 1: the retry counts as active and the buffered
    run waits for it (as for a lost run), rather than both going at once."""
    job = make_job(overlap_policy="buffer_one", max_retries=1, retry_backoff=1)
    claimed = services.execution_claim(
        execution_id=Execution.objects.create(job=job).pk, worker="w"
    )
    assert claimed is not None
    held = Execution.objects.create(job=job)
    with django_capture_on_commit_callbacks(execute=True):
        services.execution_finish(
            execution=claimed, outcome=Outcome(status=Execution.Status.FAILED)
        )
    retry = Execution.objects.get(retry_of=claimed)
    held.refresh_from_db()
    assert (held.status, held.dispatched_at) == ("pending", None)
    assert [call.args[0][0] for call in sent.call_args_list] == [retry.pk]


def test_it_records_a_disabled_child_skipped_once_when_the_follow_ups_run_again(
    make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    """What the end's reconnect path does: its follow-ups run a second time."""
    parent = make_job()
    enabled, disabled = make_job(), make_job(enabled=False)
    services.job_set_parents(job=enabled, parents=[parent])
    services.job_set_parents(job=disabled, parents=[parent])
    execution = Execution.objects.create(job=parent)
    services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    executions._execution_after_finish(execution=execution)
    skipped = Execution.objects.get(job=disabled)
    assert skipped.status == Execution.Status.SKIPPED
    assert skipped.parameters == {"parent_execution": execution.pk}
    assert Execution.objects.filter(job=enabled).count() == 1
