"""The control bus and live output end to end: API → Redis → a real worker process."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from django.contrib.auth.models import User

from jobs.models import Execution
from tests.integration.conftest import Processes
from tests.tokens import make_token
from tests.waiting import group_gone, process_state, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def get(self, path: str, **params: object) -> requests.Response:
        return self.session.get(f"{self.base}{path}", params=params, timeout=10)

    def post(self, path: str, json: object = None) -> requests.Response:
        return self.session.post(f"{self.base}{path}", json=json, timeout=10)

    def run(self, queue: str, **job: object) -> int:
        self.post("/api/apps/", {"name": "it"})
        created = self.post("/api/jobs/", {"app": "it", "queue": queue, **job})
        assert created.status_code == 201, created.text
        run = self.post(f"/api/jobs/{created.json()['id']}/run/")
        assert run.status_code == 202, run.text
        return int(run.json()["id"])

    def execution(self, execution_id: int) -> dict:
        return self.get(f"/api/executions/{execution_id}/").json()

    def status_is(self, execution_id: int, *statuses: str) -> dict | None:
        body = self.execution(execution_id)
        return body if body["status"] in statuses else None

    def log_contains(self, execution_id: int, text: str) -> bool:
        return text in self.get(f"/api/executions/{execution_id}/log/").json()["text"]


@pytest.fixture
def api(live_server, admin_user: User) -> Api:  # type: ignore[no-untyped-def]
    return Api(live_server.url, make_token(admin_user).key)


def test_it_pauses_and_resumes_a_running_shell_job(
    api: Api, processes: Processes, queue: str
) -> None:
    processes.worker(queue)
    execution_id = api.run(
        queue, name="pausable", spec={"command": "echo started; sleep 2; echo done"}
    )
    wait_for(lambda: api.log_contains(execution_id, "started"), timeout=30)
    pid = api.execution(execution_id)["pid"]
    assert process_state(pid) in {"S", "R"}

    assert api.post(f"/api/executions/{execution_id}/pause/").status_code == 202
    wait_for(lambda: api.status_is(execution_id, "paused"), timeout=5)
    assert process_state(pid) == "T"
    paused_at = time.monotonic()
    # Still stopped a while later, beyond when it would have ended.
    wait_for(lambda: time.monotonic() - paused_at > 2.5, timeout=5)
    assert process_state(pid) == "T"
    assert api.execution(execution_id)["status"] == "paused"

    assert api.post(f"/api/executions/{execution_id}/resume/").status_code == 202
    wait_for(lambda: process_state(pid) != "T", timeout=5)
    # The pause is on the row once it resumed, not only at the end.
    going = wait_for(
        lambda: (b := api.execution(execution_id))["status"] != "paused" and b,
        timeout=5,
    )
    assert going["paused_seconds"] >= 2.5
    body = wait_for(lambda: api.status_is(execution_id, "succeeded"), timeout=15)
    assert body["output"] == "started\ndone\n"
    assert body["paused_seconds"] >= 2.5
    assert [e["action"] for e in body["events"]] == ["pause", "resume"]
    log = api.get(f"/api/executions/{execution_id}/log/").json()
    assert log == {
        "offset": 0,
        "next_offset": len("started\ndone\n"),
        "text": "started\ndone\n",
        "finished": True,
        "status": "succeeded",
    }


def test_it_kills_a_job_that_traps_sigterm_with_sigkill_after_the_grace(
    api: Api, processes: Processes, queue: str
) -> None:
    processes.worker(queue, KARMCHARI_KILL_GRACE="1")
    execution_id = api.run(
        queue,
        name="stubborn",
        spec={
            "command": "trap 'echo got TERM' TERM; echo ready; "
            "while :; do sleep 0.1; done"
        },
    )
    wait_for(lambda: api.log_contains(execution_id, "ready"), timeout=30)
    pid = api.execution(execution_id)["pid"]

    asked_at = time.monotonic()
    response = api.post(f"/api/executions/{execution_id}/kill/")
    assert response.status_code == 202
    assert response.json()["desired_state"] == "kill"
    wait_for(lambda: api.log_contains(execution_id, "got TERM"), timeout=5)
    body = wait_for(lambda: api.status_is(execution_id, "killed"), timeout=10)
    assert time.monotonic() - asked_at >= 1.0
    assert body["exit_code"] == -9
    assert body["reason"] == "Killed on request (SIGKILL after the grace period)."
    assert group_gone(pid)

    again = api.post(f"/api/executions/{execution_id}/kill/")
    assert again.status_code == 409
    assert "already finished (killed)" in again.json()["detail"]
    assert Execution.objects.get(pk=execution_id).events.count() == 1


def test_it_kills_what_a_stopping_worker_still_runs_after_the_grace(
    api: Api, processes: Processes, queue: str
) -> None:
    """SIGTERM to the worker (a supervisor's stop, `make run`'s Ctrl-C): its run gets
    KARMCHARI_WORKER_STOP_GRACE, then is killed and recorded; no process outlives the
    worker (they did: the job's session survived the worker's SIGKILL)."""
    worker = processes.worker(
        queue, KARMCHARI_WORKER_STOP_GRACE="1", KARMCHARI_KILL_GRACE="1"
    )
    execution_id = api.run(
        queue, name="long", spec={"command": "echo ready; exec sleep 60"}
    )
    wait_for(lambda: api.log_contains(execution_id, "ready"), timeout=30)
    pid = api.execution(execution_id)["pid"]

    stopped_at = time.monotonic()
    worker.terminate()  # the main process only, as a supervisor does
    body = wait_for(lambda: api.status_is(execution_id, "killed"), timeout=15)
    assert time.monotonic() - stopped_at >= 1.0
    assert body["reason"] == "Killed on request (SIGTERM)."
    [event] = body["events"]
    assert event["action"] == "kill"
    assert event["detail"] == f"The worker {queue}@{socket.gethostname()} was stopping."
    assert group_gone(pid)
    worker.wait(timeout=15)
