from __future__ import annotations

import uuid
from types import SimpleNamespace
from unittest import mock

import pytest
from django.db import DatabaseError
from django.test import override_settings

from agents import live, services
from agents.models import Agent
from agents.worker import WorkerAgent, running_executions
from tests.agents.conftest import make_sample

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def keep_connection(request: pytest.FixtureRequest) -> object:
    """The test transaction's connection must survive the beat's connection hygiene."""
    if request.node.get_closest_marker("django_db").kwargs.get("transaction"):
        yield None
        return
    with mock.patch("agents.worker.close_old_connections"):
        yield None


def request(name: str, *args: object, **kwargs: object) -> SimpleNamespace:
    return SimpleNamespace(name=name, args=list(args), kwargs=kwargs)


def test_it_reads_execution_ids_from_active_requests() -> None:
    requests = [
        request("jobs.run_execution", 7),
        request("jobs.run_execution", execution_id=3),
        request("jobs.run_execution", "12"),
        request("other.task", 99),
        request("jobs.run_execution"),
        request("jobs.run_execution", "nonsense"),
    ]
    assert running_executions(requests) == [3, 7, 12]
    assert running_executions() == []  # No worker in this process.


def test_it_registers_and_heartbeats_into_redis_and_the_row() -> None:
    running = [4]
    worker = WorkerAgent(name="w1@box", queues=["b", "a"], running=lambda: running)
    worker.beat()
    agent = Agent.objects.get(name="w1@box")
    assert agent.instance_id == worker.instance_id
    assert agent.queues == ["a", "b"]
    assert agent.status == Agent.Status.ONLINE
    assert agent.running == [4]
    assert live.read_one(worker.instance_id).running == [4]  # type: ignore[union-attr]


@override_settings(KARMCHARI_AGENT_DB_SECONDS=3600)
def test_it_saves_the_row_only_when_due_or_running_changes() -> None:
    running: list[int] = []
    worker = WorkerAgent(name="w2@box", queues=["a"], running=lambda: running)
    worker.beat()  # Registers and saves the first beat.
    with mock.patch("agents.services.Agent.objects.filter") as rows:
        worker.beat()
    rows.assert_not_called()
    running.append(8)
    worker.beat()
    assert Agent.objects.get(name="w2@box").running == [8]
    assert len(live.read_history(worker.instance_id)) == 3


@override_settings(KARMCHARI_AGENT_DB_SECONDS=0)
def test_it_registers_again_when_its_row_disappears() -> None:
    worker = WorkerAgent(name="w3@box", queues=["a"], running=list)
    worker.beat()
    Agent.objects.filter(name="w3@box").delete()
    worker.beat()  # Notices.
    worker.beat()  # Registers again.
    assert Agent.objects.get(name="w3@box").instance_id == worker.instance_id


def test_it_survives_a_failing_beat() -> None:
    worker = WorkerAgent(name="w4@box", queues=["a"], running=list)
    worker.beat()
    with mock.patch.object(worker.sampler, "sample", side_effect=OSError("boom")):
        worker.beat()
    worker.beat()
    assert worker.agent is not None


@pytest.mark.django_db(transaction=True)
def test_it_goes_offline_on_stop() -> None:
    worker = WorkerAgent(name="w5@box", queues=["a"], running=list)
    worker.register()
    worker.start()
    worker.stop()
    assert worker.thread is not None and not worker.thread.is_alive()
    assert Agent.objects.get(name="w5@box").status == Agent.Status.OFFLINE
    assert live.read_one(worker.instance_id) is None


class FakeConsumer:
    """What WorkerAgent uses of Celery's consumer: queue changes, run by its loop."""

    def __init__(self) -> None:
        self.consuming = {"a", "b"}
        self.pending: list[tuple[object, str]] = []

    def cancel_task_queue(self, queue: str) -> None:
        self.consuming.discard(queue)

    def add_task_queue(self, queue: str) -> None:
        self.consuming.add(queue)

    def call_soon(self, change: object, queue: str) -> None:
        self.pending.append((change, queue))

    def run_loop(self) -> None:
        while self.pending:
            change, queue = self.pending.pop(0)
            change(queue)  # type: ignore[operator]


