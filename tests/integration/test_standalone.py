"""`manage.py standalone` on embedded defaults: what `make run` starts."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Standalone:
    def __init__(self, data_dir: Path, port: int) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
        }
        env.update(
            KARMCHARI_DATA_DIR=str(data_dir),
            KARMCHARI_PORT=str(port),
            KARMCHARI_WORKER_CONCURRENCY="2",
            PYTHONUNBUFFERED="1",
        )
        self.log = data_dir / "standalone.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "standalone"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for child in self.children():
                child.kill()
            self.process.kill()
            self.process.wait()


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Standalone]:
    instance = Standalone(tmp_path / "data", free_port())
    yield instance
    instance.stop()


def wait_until_up(instance: Standalone) -> str:
    def up() -> str | None:
        if instance.process.poll() is not None:
            raise AssertionError(f"standalone exited:\n{instance.output()}")
        match = re.search(r"password (\S+)", instance.output())
        return (
            match.group(1)
            if match and "Karmchari is up." in instance.output()
            else None
        )

    return wait_for(up, timeout=60)


def test_it_serves_the_admin_and_runs_jobs_then_stops_every_child(
    standalone: Standalone,
) -> None:
    password = wait_until_up(standalone)
    children = standalone.children()
    assert len(children) >= 4  # redis, web, worker, beat (and their pools)

    # Log in to the admin with the printed password.
    browser = requests.Session()
    login = f"{standalone.base}/admin/login/"
    page = browser.get(login)
    assert page.status_code == 200
    csrf = browser.cookies["csrftoken"]
    response = browser.post(
        login,
        data={
            "username": "admin",
            "password": password,
            "csrfmiddlewaretoken": csrf,
            "next": "/admin/",
        },
        headers={"Referer": login},
    )
    assert response.status_code == 200
    assert "Log out" in response.text
    assert browser.get(f"{standalone.base}/static/admin/css/base.css").ok

    # The API with basic auth, and a job through the bundled worker.
    api = requests.Session()
    api.auth = ("admin", password)
    assert api.post(f"{standalone.base}/api/apps/", json={"name": "s"}).ok
    job = api.post(
        f"{standalone.base}/api/jobs/",
        json={"app": "s", "name": "hi", "spec": {"command": "echo standalone"}},
    ).json()
    execution = api.post(f"{standalone.base}/api/jobs/{job['id']}/run/").json()

    def done() -> dict | None:
        body = api.get(f"{standalone.base}/api/executions/{execution['id']}/").json()
        return body if body["status"] == "succeeded" else None

    assert wait_for(done, timeout=60)["output"] == "standalone\n"

    standalone.process.send_signal(signal.SIGTERM)
    assert standalone.process.wait(timeout=30) == 0
    wait_for(
        lambda: not any(c.is_running() and c.status() != "zombie" for c in children),
        timeout=10,
    )


def test_it_exits_non_zero_when_a_child_dies(standalone: Standalone) -> None:
    wait_until_up(standalone)
    beat = next(c for c in standalone.children() if "beat" in " ".join(c.cmdline()))
    beat.kill()
    assert standalone.process.wait(timeout=30) == 1
    assert "beat (pid" in standalone.output()
    assert "stopping everything" in standalone.output()
