"""http, task and external jobs on real processes: a worker, a web server, Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.conftest import Processes
from tests.integration.test_control import Api
from tests.integration.test_control import api as api
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 418 if self.path == "/teapot" else 200
        body = f"pong {self.path} {self.headers.get('X-Api-Key', '')}".strip().encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_it_runs_http_jobs(
    api: Api, processes: Processes, queue: str, site: str
) -> None:
    processes.worker(queue)
    ok = api.run(queue, name="ping", kind="http", spec={"url": f"{site}/ping"})
    teapot = api.run(
        queue,
        name="teapot",
        kind="http",
        spec={"url": f"{site}/teapot", "expected_status": [200, 204]},
    )
    body = wait_for(lambda: api.status_is(ok, "succeeded", "failed"), timeout=30)
    assert body["status"] == "succeeded"
    assert body["output"] == "HTTP 200 OK\n\npong /ping"
    body = wait_for(lambda: api.status_is(teapot, "succeeded", "failed"), timeout=30)
    assert body["status"] == "failed"
    assert body["reason"] == "HTTP status 418, expected 200, 204."


def test_it_runs_a_celery_task_job_to_its_result(
    api: Api,
    processes: Processes,
    queue: str,
    settings: Any,
) -> None:
    settings.KARMCHARI_ALLOWED_TASKS = ["celery.accumulate"]
    # Each task job holds a worker slot while it follows its task: leave room for
    # the tasks themselves (in production, send them to another queue).
    processes.worker(queue, concurrency=4, KARMCHARI_ALLOWED_TASKS="celery.accumulate")
    ok = api.run(
        queue,
        name="sum",
        kind="task",
        spec={"task": "celery.accumulate", "args": [1, 2, 3], "queue": queue},
    )
    broken = api.run(
        queue,
        name="broken",
        kind="task",
        spec={
            "task": "celery.accumulate",
            "args": [1],
            "kwargs": {"index": 5},
            "queue": queue,
        },
    )
    body = wait_for(lambda: api.status_is(ok, "succeeded", "failed"), timeout=30)
    assert body["status"] == "succeeded", body
    assert body["output"] == "[1, 2, 3]"
    body = wait_for(lambda: api.status_is(broken, "succeeded", "failed"), timeout=30)
    assert body["status"] == "failed"
    assert "IndexError" in body["reason"]
    refused = api.post(
        "/api/jobs/",
        {"app": "it", "name": "evil", "kind": "task", "spec": {"task": "os.system"}},
    )
    assert refused.status_code == 400


def test_it_lets_an_external_process_follow_its_desired_state_through_the_api(
    api: Api,
    queue: str,
) -> None:
    execution_id = api.run(queue, name="outside", kind="external", spec={})
    assert api.execution(execution_id)["status"] == "running"

    # The external process: report progress, read what the operator wants.
    step = api.post(
        f"/api/executions/{execution_id}/report/",
        {"status": "running", "output": "step 1\n"},
    )
    assert step.status_code == 200
    assert step.json()["desired_state"] == "run"

    assert api.post(f"/api/executions/{execution_id}/kill/").status_code == 202
    assert api.execution(execution_id)["desired_state"] == "kill"
    end = api.post(
        f"/api/executions/{execution_id}/report/",
        {"status": "killed", "output": "stopping\n", "reason": "asked to stop"},
    ).json()
    assert (end["status"], end["output"]) == ("killed", "step 1\nstopping\n")
    assert [e["action"] for e in end["events"]] == ["kill", "report"]
    log = api.get(f"/api/executions/{execution_id}/log/", offset=7).json()
    assert (log["text"], log["finished"]) == ("stopping\n", True)


def test_it_hands_secrets_to_the_run_and_masks_them_in_its_output(
    api: Api, processes: Processes, queue: str, site: str
) -> None:
    """Set through the API, stored encrypted, decrypted by a real worker: in the shell
    job's environment and the http job's header, and never in what is recorded."""
    processes.worker(queue)
    shell = api.run(
        queue,
        name="uses-secret",
        kind="shell",
        spec={"command": 'test "$DB_PASSWORD" = hunter2-xyz && echo "pw=$DB_PASSWORD"'},
        secrets={"DB_PASSWORD": "hunter2-xyz"},
    )
    http = api.run(
        queue,
        name="calls-api",
        kind="http",
        spec={"url": f"{site}/ping", "headers": {"X-Api-Key": "${API_KEY}"}},
        secrets={"API_KEY": "k-12345"},
    )
    body = wait_for(lambda: api.status_is(shell, "succeeded", "failed"), timeout=30)
    assert (body["status"], body["output"]) == ("succeeded", "pw=***\n")
    assert "hunter2" not in api.get(f"/api/executions/{shell}/output/").text
    body = wait_for(lambda: api.status_is(http, "succeeded", "failed"), timeout=30)
    assert body["status"] == "succeeded"
    assert body["output"] == "HTTP 200 OK\n\npong /ping ***"
    job = api.get("/api/jobs/", name="calls-api").json()["results"][0]
    assert job["secrets"] == {"API_KEY": "********"}
