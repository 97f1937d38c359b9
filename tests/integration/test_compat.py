"""The compatibility APIs against real processes: a pause through the original
Karmchari's /jobState stops a real process on a worker, a kill ends it."""

from __future__ import annotations

import re

import pytest
import requests
from django.contrib.auth.models import User

from jobs import services
from jobs.models import App, Execution, Job
from tests.integration.conftest import Processes
from tests.waiting import group_gone, process_state, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_it_pauses_and_kills_a_real_process_through_job_state(
    live_server,
    admin_user: User,
    processes: Processes,
    queue: str,  # type: ignore[no-untyped-def]
) -> None:
    # An operator made the "teams" type job a shell job on this test's queue.
    app = services.app_get_or_create(name="default")
    services.job_create(
        app=app,
        name="karmchari-teams",
        kind=Job.Kind.SHELL,
        spec={"command": "echo started; sleep 30"},
        queue=queue,
    )
    processes.worker(queue)
    session = requests.Session()
    session.auth = ("admin", "password")  # curl -u admin:password
    base = live_server.url

    # curl -d "type=teams" .../registerJob
    created = session.post(f"{base}/registerJob", data={"type": "teams"}, timeout=10)
    assert created.status_code == 200, created.text
    job_id = re.fullmatch(r"Created! id = ([0-9a-f]{32})", created.text).group(1)  # type: ignore[union-attr]

    def running_pid() -> int | None:
        execution = Execution.objects.get(external_id=job_id)
        return execution.pid if execution.status == "running" else None

    pid = wait_for(running_pid, timeout=30)
    wait_for(lambda: process_state(pid) in {"S", "R"}, timeout=10)

    # curl -d "id=<id>&command=pause" .../jobState
    paused = session.post(
        f"{base}/jobState", data={"id": job_id, "command": "pause"}, timeout=10
    )
    assert paused.text == f"{job_id} -- pause"
    wait_for(lambda: process_state(pid) == "T", timeout=5)
    wait_for(
        lambda: Execution.objects.get(external_id=job_id).status == "paused", timeout=5
    )
    read = session.get(f"{base}/jobState", params={"id": job_id}, timeout=10)
    assert read.text == f"{job_id} -- pause"

    resumed = session.post(
        f"{base}/jobState", data={"id": job_id, "command": "start"}, timeout=10
    )
    assert resumed.text == f"{job_id} -- start"
    wait_for(lambda: process_state(pid) not in {"T", None}, timeout=5)

    killed = session.post(
        f"{base}/jobState", data={"id": job_id, "command": "kill"}, timeout=10
    )
    assert killed.text == f"{job_id} -- kill"
    assert group_gone(pid, timeout=10)
    wait_for(
        lambda: Execution.objects.get(external_id=job_id).status == "killed", timeout=15
    )
    assert App.objects.filter(name="default").exists()
