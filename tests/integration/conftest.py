"""Real processes for integration tests: Celery workers, web servers.

Each process gets the test database and the test run's Redis, runs on a queue of its
own, and is always stopped, even when the test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """The URL of the database the test run is using, for child processes."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "KARMCHARI_DATA_DIR": str(settings.DATA_DIR),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PYTHONUNBUFFERED": "1",
    }
    if not settings.EMBEDDED_REDIS:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra)
    return env


class Processes:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(
        self, name: str, command: list[str], **env: str
    ) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=child_env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append((process, log))
        return process

    def worker(
        self, queue: str, concurrency: int = 2, name: str | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        """A worker consuming `queue`; give each a `name` of its own to start more
        than one on the same queue (it names the log file and the Celery node)."""
        name = name or queue
        return self.start(
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
            **env,
        )

    def beat(self) -> subprocess.Popen[bytes]:
        return self.start(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "karmchari_site",
                "beat",
                "--scheduler",
                "jobs.scheduler:JobScheduler",
                "--pidfile=",
                "--loglevel",
                "INFO",
            ],
        )

    def web(self, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
        """The web role as production runs it (docker-entrypoint.sh): uvicorn."""
        return self.start(
            "web",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "karmchari_site.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
            ],
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
            for _, log in self.running
        )

    def stop_all(self) -> None:
        for process, _ in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(procs.logs())


@pytest.fixture
def queue() -> str:
    """A queue name of this test's own, so leftovers never reach another test."""
    return f"it-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[Any]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


WaitFor = Callable[..., Any]
