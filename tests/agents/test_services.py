from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.test import override_settings
from django.utils import timezone

from agents import live, services
from agents.models import Agent
from agents.signals import agent_went_offline
from agents.stats import HostFacts
from tests.agents.conftest import age_live_stamp, make_sample

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def offline_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    def record(sender: Any, **kwargs: Any) -> None:
        events.append(kwargs)

    agent_went_offline.connect(record, dispatch_uid="test-record")
    yield events
    agent_went_offline.disconnect(dispatch_uid="test-record")


def register(facts: HostFacts, name: str = "q@box1", **kwargs: Any) -> Agent:
    kwargs.setdefault("instance_id", uuid.uuid4())
    kwargs.setdefault("queues", ["reports", "celery", "reports"])
    return services.agent_register(name=name, facts=facts, **kwargs)


def test_it_registers_a_worker_with_its_host_facts(facts: HostFacts) -> None:
    instance_id = uuid.uuid4()
    with time_machine.travel(T0, tick=False):
        agent = register(facts, instance_id=instance_id, started_at=T0)
    agent.refresh_from_db()
    assert agent.name == "q@box1"
    assert agent.instance_id == instance_id
    assert (agent.host, agent.os_name, agent.os_version) == ("box1", "Linux", "6.1.0")
    assert (agent.cpu_arch, agent.cpu_cores) == ("x86_64", 8)
    assert (agent.memory_total, agent.swap_total) == (16 * 2**30, 2 * 2**30)
    assert agent.queues == ["celery", "reports"]
    assert agent.pid == 4242
    assert agent.version == "0.1.0"
    assert agent.status == Agent.Status.ONLINE
    assert agent.started_at == T0
    assert agent.last_heartbeat is not None  # On the database's clock: see below.


def test_it_reuses_the_row_of_a_restarted_worker(
    facts: HostFacts, offline_events: list[dict[str, Any]]
) -> None:
    first = register(facts)
    services.agent_mark_offline(agent=first, reason="Its worker stopped.")
    assert len(offline_events) == 1
    second = register(facts)
    assert second.pk == first.pk
    assert second.instance_id != first.instance_id
    assert Agent.objects.get().status == Agent.Status.ONLINE
    assert len(offline_events) == 1  # The clean stop already said goodbye.


def test_it_takes_offline_a_previous_instance_that_never_said_goodbye(
    facts: HostFacts, offline_events: list[dict[str, Any]]
) -> None:
    first = register(facts)
    second = register(facts)
    assert [event["agent"].instance_id for event in offline_events] == [
        first.instance_id
    ]
    assert "restarted" in offline_events[0]["reason"]
    assert Agent.objects.get().instance_id == second.instance_id


def test_it_refuses_a_name_a_live_worker_on_another_host_holds(
    facts: HostFacts, offline_events: list[dict[str, Any]]
) -> None:
    """Two workers under one name would take the row from each other at every beat,
    each time giving up the other's running executions as lost."""
    first = register(facts, name="w@shared")
    services.agent_heartbeat(agent=first, sample=make_sample(), persist=False)
    elsewhere = dataclasses.replace(facts, host="box2", pid=99)
    with pytest.raises(services.AgentNameTaken, match="in use by a live worker"):
        register(elsewhere, name="w@shared")
    assert Agent.objects.get().instance_id == first.instance_id
    assert offline_events == []

    # Once the holder is silent for the window, the name is free.
    age_live_stamp(first.instance_id, 16)
    with time_machine.travel(timezone.now() + timedelta(seconds=16)):
        second = register(elsewhere, name="w@shared")
    assert second.host == "box2"
    assert [e["agent"].instance_id for e in offline_events] == [first.instance_id]


def test_it_refuses_a_name_a_running_process_on_this_host_holds(
    facts: HostFacts,
) -> None:
    first = register(dataclasses.replace(facts, pid=os.getppid()), name="w@here")
    services.agent_heartbeat(agent=first, sample=make_sample(), persist=False)
    with pytest.raises(services.AgentNameTaken):
        register(facts, name="w@here")


