"""Real workers register as agents, heartbeat, drain, and lose work when killed."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from django.utils import timezone
from pytest_django.fixtures import Settings

from agents import live, services
from agents.models import Agent
from agents.stats import Sample
from jobs import services as job_services
from jobs.models import App, Execution, Job
from tests.integration.conftest import Processes
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HEARTBEAT = "0.3"


def start_worker(
    processes: Processes, queue: str, name: str, concurrency: int = 1
) -> subprocess.Popen[bytes]:
    return processes.start(
        f"worker-{name}",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "karmchari_site",
            "worker",
            "--queues",
            queue,
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ],
        KARMCHARI_HEARTBEAT_SECONDS=HEARTBEAT,
        KARMCHARI_AGENT_DB_SECONDS="1",
    )


def agent_named(name: str, status: str = "online") -> Agent | None:
    return Agent.objects.filter(
        name=f"{name}@{socket.gethostname()}", status=status
    ).first()


def make_job(queue: str, command: str, **fields: object) -> Job:
    app, _ = App.objects.get_or_create(name="it")
    return Job.objects.create(
        app=app,
        name=f"job-{Job.objects.count()}",
        queue=queue,
        spec={"command": command},
        **fields,
    )


def status_of(execution: Execution) -> str:
    execution.refresh_from_db()
    return execution.status


def test_it_registers_heartbeats_and_says_goodbye(
    processes: Processes, queue: str
) -> None:
    worker = start_worker(processes, queue, name=queue)
    agent = wait_for(lambda: agent_named(queue), timeout=20)
    assert agent.host == socket.gethostname()
    assert agent.os_name == platform.system()
    assert agent.os_version == platform.release()
    assert agent.cpu_arch == platform.machine()
    assert agent.cpu_cores == psutil.cpu_count()
    assert agent.memory_total == psutil.virtual_memory().total
    assert agent.swap_total == psutil.swap_memory().total
    assert agent.queues == [queue]
    assert agent.pid == worker.pid
    assert agent.version == "0.1.0"
    assert agent.started_at is not None

    wait_for(lambda: live.read_one(agent.instance_id), timeout=10)
    # A later beat: the first has no load yet (a load is measured between two).
    later = wait_for(
        lambda: (s := live.read_one(agent.instance_id)) and s.process_cpu_load,
        timeout=10,
    )
    later = live.read_one(agent.instance_id)
    assert later is not None and later.process_cpu_load is not None
    assert later.memory_total == psutil.virtual_memory().total
    assert len(live.read_history(agent.instance_id)) >= 2
    assert queue in services.queues_online()

    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=15)
    assert agent_named(queue, status="offline") is not None
    assert queue not in services.queues_online()


def test_it_drains_a_worker_while_its_running_job_finishes(
    processes: Processes, queue: str, tmp_path: Path
) -> None:
    start_worker(processes, queue, name=queue, concurrency=2)
    agent = wait_for(lambda: agent_named(queue), timeout=20)
    gate = tmp_path / "gate"
    first = job_services.job_trigger(
        job=make_job(queue, f"while [ ! -e {gate} ]; do sleep 0.05; done; echo done")
    )
    wait_for(lambda: status_of(first) == "running", timeout=15)

    agent = services.agent_drain(agent=agent)
    assert agent.status == Agent.Status.DRAINING
    second = job_services.job_trigger(job=make_job(queue, "echo second"))
    gate.touch()
    wait_for(lambda: status_of(first) == "succeeded", timeout=15)
    # The worker had a free slot all along: only the drain kept it from the second.
    assert status_of(second) == "pending"
    wait_for(lambda: live.read_one(agent.instance_id).running == [], timeout=5)  # type: ignore[union-attr]
    assert status_of(second) == "pending"

    services.agent_resume(agent=agent)
    wait_for(lambda: status_of(second) == "succeeded", timeout=15)


def test_it_keeps_a_drained_worker_drained_across_a_restart(
    processes: Processes, queue: str
) -> None:
    worker = start_worker(processes, queue, name=queue)
    agent = wait_for(lambda: agent_named(queue), timeout=20)
    # Ready (beating), so it answers remote control.
    wait_for(lambda: live.read_one(agent.instance_id), timeout=20)
    services.agent_drain(agent=agent)
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=15)

    start_worker(processes, queue, name=queue)
    again = wait_for(lambda: agent_named(queue, status="draining"), timeout=20)
    assert again.instance_id != agent.instance_id and again.drained
    waiting = job_services.job_trigger(job=make_job(queue, "echo waited"))
    # Beating (so its cancel came after the consumer started) yet taking nothing.
    wait_for(lambda: live.read_one(again.instance_id), timeout=10)
    assert status_of(waiting) == "pending"

    services.agent_resume(agent=again)
    wait_for(lambda: status_of(waiting) == "succeeded", timeout=15)
    assert not Agent.objects.get(pk=again.pk).drained


@pytest.mark.chaos  # kill -9 of a worker mid-run (docs/reliability.md)
def test_it_recovers_the_work_of_a_killed_worker_on_another(
    processes: Processes, queue: str, tmp_path: Path, settings: Settings
) -> None:
    settings.KARMCHARI_AGENT_WINDOW_SECONDS = 1.5
    doomed = start_worker(processes, queue, name="doomed")
    wait_for(lambda: agent_named("doomed"), timeout=20)
    marker = tmp_path / "ran-once"
    # The first attempt hangs; the retry finds the marker and succeeds.
    job = make_job(
        queue,
        f"if [ -e {marker} ]; then echo retried; exit 0; fi; touch {marker}; sleep 60",
        max_retries=1,
        retry_backoff=1,
    )
    execution = job_services.job_trigger(job=job)
    wait_for(lambda: status_of(execution) == "running" and execution.pid, timeout=15)
    # Its pid is recorded as the shell starts: let it reach the marker first, or the
    # retry would be the one to hang.
    wait_for(marker.exists, timeout=15)

    os.killpg(doomed.pid, signal.SIGKILL)
    os.killpg(execution.pid, signal.SIGKILL)  # The job's own process group.
    doomed.wait(timeout=5)
    start_worker(processes, queue, name="rescuer")

    swept = wait_for(lambda: services.agents_sweep_stale(), timeout=10)
    assert [agent.name for agent in swept] == [f"doomed@{socket.gethostname()}"]
    execution.refresh_from_db()
    assert execution.status == "lost"
    assert "went offline" in execution.reason

    retry = Execution.objects.get(retry_of=execution)
    assert retry.attempt == 2
    wait_for(lambda: status_of(retry) == "succeeded", timeout=20)
    assert retry.worker == f"rescuer@{socket.gethostname()}"
    assert retry.output == "retried\n"


def test_it_waits_for_a_name_held_by_a_live_worker_elsewhere(
    processes: Processes, queue: str, settings: Settings
) -> None:
    """Two workers under one name would take the row from each other, each time
    giving up the other's running work as lost: the newcomer takes nothing until
    the holder falls silent."""
    settings.KARMCHARI_AGENT_WINDOW_SECONDS = 0.9  # The worker's: 3 heartbeats.
    holder = Agent.objects.create(
        name=f"{queue}@{socket.gethostname()}",
        host="elsewhere",
        pid=1,
        queues=[queue],
        last_heartbeat=timezone.now(),
    )
    stamp = Sample(
        at=0, memory_total=1, memory_free=1, swap_total=0, swap_free=0,
        process_cpu_load=None, cpu_time=0, system_cpu_load=None,
    )  # fmt: skip
    live.publish(instance_id=holder.instance_id, sample=stamp)
    start_worker(processes, queue, name=queue)
    waiting = job_services.job_trigger(job=make_job(queue, "echo waited"))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # The holder beats on.
        Agent.objects.filter(pk=holder.pk).update(last_heartbeat=timezone.now())
        live.publish(instance_id=holder.instance_id, sample=stamp)
        assert status_of(waiting) == "pending"
        time.sleep(0.2)
    assert Agent.objects.get(pk=holder.pk).instance_id == holder.instance_id

    # Silent now: within the window the newcomer takes the name and the work.
    wait_for(lambda: status_of(waiting) == "succeeded", timeout=15)
    taken = Agent.objects.get(pk=holder.pk)
    assert taken.host == socket.gethostname() and taken.status == "online"
