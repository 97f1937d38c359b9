"""`make run`'s command, without starting anything (tests/integration starts it)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from jobs.management.commands.standalone import Command


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "http://127.0.0.1:8765"), ("https://jobs.example.com", None)],
)
def test_it_points_notification_links_at_its_own_web_server(
    monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str | None
) -> None:
    if given is None:
        monkeypatch.delenv("KARMCHARI_BASE_URL", raising=False)
    else:
        monkeypatch.setenv("KARMCHARI_BASE_URL", given)
    command = Command()
    command.children = []
    with mock.patch("subprocess.Popen") as popen:
        command._start_roles("127.0.0.1", 8765, 2)
    environments = [call.kwargs["env"] for call in popen.call_args_list]
    assert len(environments) == 3
    for env in environments:
        assert env["KARMCHARI_BASE_URL"] == (expected or given)


@pytest.mark.parametrize(
    ("configured", "expected"), [(float("inf"), "5"), (0.5, "0.5")]
)
def test_it_gives_the_worker_a_stop_grace_so_no_job_outlives_it(
    settings: Any, configured: float, expected: str
) -> None:
    """Ctrl-C: the worker kills its runs after the grace (jobs/shutdown.py) instead of
    waiting for them until it is killed itself, leaving their processes behind."""
    settings.KARMCHARI_WORKER_STOP_GRACE = configured
    command = Command()
    command.children = []
    with mock.patch("subprocess.Popen") as popen:
        command._start_roles("127.0.0.1", 8765, 2)
    for call in popen.call_args_list:
        assert call.kwargs["env"]["KARMCHARI_WORKER_STOP_GRACE"] == expected


def test_it_refuses_a_port_already_taken_before_starting_anything() -> None:
    """Else it printed "Karmchari is up" (something answered there) while its own
    web server had exited with "Address already in use"."""
    import socket

    from django.core.management import CommandError, call_command

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(CommandError, match=f"Cannot listen on 127.0.0.1:{port}"):
            call_command("standalone", port=port, host="127.0.0.1")
