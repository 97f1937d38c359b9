"""`make run`'s command, without starting anything (tests/integration starts it)."""

from __future__ import annotations

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