def test_it_takes_over_at_once_from_a_dead_process_on_this_host(
    facts: HostFacts,
) -> None:
    """kill -9, and systemd starts the worker again before the window passes."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    first = register(dataclasses.replace(facts, pid=dead.pid), name="w@here")
    services.agent_heartbeat(agent=first, sample=make_sample(), persist=False)
    second = register(facts, name="w@here")
    assert second.instance_id != first.instance_id
    assert second.pid == facts.pid


def test_it_publishes_heartbeats_to_redis_and_saves_when_asked(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(last_heartbeat=T0)
    sample = make_sample(running=[5])
    services.agent_heartbeat(agent=agent, sample=sample, persist=False)
    read = live.read_one(agent.instance_id, now=1000.0)
    assert read is not None
    assert read.at == pytest.approx(1000.0, abs=1)  # Received just now.
    assert dataclasses.replace(read, at=sample.at) == sample
    assert Agent.objects.get(pk=agent.pk).last_heartbeat == T0
    services.agent_heartbeat(agent=agent, sample=sample, persist=True)
    saved = Agent.objects.get(pk=agent.pk)
    assert saved.last_heartbeat is not None and saved.last_heartbeat > T0
    assert (saved.memory_free, saved.running) == (sample.memory_free, [5])
    assert saved.load_average == [1.5, 1.0, 0.5]


def test_it_saves_every_heartbeat_while_redis_is_down(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(last_heartbeat=T0)
    with mock.patch("agents.live.publish", return_value=False):
        services.agent_heartbeat(agent=agent, sample=make_sample(), persist=False)
    assert Agent.objects.get(pk=agent.pk).last_heartbeat > T0


def test_it_refuses_heartbeats_of_a_replaced_instance(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent()
    Agent.objects.filter(pk=agent.pk).update(instance_id=uuid.uuid4())
    with pytest.raises(services.AgentGone):
        services.agent_heartbeat(agent=agent, sample=make_sample(), persist=True)


def test_it_brings_back_online_an_agent_swept_while_alive(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(status=Agent.Status.OFFLINE)
    services.agent_heartbeat(agent=agent, sample=make_sample(), persist=True)
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.ONLINE


def test_it_brings_back_a_drained_agent_as_draining(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(status=Agent.Status.OFFLINE, drained=True)
    back = services.agent_heartbeat(agent=agent, sample=make_sample(), persist=True)
    assert back.status == Agent.Status.DRAINING
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.DRAINING
    assert agent.queues[0] not in services.queues_online()


@override_settings(KARMCHARI_AGENT_WINDOW_SECONDS=15, KARMCHARI_AGENT_DB_SECONDS=0)
def test_it_sweeps_agents_silent_for_longer_than_the_window(
    make_agent: Callable[..., Agent], offline_events: list[dict[str, Any]]
) -> None:
    quiet = make_agent(last_heartbeat=T0)
    recent = make_agent(last_heartbeat=T0 + timedelta(seconds=10))
    draining = make_agent(last_heartbeat=T0, status=Agent.Status.DRAINING)
    make_agent(last_heartbeat=T0 - timedelta(days=1), status=Agent.Status.OFFLINE)

    assert services.agents_sweep_stale(now=T0 + timedelta(seconds=15)) == []

    swept = services.agents_sweep_stale(now=T0 + timedelta(seconds=16))
    assert {agent.pk for agent in swept} == {quiet.pk, draining.pk}
    assert {e["agent"].pk for e in offline_events} == {quiet.pk, draining.pk}
    assert "No heartbeat since 2026-03-01 12:00:00" in offline_events[0]["reason"]
    assert Agent.objects.get(pk=recent.pk).status == Agent.Status.ONLINE
    assert Agent.objects.get(pk=quiet.pk).status == Agent.Status.OFFLINE

    # A second sweep finds nothing new: each agent goes offline once.
    assert services.agents_sweep_stale(now=T0 + timedelta(seconds=60)) == [recent]
    assert len(offline_events) == 3


@override_settings(KARMCHARI_AGENT_WINDOW_SECONDS=15, KARMCHARI_AGENT_DB_SECONDS=30)
def test_it_gives_the_saved_heartbeat_its_delay_when_redis_lost_the_stamp(
    make_agent: Callable[..., Agent],
) -> None:
    """After a Redis restart no agent has a live stamp; the row may be 30 s old
    while the worker is fine. Declaring it dead would run its jobs twice."""
    agent = make_agent(last_heartbeat=T0)
    assert services.agents_sweep_stale(now=T0 + timedelta(seconds=44)) == []
    assert services.agents_sweep_stale(now=T0 + timedelta(seconds=46)) == [agent]


@override_settings(KARMCHARI_AGENT_WINDOW_SECONDS=15)
def test_it_keeps_online_an_agent_whose_live_heartbeat_is_fresh(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(last_heartbeat=T0)
    now = T0 + timedelta(seconds=60)
    services.agent_heartbeat(agent=agent, sample=make_sample(), persist=False)
    age_live_stamp(agent.instance_id, 5)
    with time_machine.travel(now, tick=False):
        assert services.agents_sweep_stale() == []
        age_live_stamp(agent.instance_id, 16)
        assert services.agents_sweep_stale() == [agent]


@override_settings(KARMCHARI_AGENT_WINDOW_SECONDS=15, KARMCHARI_AGENT_DB_SECONDS=30)
def test_it_judges_liveness_by_the_servers_clocks_not_the_workers(
    make_agent: Callable[..., Agent],
) -> None:
    """A worker host without NTP: an hour behind, its beats must not look an hour
    old; an hour ahead, its last beats must not keep it alive for an hour."""
    now = timezone.now()
    behind = make_agent(last_heartbeat=now - timedelta(hours=1))
    ahead = make_agent(last_heartbeat=now)
    hour = 3600
    services.agent_heartbeat(
        agent=behind, sample=make_sample(at=now.timestamp() - hour), persist=False
    )
    services.agent_heartbeat(
        agent=ahead, sample=make_sample(at=now.timestamp() + hour), persist=True
    )
    # The saved stamp is the database's "now", not the worker's hour ahead.
    saved = Agent.objects.get(pk=ahead.pk).last_heartbeat
    assert saved is not None and abs((saved - now).total_seconds()) < 5

    later = now + timedelta(seconds=20)
    age_live_stamp(behind.instance_id, 10)
    age_live_stamp(ahead.instance_id, 20)
    assert services.agents_sweep_stale(now=later) == [ahead]
    live.forget(behind.instance_id)  # Its key expired: silent since then.
    assert services.agents_sweep_stale(now=later) == [behind]


@pytest.mark.parametrize("saved", [True, False], ids=["row", "live-stamp"])
@override_settings(KARMCHARI_AGENT_WINDOW_SECONDS=15, KARMCHARI_AGENT_DB_SECONDS=0)
def test_it_keeps_online_an_agent_that_beats_while_the_sweep_judges_it(
    make_agent: Callable[..., Agent],
    make_execution: Callable[..., Any],
    saved: bool,
) -> None:
    """The beat lands between the sweep's read of the stamps and its write: the
    agent is alive, and what it runs must not be given up as lost."""
    agent = make_agent(last_heartbeat=timezone.now() - timedelta(seconds=60))
    run = make_execution(status="running", worker=agent.name, agent=agent)
    read_many = live.read_many

    def read_then_beat(*args: Any, **kwargs: Any) -> Any:
        samples = read_many(*args, **kwargs)
        services.agent_heartbeat(agent=agent, sample=make_sample(), persist=saved)
        return samples

    with mock.patch.object(live, "read_many", read_then_beat):
        assert services.agents_sweep_stale() == []
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.ONLINE
    run.refresh_from_db()
    assert run.status == "running"
    # Silent from now on (its live stamp expired), it goes offline in time.
    live.forget(agent.instance_id)
    later = timezone.now() + timedelta(seconds=60)
    assert services.agents_sweep_stale(now=later) == [agent]


def test_it_leaves_the_agent_online_when_a_receiver_fails(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(last_heartbeat=T0)

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("recovery failed")

    agent_went_offline.connect(broken, dispatch_uid="test-broken")
    try:
        assert services.agents_sweep_stale(now=T0 + timedelta(hours=1)) == []
    finally:
        agent_went_offline.disconnect(dispatch_uid="test-broken")
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.ONLINE
    assert services.agents_sweep_stale(now=T0 + timedelta(hours=1)) == [agent]


@pytest.fixture
def control() -> Iterator[mock.MagicMock]:
    with mock.patch("karmchari_site.celery.app.control") as control:
        yield control


def test_it_drains_by_cancelling_each_queue_consumer(
    make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    agent = make_agent(name="w@h", queues=["a", "b"])
    control.cancel_consumer.return_value = [{"w@h": {"ok": "no longer consuming"}}]
    drained = services.agent_drain(agent=agent)
    assert drained.status == Agent.Status.DRAINING
    assert [c.args[0] for c in control.cancel_consumer.call_args_list] == ["a", "b"]
    assert control.cancel_consumer.call_args.kwargs["destination"] == ["w@h"]

    control.add_consumer.return_value = [{"w@h": {"ok": "already consuming"}}]
    resumed = services.agent_resume(agent=drained)
    assert resumed.status == Agent.Status.ONLINE
    assert control.add_consumer.call_count == 2


def test_it_reports_a_worker_that_does_not_answer(
    make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    agent = make_agent()
    control.cancel_consumer.return_value = []
    with pytest.raises(services.AgentUnreachable, match="did not answer"):
        services.agent_drain(agent=agent, timeout=0.1)
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.ONLINE


def test_it_refuses_to_drain_an_offline_agent(
    make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    agent = make_agent(status=Agent.Status.OFFLINE)
    with pytest.raises(services.AgentConflict, match="offline"):
        services.agent_drain(agent=agent)
    control.cancel_consumer.assert_not_called()


def test_it_lists_queues_that_an_online_agent_consumes(
    make_agent: Callable[..., Agent],
) -> None:
    make_agent(queues=["a", "b"])
    make_agent(queues=["b", "c"])
    make_agent(queues=["d"], status=Agent.Status.DRAINING)
    make_agent(queues=["e"], status=Agent.Status.OFFLINE)
    assert services.queues_online() == {"a", "b", "c"}