def test_it_consumes_nothing_until_a_late_registration_succeeds() -> None:
    """The database was away at start: it cannot know whether it was drained."""
    worker = WorkerAgent(name="w6@box", queues=["a", "b"], running=list)
    consumer = FakeConsumer()
    with mock.patch(
        "agents.services.agent_register", side_effect=DatabaseError("away")
    ):
        worker.register()
    worker.ready(consumer)
    assert consumer.consuming == set()
    worker.beat()  # The database is back.
    consumer.run_loop()
    assert consumer.consuming == {"a", "b"}


def test_it_stays_drained_when_a_late_registration_finds_it_drained() -> None:
    Agent.objects.create(name="w7@box", status=Agent.Status.OFFLINE, drained=True)
    worker = WorkerAgent(name="w7@box", queues=["a", "b"], running=list)
    consumer = FakeConsumer()
    worker.ready(consumer)  # Not registered yet.
    worker.beat()
    consumer.run_loop()
    assert consumer.consuming == set()
    assert Agent.objects.get(name="w7@box").status == Agent.Status.DRAINING


@override_settings(KARMCHARI_AGENT_DB_SECONDS=0)
def test_it_stops_consuming_while_another_live_worker_holds_its_name() -> None:
    worker = WorkerAgent(name="w8@box", queues=["a", "b"], running=list)
    worker.register()
    consumer = FakeConsumer()
    worker.ready(consumer)
    assert consumer.consuming == {"a", "b"}
    # Another host's worker took the row over (this one was silent too long).
    other = Agent.objects.get(name="w8@box")
    other.instance_id, other.host, other.pid = uuid.uuid4(), "elsewhere", 1
    other.save()
    live.publish(instance_id=other.instance_id, sample=make_sample())
    worker.beat()  # AgentGone: stop taking work.
    worker.beat()  # The name is held by a live worker: stay stopped.
    consumer.run_loop()
    assert consumer.consuming == set()
    assert Agent.objects.get(name="w8@box").instance_id == other.instance_id

    live.forget(other.instance_id)
    Agent.objects.filter(pk=other.pk).update(status=Agent.Status.OFFLINE)
    worker.beat()
    consumer.run_loop()
    assert consumer.consuming == {"a", "b"}
    assert Agent.objects.get(name="w8@box").instance_id == worker.instance_id


@override_settings(KARMCHARI_AGENT_DB_SECONDS=0)
def test_it_stops_consuming_when_taken_over_after_an_operator_resumed_it() -> None:
    """Drained at start, resumed by an operator (Celery's add_consumer, behind the
    worker agent's back), then its name taken over: it must leave its queues."""
    Agent.objects.create(name="w9@box", status=Agent.Status.OFFLINE, drained=True)
    worker = WorkerAgent(name="w9@box", queues=["a", "b"], running=list)
    worker.register()
    consumer = FakeConsumer()
    worker.ready(consumer)
    assert consumer.consuming == set()
    with mock.patch("karmchari_site.celery.app.control") as control:
        control.add_consumer.return_value = [{"w9@box": {"ok": "consuming"}}]
        services.agent_resume(agent=Agent.objects.get(name="w9@box"))
    for queue in ("a", "b"):
        consumer.add_task_queue(queue)  # what the remote command does
    other = Agent.objects.get(name="w9@box")
    other.instance_id, other.host, other.pid = uuid.uuid4(), "elsewhere", 1
    other.save()
    live.publish(instance_id=other.instance_id, sample=make_sample())
    worker.beat()  # AgentGone
    consumer.run_loop()
    assert consumer.consuming == set()
