"""The control bus: the service, the API verbs and the worker's listener."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from jobs import control, services
from jobs.models import Execution, ExecutionEvent, Job
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db

WORKER = "celery@here"


@pytest.fixture
def running(make_execution: Callable[..., Execution]) -> Execution:
    return make_execution(status=Execution.Status.RUNNING, worker=WORKER)


@pytest.fixture
def channel_messages(running: Execution) -> Iterator[Callable[[], list[str]]]:
    pubsub = get_redis_connection("default").pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(control.channel(WORKER))
    received: list[str] = []

    def messages() -> list[str]:
        while message := pubsub.get_message(timeout=0.0):
            execution_id, state = message["data"].decode().split()
            if int(execution_id) == running.pk:
                received.append(state)
        return received

    yield messages
    pubsub.close()


def test_it_stores_the_desired_state_and_publishes_it(
    api: APIClient,
    running: Execution,
    channel_messages: Callable[[], list[str]],
    admin_user: User,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/executions/{running.pk}/pause/")
    assert response.status_code == 202, response.json()
    assert response.json()["desired_state"] == "pause"
    running.refresh_from_db()
    assert running.desired_state == Execution.DesiredState.PAUSE
    assert wait_for(channel_messages, timeout=5) == ["pause"]
    event = ExecutionEvent.objects.get(execution=running)
    assert (event.action, event.actor) == ("pause", admin_user)


def test_it_shows_who_did_what_in_the_execution_detail(
    api: APIClient, running: Execution
) -> None:
    api.post(f"/api/executions/{running.pk}/pause/")
    api.post(f"/api/executions/{running.pk}/resume/")
    api.post(f"/api/executions/{running.pk}/kill/")
    events = api.get(f"/api/executions/{running.pk}/").json()["events"]
    assert [(e["action"], e["actor"]) for e in events] == [
        ("pause", "admin"),
        ("resume", "admin"),
        ("kill", "admin"),
    ]


@pytest.mark.parametrize("verb", ["pause", "resume", "kill"])
def test_it_refuses_to_control_a_finished_execution_with_409(
    api: APIClient, make_execution: Callable[..., Execution], verb: str
) -> None:
    done = make_execution(status=Execution.Status.SUCCEEDED)
    response = api.post(f"/api/executions/{done.pk}/{verb}/")
    assert response.status_code == 409
    assert "already finished (succeeded)" in response.json()["detail"]
    assert not ExecutionEvent.objects.exists()


def test_it_refuses_to_pause_a_kind_that_cannot_pause(
    api: APIClient,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    job = make_job(kind=Job.Kind.HTTP, spec={"url": "http://example.invalid/"})
    execution = make_execution(job=job, status=Execution.Status.RUNNING)
    response = api.post(f"/api/executions/{execution.pk}/pause/")
    assert response.status_code == 409
    assert "cannot be paused" in response.json()["detail"]
    assert api.post(f"/api/executions/{execution.pk}/kill/").status_code == 202


def test_it_refuses_to_resume_what_is_not_paused(
    api: APIClient, running: Execution
) -> None:
    response = api.post(f"/api/executions/{running.pk}/resume/")
    assert response.status_code == 409
    assert "is not paused" in response.json()["detail"]


def test_it_kills_a_pending_execution_so_it_never_starts(
    api: APIClient, make_execution: Callable[..., Execution]
) -> None:
    pending = make_execution()
    response = api.post(f"/api/executions/{pending.pk}/kill/")
    assert response.status_code == 202
    assert response.json()["status"] == "killed"
    assert response.json()["reason"] == "Killed by admin before it started."
    assert services.execution_claim(execution_id=pending.pk, worker="w") is None
    pending.refresh_from_db()
    assert pending.status == Execution.Status.KILLED


def test_it_needs_the_change_permission_to_control(
    anon: APIClient, running: Execution
) -> None:
    user = User.objects.create_user("viewer", password="pw")
    anon.force_authenticate(user)
    assert anon.post(f"/api/executions/{running.pk}/kill/").status_code == 403


def test_it_answers_at_once_when_redis_is_down(running: Execution) -> None:
    with mock.patch(
        "jobs.control.get_redis_connection", side_effect=ConnectionError("down")
    ):
        execution = services.execution_control(
            execution=running, action="kill", user=None
        )
    assert execution.desired_state == Execution.DesiredState.KILL
    assert ExecutionEvent.objects.get(execution=running).actor is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_it_hears_a_published_command_in_the_listener(running: Execution) -> None:
    listener = control.ControlListener(running.pk, worker=WORKER)
    listener.open()
    try:
        assert listener.subscribed
        assert listener.poll() == "run"
        control.publish(execution_id=running.pk, desired_state="pause", worker=WORKER)
        assert wait_for(lambda: listener.poll() == "pause", timeout=5)
    finally:
        listener.close()


def test_it_reads_a_lost_command_from_the_database_within_seconds_in_the_listener(
    running: Execution,
) -> None:
    """Subscribed, but the message never came (published while the web process could
    not reach Redis, say): the database read catches it within five seconds."""
    clock = Clock()
    listener = control.ControlListener(running.pk, clock=clock, worker=WORKER)
    listener.open()
    try:
        assert listener.subscribed
        Execution.objects.filter(pk=running.pk).update(desired_state="kill")
        clock.now += 4.9
        assert listener.poll() == "run"
        clock.now += 0.2
        assert listener.poll() == "kill"
    finally:
        listener.close()


def test_it_keeps_one_subscriber_for_successive_runs(running: Execution) -> None:
    first = control.ControlListener(running.pk, worker=WORKER)
    first.open()
    shared = control._local.pubsub
    first.close()
    second = control.ControlListener(running.pk + 1, worker=WORKER)
    second.open()
    try:
        assert control._local.pubsub is shared
        # Every command for this worker reaches each of its threads: one for
        # another run is not taken for this one.
        control.publish(execution_id=running.pk, desired_state="kill", worker=WORKER)
        control.publish(
            execution_id=running.pk + 1, desired_state="pause", worker=WORKER
        )
        assert wait_for(lambda: second.poll() == "pause", timeout=5)
    finally:
        second.close()


def test_it_reads_a_command_sent_before_the_listener_subscribed(
    running: Execution,
) -> None:
    services.execution_control(execution=running, action="pause", user=None)
    listener = control.ControlListener(running.pk, worker=WORKER)
    listener.open()
    try:
        assert listener.poll() == "pause"
    finally:
        listener.close()


def test_it_falls_back_to_the_database_in_the_listener_when_redis_is_down(
    running: Execution,
) -> None:
    clock = Clock()
    control._drop_subscriber()  # a new worker thread: no subscriber yet
    with mock.patch(
        "jobs.control.get_redis_connection", side_effect=ConnectionError("down")
    ):
        listener = control.ControlListener(running.pk, clock=clock, worker=WORKER)
        listener.open()
        assert not listener.subscribed
        Execution.objects.filter(pk=running.pk).update(desired_state="kill")
        assert listener.poll() == "run"  # not re-read yet
        clock.now += 2.1
        assert listener.poll() == "kill"
    listener.close()


def test_it_listens_again_after_redis_drops_the_subscription(
    running: Execution,
) -> None:
    listener = control.ControlListener(running.pk, worker=WORKER)
    listener.open()
    try:
        get_redis_connection("default").client_kill_filter(_type="pubsub")
        listener.poll()  # notices the dropped connection

        def heard() -> bool:
            control.publish(
                execution_id=running.pk, desired_state="pause", worker=WORKER
            )
            return listener.poll() == "pause"

        # At once, not after the 5 s a failed subscription waits before trying again.
        assert wait_for(heard, timeout=2)
    finally:
        listener.close()


def test_it_costs_a_run_no_redis_command_once_its_thread_is_subscribed(
    running: Execution,
) -> None:
    control.ControlListener(running.pk, worker=WORKER).open()  # the thread's first run
    pubsub = control._local.pubsub
    with mock.patch.object(
        pubsub, "execute_command", wraps=pubsub.execute_command
    ) as sent:
        listener = control.ControlListener(running.pk + 1, worker=WORKER)
        listener.subscribe()
        listener.open(desired="run")
        listener.poll()
        listener.close()
    assert sent.call_count == 0


def _listening(*channels: str) -> tuple[Any, Callable[[], list[tuple[str, str]]]]:
    pubsub = get_redis_connection("default").pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(*channels)

    def heard() -> list[tuple[str, str]]:
        got = []
        while message := pubsub.get_message(timeout=0.0):
            got.append((message["channel"].decode(), message["data"].decode()))
        return got

    return pubsub, heard


def test_it_tells_only_the_worker_that_claimed_the_run(
    running: Execution,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    ours, other = control.channel(WORKER), control.channel("celery@elsewhere")
    pubsub, heard = _listening(ours, other)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.execution_control(execution=running, action="pause", user=None)
        received: list[tuple[str, str]] = []
        assert wait_for(lambda: received.extend(heard()) or received, timeout=5)
        assert received == [(ours, f"{running.pk} pause")]
    finally:
        pubsub.close()


def test_it_publishes_nothing_for_a_run_no_worker_has_claimed(
    make_execution: Callable[..., Execution],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    pending = make_execution(status=Execution.Status.PENDING)
    with (
        mock.patch("jobs.control.get_redis_connection") as redis,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.execution_control(execution=pending, action="pause", user=None)
    redis.assert_not_called()
    # Its claim reads the desired state instead.
    claimed = services.execution_claim(execution_id=pending.pk, worker=WORKER)
    assert claimed is not None
    assert claimed.desired_state == Execution.DesiredState.PAUSE


def test_it_listens_in_each_thread_for_the_worker_that_thread_runs_for(
    running: Execution,
) -> None:
    control.ControlListener(running.pk, worker="celery@before").open()
    listener = control.ControlListener(running.pk, worker=WORKER)
    listener.open()
    try:
        assert control._local.worker == WORKER
        control.publish(
            execution_id=running.pk, desired_state="kill", worker="celery@before"
        )
        control.publish(execution_id=running.pk, desired_state="pause", worker=WORKER)
        assert wait_for(lambda: listener.poll() == "pause", timeout=5)
    finally:
        listener.close()


def test_it_tells_each_running_run_s_own_worker_when_overlap_cancels_them(
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job()
    first = make_execution(job=job, status=Execution.Status.RUNNING, worker="celery@a")
    second = make_execution(job=job, status=Execution.Status.PAUSED, worker="celery@b")
    with (
        mock.patch("jobs.control.publish") as publish,
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert (
            services.execution_kill_active(job_id=job.pk, immediate=False, why="x") == 2
        )
    assert sorted(
        (call.kwargs["execution_id"], call.kwargs["worker"])
        for call in publish.call_args_list
    ) == [(first.pk, "celery@a"), (second.pk, "celery@b")]


def test_it_keeps_a_kill_once_asked_for(api: APIClient, running: Execution) -> None:
    assert api.post(f"/api/executions/{running.pk}/kill/").status_code == 202
    for verb in ("pause", "resume"):
        response = api.post(f"/api/executions/{running.pk}/{verb}/")
        assert response.status_code == 409
        assert "is being killed" in response.json()["detail"]
    running.refresh_from_db()
    assert running.desired_state == Execution.DesiredState.KILL
    assert api.post(f"/api/executions/{running.pk}/kill/").status_code == 202


def test_it_puts_a_kill_by_the_system_in_the_audit_trail(running: Execution) -> None:
    services.execution_kill_active(
        job_id=running.job_id, immediate=False, why="Its job's overlap policy."
    )
    event = ExecutionEvent.objects.get(execution=running)
    assert (event.action, event.actor, event.detail) == (
        "kill",
        None,
        "Its job's overlap policy.",
    )


@pytest.mark.django_db(transaction=True)
def test_it_reads_the_database_again_once_the_listener_s_connection_died(
    make_execution: Callable[..., Execution],
) -> None:
    from django.db import connection

    execution = make_execution(status=Execution.Status.RUNNING, worker=WORKER)
    Execution.objects.filter(pk=execution.pk).update(desired_state="kill")
    connection.ensure_connection()
    connection.connection.close()  # the server dropped the worker's connection
    try:
        assert control.read_desired_state(execution.pk) is None
        assert control.read_desired_state(execution.pk) == "kill"
    finally:
        connection.close()
