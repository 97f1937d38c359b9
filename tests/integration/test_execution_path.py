"""A job created over HTTP with a token runs on a real Celery worker process."""

from __future__ import annotations

import pytest
import requests
from django.contrib.auth.models import User

from jobs.models import Execution
from tests.integration.conftest import Processes
from tests.tokens import make_token
from tests.waiting import group_gone, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def http(live_server, admin_user: User) -> requests.Session:  # type: ignore[no-untyped-def]
    session = requests.Session()
    token = make_token(admin_user)
    session.headers["Authorization"] = f"Token {token.key}"
    session.base_url = live_server.url  # type: ignore[attr-defined]
    return session


def create_and_run(http: requests.Session, queue: str, **job: object) -> int:
    base = http.base_url  # type: ignore[attr-defined]
    http.post(f"{base}/api/apps/", json={"name": "it"})
    response = http.post(f"{base}/api/jobs/", json={"app": "it", "queue": queue, **job})
    assert response.status_code == 201, response.text
    run = http.post(f"{base}/api/jobs/{response.json()['id']}/run/")
    assert run.status_code == 202, run.text
    return int(run.json()["id"])


def finished(http: requests.Session, execution_id: int) -> dict | None:
    base = http.base_url  # type: ignore[attr-defined]
    body = http.get(f"{base}/api/executions/{execution_id}/").json()
    return body if body["status"] in Execution.FINAL_STATUSES else None


def test_it_runs_succeeding_failing_and_timed_out_jobs(
    http: requests.Session, processes: Processes, queue: str
) -> None:
    processes.worker(queue)
    ok = create_and_run(
        http, queue, name="ok", spec={"command": "echo hello from $KARMCHARI_JOB"}
    )
    bad = create_and_run(
        http, queue, name="bad", spec={"command": "echo broken >&2; exit 7"}
    )
    slow = create_and_run(
        http,
        queue,
        name="slow",
        timeout=1,
        spec={"command": "sleep 300 & sleep 300; wait"},
    )

    body = wait_for(lambda: finished(http, ok), timeout=60)
    assert body["status"] == "succeeded"
    assert body["output"] == "hello from ok\n"
    assert body["exit_code"] == 0
    assert body["worker"].startswith(f"{queue}@")

    body = wait_for(lambda: finished(http, bad), timeout=60)
    assert body["status"] == "failed"
    assert body["exit_code"] == 7
    assert body["error"] == "broken\n"

    body = wait_for(lambda: finished(http, slow), timeout=60)
    assert body["status"] == "timed_out"
    assert body["pid"]
    assert group_gone(body["pid"])

    stats = http.get(f"{http.base_url}/api/jobs/?app=it").json()["results"]  # type: ignore[attr-defined]
    counts = {job["name"]: job["stats"] for job in stats}
    assert counts["ok"]["success_count"] == 1
    assert counts["bad"]["error_count"] == 1
    assert counts["slow"]["error_count"] == 1
