from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.db import OperationalError
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Execution, ExecutionEvent, ExecutionLogChunk, Job
from jobs.runners import Outcome
from jobs.services import executions
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent() -> mock.MagicMock:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


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


def test_it_resends_stale_pending_executions_once_per_window(
    make_execution: Callable[..., Execution],
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
) -> None:
    # A queue of its own, empty at the broker (nothing else sent to it).
    job = make_job(queue=f"outbox-{uuid.uuid4().hex[:8]}")
    with time_machine.travel(timezone.now() - timedelta(minutes=5), tick=False):
        stale = make_execution(job, dispatched_at=timezone.now())
    fresh = make_execution(job, dispatched_at=timezone.now())
    assert services.execution_resend_stale(older_than=timedelta(seconds=60)) == 1
    sent.assert_called_once_with(
        (stale.pk,), queue=stale.job.queue, countdown=None, producer=mock.ANY
    )
    # Stamped: the next sweep within the window leaves it alone.
    assert services.execution_resend_stale(older_than=timedelta(seconds=60)) == 0
    fresh.refresh_from_db()
    assert fresh.status == Execution.Status.PENDING


# --- Execution engine: retries, dependencies, external reports ----------------------


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


def test_it_retries_by_hand(
    api: Any,
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    failed = Execution.objects.create(
        job=make_job(), status=Execution.Status.FAILED, attempt=1
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/executions/{failed.pk}/retry/")
    assert response.status_code == 202
    assert (response.json()["attempt"], response.json()["retry_of"]) == (2, failed.pk)
    sent.assert_called_once()
    running = Execution.objects.create(job=failed.job, status="running")
    assert api.post(f"/api/executions/{running.pk}/retry/").status_code == 409
    # Once, while that retry is under way: a second POST does not run it twice.
    again = api.post(f"/api/executions/{failed.pk}/retry/")
    assert again.status_code == 409
    assert "already being retried as" in again.json()["detail"]


def test_a_run_whose_job_is_deleted_while_it_runs_ends_quietly(
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


def test_it_edits_children_from_the_parent_s_side(
    api: Any, make_job: Callable[..., Job]
) -> None:
    a, b, c = make_job(name="a"), make_job(name="b"), make_job(name="c")
    response = api.patch(f"/api/jobs/{a.pk}/", {"children": [b.pk, c.pk]})
    assert response.status_code == 200, response.json()
    assert sorted(response.json()["children"]) == [b.pk, c.pk]
    assert api.get(f"/api/jobs/{b.pk}/").json()["parents"] == [a.pk]
    # c under a, so a under c would be a cycle: refused, nothing changed.
    refused = api.patch(f"/api/jobs/{c.pk}/", {"children": [a.pk]})
    assert refused.status_code == 400
    assert "already runs after it" in refused.json()["children"][0]
    assert api.patch(f"/api/jobs/{a.pk}/", {"children": [a.pk]}).status_code == 400
    assert list(c.children.all()) == []
    created = api.post(
        "/api/jobs/",
        {
            "app": a.app.name,
            "name": "d",
            "spec": {"command": "true"},
            "parents": [b.pk],
            "children": [b.pk],
        },
        format="json",
    )
    assert created.status_code == 400
    assert "children" in created.json()
    assert api.patch(f"/api/jobs/{a.pk}/", {"children": []}).json()["children"] == []


def test_it_does_not_run_children_when_the_parent_fails(
    make_job: Callable[..., Job],
) -> None:
    parent = make_job("exit 2")
    make_job().parents.add(parent)
    services.execution_run(
        execution_id=Execution.objects.create(job=parent).pk, worker="w"
    )
    assert not Execution.objects.filter(trigger="dependency").exists()


def test_it_refuses_dependency_cycles_with_400(
    api: Any, make_job: Callable[..., Job]
) -> None:
    a, b, c = make_job(), make_job(), make_job()
    assert api.patch(f"/api/jobs/{b.pk}/", {"parents": [a.pk]}).status_code == 200
    assert api.patch(f"/api/jobs/{c.pk}/", {"parents": [b.pk]}).status_code == 200
    response = api.patch(f"/api/jobs/{a.pk}/", {"parents": [c.pk]})
    assert response.status_code == 400
    assert "would depend on itself" in response.json()["parents"][0]
    self_loop = api.patch(f"/api/jobs/{a.pk}/", {"parents": [a.pk]})
    assert self_loop.status_code == 400
    assert api.get(f"/api/jobs/{c.pk}/").json()["parents"] == [b.pk]


def test_an_external_job_runs_as_soon_as_it_is_triggered_and_reports(
    api: Any, make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    response = api.post(f"/api/jobs/{job.pk}/run/")
    assert response.json()["status"] == "running"
    assert not sent.called
    execution_id = response.json()["id"]
    report = api.post(
        f"/api/executions/{execution_id}/report/",
        {"status": "running", "output": "half way\n"},
    )
    assert report.status_code == 200
    api.post(f"/api/executions/{execution_id}/pause/")
    assert api.get(f"/api/executions/{execution_id}/").json()["desired_state"] == (
        "pause"
    )
    assert (
        api.post(
            f"/api/executions/{execution_id}/report/", {"status": "paused"}
        ).json()["status"]
        == "paused"
    )
    done = api.post(
        f"/api/executions/{execution_id}/report/",
        {"status": "succeeded", "output": "done\n", "exit_code": 0},
    ).json()
    assert (done["status"], done["output"]) == ("succeeded", "half way\ndone\n")
    job.refresh_from_db()
    assert job.success_count == 1
    late = api.post(f"/api/executions/{execution_id}/report/", {"status": "failed"})
    assert late.status_code == 409


def test_only_external_jobs_report(
    api: Any, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(status=Execution.Status.RUNNING)
    response = api.post(f"/api/executions/{execution.pk}/report/", {"status": "failed"})
    assert response.status_code == 409


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
def test_a_claim_cut_short_by_a_dropped_connection_is_retried_whole(
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
def test_a_claim_committed_but_unanswered_is_taken_up_after_reconnecting(
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


def test_it_sends_buffered_runs_when_the_policy_stops_buffering(
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    job = make_job(overlap_policy="buffer_all")
    held = Execution.objects.create(job=job)  # pending, never dispatched: buffered
    with (
        mock.patch("jobs.services.overlap.executions_send") as send,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.job_update(job=job, overlap_policy="allow_all")
    [(execution, delay)] = send.call_args.args[0]
    assert (execution.pk, delay) == (held.pk, 0.0)
    held.refresh_from_db()
    assert held.dispatched_at is not None


def test_it_leaves_a_stale_run_alone_while_its_queue_still_holds_messages(
    make_execution: Callable[..., Execution],
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
) -> None:
    """Pending for long behind a backlog is not lost: no duplicate is sent while the
    broker still holds messages for its queue; once the queue is empty, it is."""
    from karmchari_site.celery import app

    queue = f"outbox-{uuid.uuid4().hex[:8]}"
    with time_machine.travel(timezone.now() - timedelta(minutes=5), tick=False):
        stale = make_execution(make_job(queue=queue), dispatched_at=timezone.now())
    assert stale.status == Execution.Status.PENDING
    with app.connection_for_write() as conn:
        backlog = conn.SimpleQueue(queue)
        backlog.put({"waiting": True})
        try:
            assert (
                services.execution_resend_stale(older_than=timedelta(seconds=60)) == 0
            )
            assert not sent.called
            backlog.get(timeout=5).ack()
            assert (
                services.execution_resend_stale(older_than=timedelta(seconds=60)) == 1
            )
            assert sent.call_args.args == ((stale.pk,),)
            assert sent.call_args.kwargs["queue"] == queue
        finally:
            backlog.clear()
            backlog.close()


@pytest.mark.django_db(transaction=True)
def test_an_end_committed_but_unanswered_still_sets_off_what_follows(
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


def test_a_report_with_an_exit_code_out_of_range_stores_nothing(
    api: Any, make_job: Callable[..., Job]
) -> None:
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    run = api.post(f"/api/jobs/{job.pk}/run/").json()["id"]
    response = api.post(
        f"/api/executions/{run}/report/",
        {"status": "succeeded", "output": "x\n", "exit_code": 2**40},
        format="json",
    )
    assert response.status_code == 400
    assert "exit_code" in response.json()
    assert not ExecutionEvent.objects.filter(execution_id=run).exists()
    assert not ExecutionLogChunk.objects.filter(execution_id=run).exists()
    assert Execution.objects.get(pk=run).status == Execution.Status.RUNNING


def test_a_report_starts_an_external_run_still_pending(
    api: Any, make_job: Callable[..., Job]
) -> None:
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    pending = Execution.objects.create(job=job)  # fired, not yet taken up
    done = api.post(
        f"/api/executions/{pending.pk}/report/", {"status": "succeeded"}
    ).json()
    assert done["status"] == "succeeded"
    assert done["started_at"] is not None
    job.refresh_from_db()
    assert (job.success_count, job.last_attempted_at is not None) == (1, True)


def test_an_external_job_s_retries_wait_for_their_backoff(
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


def test_concurrent_reports_append_in_turn_and_one_end_wins(
    make_job: Callable[..., Job], admin_user: Any, transactional_db: None
) -> None:
    from django.db import connection, connections

    from tests.tokens import make_token

    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    token = make_token(admin_user).key
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})

    def client() -> APIClient:
        each = APIClient()
        each.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        each.raise_request_exception = False
        return each

    run = client().post(f"/api/jobs/{job.pk}/run/").json()["id"]
    codes: list[int] = []
    barrier = threading.Barrier(6)

    def report(n: int) -> None:
        mine = client()
        barrier.wait()
        for line in range(5):
            body = {"status": "running", "output": f"{n}-{line}\n"}
            codes.append(mine.post(f"/api/executions/{run}/report/", body).status_code)
        body = {"status": "succeeded" if n % 2 else "failed"}
        codes.append(mine.post(f"/api/executions/{run}/report/", body).status_code)
        connections.close_all()

    threads = [threading.Thread(target=report, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 500 not in codes
    assert codes.count(409) >= 5  # every final report after the first
    ends = ExecutionEvent.objects.filter(execution_id=run, detail__startswith="Rep")
    finished = Execution.objects.get(pk=run)
    assert finished.status in ("succeeded", "failed")
    assert f"Reported {finished.status}." in set(ends.values_list("detail", flat=True))


def test_the_retry_backoff_is_capped(settings: Any) -> None:
    settings.KARMCHARI_RETRY_BACKOFF_MAX = 600
    assert services.retry_delay(backoff=10, attempt=3) <= 40
    for attempt in (8, 45, 5000):  # 2^4999 would overflow a float
        assert 300 <= services.retry_delay(backoff=10, attempt=attempt) <= 600
    # A backoff set above the cap is the job's own word for its first wait.
    assert 1800 <= services.retry_delay(backoff=3600, attempt=1) <= 3600


def test_a_job_disabled_during_its_run_gets_no_retry_and_loses_its_queued_runs(
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


def test_two_edits_at_once_cannot_make_a_cycle(
    make_job: Callable[..., Job], transactional_db: None
) -> None:
    from django.db import connection, connections

    from jobs.services import jobs as job_services

    if connection.vendor != "postgresql":
        pytest.skip("the lock is PostgreSQL's")
    a, b = make_job(name="a"), make_job(name="b")
    checked, other_done = threading.Event(), threading.Event()
    check = job_services.job_parents_cycle

    def other_edit_waits() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks "
                "WHERE locktype = 'advisory' AND NOT granted"
            )
            return bool(cursor.fetchone()[0])

    def slow_check(*, job: Job, parents: list[Job]) -> str | None:
        why = check(job=job, parents=parents)
        if job.pk == a.pk:
            checked.set()
            # Checked, not yet written: hold on until the other edit is either
            # stuck behind the lock or (with no lock) done.
            wait_for(lambda: other_done.is_set() or other_edit_waits(), timeout=10)
        return why

    refused: list[Exception] = []

    def edit(child: Job, parent: Job) -> None:
        try:
            services.job_set_parents(job=child, parents=[parent])
        except services.DependencyCycle as exc:
            refused.append(exc)
        finally:
            connections.close_all()

    with mock.patch.object(job_services, "job_parents_cycle", slow_check):
        first = threading.Thread(target=edit, args=(a, b))
        first.start()
        assert checked.wait(5)
        edit(b, a)
        other_done.set()
        first.join()
    assert len(refused) == 1
    assert not (
        a.parents.filter(pk=b.pk).exists() and b.parents.filter(pk=a.pk).exists()
    )


def test_it_resends_a_lost_run_even_behind_500_older_runs_of_a_waiting_queue(
    make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    """A queue nobody consumes for a while (its only worker drained or down) holds
    a backlog of 500+ runs, pending for long and rightly left alone. A run of another
    job, whose message was lost (a crash between commit and send) and whose queue is
    empty, must still be sent again: the backlog of one queue must not stop the
    outbox for every other queue."""
    from karmchari_site.celery import app

    parked_queue = f"parked-{uuid.uuid4().hex[:8]}"
    empty_queue = f"outbox-{uuid.uuid4().hex[:8]}"
    parked = make_job(queue=parked_queue)
    other = make_job(queue=empty_queue)
    long_ago = timezone.now() - timedelta(hours=1)
    Execution.objects.bulk_create(
        Execution(job=parked, dispatched_at=long_ago + timedelta(seconds=n))
        for n in range(500)
    )
    lost = Execution.objects.create(
        job=other, dispatched_at=timezone.now() - timedelta(minutes=5)
    )
    with app.connection_for_write() as conn:
        backlog = conn.SimpleQueue(parked_queue)
        backlog.put({"waiting": True})  # the parked queue's backlog at the broker
        try:
            for _ in range(3):  # beat sweeps every second
                services.execution_resend_stale(older_than=timedelta(seconds=60))
        finally:
            backlog.clear()
            backlog.close()
    resent = [call.args[0][0] for call in sent.call_args_list]
    assert lost.pk in resent


@pytest.mark.parametrize("meanwhile", ["disable", "retry_by_hand"])
def test_an_automatic_retry_waits_for_a_disable_or_a_retry_by_hand(
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
