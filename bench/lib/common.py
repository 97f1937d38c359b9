"""What the dispatch and control benchmarks share: a database and a Redis of the
run's own, and a real Celery worker that is always stopped.

PostgreSQL when one answers at DATABASE_URL (default postgres://postgres@127.0.0.1:
5432/postgres; a database of the run's own is created and dropped), else SQLite in a
temporary directory. Redis at REDIS_URL (default redis://127.0.0.1:6379/<db>, a DB
number per script), with a cache prefix and a queue of the run's own so nothing
meets another run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/postgres"


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", "", ""))


def _postgres_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 5432), timeout=2
        ).close()
    except OSError:
        return False
    try:
        import psycopg

        with psycopg.connect(_with_db(url, "postgres"), connect_timeout=3):
            return True
    except Exception:
        return False


@contextlib.contextmanager
def bench_environment(name: str, redis_db: int) -> Iterator[dict[str, str]]:
    """Set os.environ for a run of its own and yield it (for child processes too);
    the database and temporary files are removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=f"karmchari-bench-{name}-"))
    base = os.environ.get("DATABASE_URL", DEFAULT_PG)
    pg_name = None
    if base.startswith("postgres") and _postgres_reachable(base):
        import psycopg

        pg_name = f"karmchari_bench_{name}_{os.getpid()}"
        with psycopg.connect(_with_db(base, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}"')
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        database_url = _with_db(base, pg_name)
    else:
        database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    redis_url = os.environ.get("REDIS_URL", f"redis://127.0.0.1:6379/{redis_db}")
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "KARMCHARI_DATA_DIR": str(tmp),
        "KARMCHARI_CACHE_PREFIX": f"bench-{name}-{os.getpid()}",
        "DJANGO_SETTINGS_MODULE": "karmchari_site.settings",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield {**os.environ}
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if pg_name is not None:
            import psycopg

            with psycopg.connect(_with_db(base, "postgres"), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)


def setup_django() -> str:
    """Configure Django from os.environ, migrate; answer the database vendor."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    return connection.vendor


class Worker:
    """A real `celery worker` process on a queue of its own; stop() always."""

    def __init__(
        self,
        *,
        app: str,
        queue: str,
        concurrency: int,
        env: dict[str, str],
        log: Path,
    ) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    app,
                    "worker",
                    "--queues",
                    queue,
                    "--concurrency",
                    str(concurrency),
                    "--hostname",
                    f"{queue}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "WARNING",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"the worker exited ({self.process.returncode}):\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.002,
    check: Callable[[], None] | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout}s waiting for {condition}")
        if check is not None:
            check()
        time.sleep(interval)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
