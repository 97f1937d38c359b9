"""The embedded Redis that `make run` starts when no REDIS_URL is set."""

from __future__ import annotations

import os
from pathlib import Path

import redis

from karmchari_site import embedded


def test_it_saves_to_disk_and_outlives_a_ctrl_c_on_the_terminal(
    tmp_path: Path,
) -> None:
    process = embedded.start(tmp_path)
    try:
        client = redis.Redis(unix_socket_path=str(embedded.socket_path(tmp_path)))
        assert client.config_get("save") == {"save": "60 1"}
        # Not in the terminal's process group: `make run` stops it last.
        assert os.getpgid(process.pid) != os.getpgid(0)
        assert os.getsid(process.pid) == process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)
