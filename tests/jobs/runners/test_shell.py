from __future__ import annotations

import signal
from pathlib import Path

import pytest
from django.test import override_settings

from jobs.runners import RunContext, SpecError
from jobs.runners.shell import ShellRunner, TailBuffer
from tests.waiting import group_gone

runner = ShellRunner()


def run(command: str, timeout: float | None = None, **spec: object) -> tuple:
    pids: list[int] = []
    context = RunContext(
        execution_id=7,
        job_name="nightly",
        app_name="default",
        timeout=timeout,
        on_start=pids.append,
    )
    outcome = runner.run({"command": command, **spec}, context)
    return outcome, pids


def test_it_captures_stdout_and_succeeds() -> None:
    outcome, pids = run("echo hello; echo world")
    assert outcome.status == "succeeded"
    assert outcome.exit_code == 0
    assert outcome.output == "hello\nworld\n"
    assert len(pids) == 1


def test_it_records_failure_with_exit_code_and_stderr() -> None:
    outcome, _ = run("echo oops >&2; exit 3")
    assert outcome.status == "failed"
    assert outcome.exit_code == 3
    assert outcome.error == "oops\n"
    assert outcome.reason == "Exited with code 3."


def test_it_runs_in_cwd_with_env(tmp_path: Path) -> None:
    outcome, _ = run(
        'pwd; echo "$GREETING $KARMCHARI_JOB $KARMCHARI_EXECUTION_ID"',
        cwd=str(tmp_path),
        env={"GREETING": "hi"},
    )
    assert outcome.output == f"{tmp_path}\nhi nightly 7\n"


def test_it_does_not_leak_the_workers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2")
    outcome, _ = run('echo "[$DATABASE_PASSWORD]"')
    assert outcome.output == "[]\n"


def test_it_fails_cleanly_when_cwd_is_missing(tmp_path: Path) -> None:
    outcome, pids = run("true", cwd=str(tmp_path / "nope"))
    assert outcome.status == "failed"
    assert "Could not start" in outcome.reason
    assert pids == []


def test_it_times_out_and_kills_the_whole_group() -> None:
    outcome, pids = run("sleep 30 & sleep 30; wait", timeout=0.3)
    assert outcome.status == "timed_out"
    assert outcome.reason == "Timed out after 0.3s."
    assert outcome.exit_code == -signal.SIGTERM
    assert group_gone(pids[0])


@override_settings(KARMCHARI_KILL_GRACE=0.2)
def test_it_sends_sigkill_after_the_grace_when_sigterm_is_ignored() -> None:
    outcome, pids = run("trap '' TERM; sleep 30", timeout=0.2)
    assert outcome.status == "timed_out"
    assert outcome.exit_code == -signal.SIGKILL
    assert group_gone(pids[0])


def test_it_stops_background_leftovers_when_the_command_ends() -> None:
    outcome, pids = run("sleep 30 >/dev/null 2>&1 & echo started")
    assert outcome.status == "succeeded"
    assert outcome.output == "started\n"
    assert group_gone(pids[0])


def test_it_ends_a_command_that_closes_its_pipes_but_keeps_running() -> None:
    outcome, _ = run("exec >/dev/null 2>&1; sleep 30", timeout=0.3)
    assert outcome.status == "timed_out"


@override_settings(KARMCHARI_OUTPUT_LIMIT=1024)
def test_it_keeps_the_tail_of_large_output_and_marks_the_cut() -> None:
    outcome, _ = run("seq 1 5000")
    assert outcome.output.startswith("[... ")
    assert "bytes truncated ...]\n" in outcome.output
    assert outcome.output.endswith("4999\n5000\n")
    body = outcome.output.split("]\n", 1)[1]
    assert len(body.encode()) == 1024


def test_it_reports_a_signal_death() -> None:
    outcome, _ = run("kill -9 $$")
    assert outcome.status == "failed"
    assert outcome.reason == "Killed by signal SIGKILL."


def test_tail_buffer_counts_dropped_bytes() -> None:
    buffer = TailBuffer(4)
    for chunk in (b"abc", b"defgh", b"ij"):
        buffer.write(chunk)
    assert buffer.text() == "[... 6 bytes truncated ...]\nghij"


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ("echo", "spec", "Must be an object"),
        ({}, "command", "non-empty command"),
        ({"command": "   "}, "command", "non-empty command"),
        ({"command": "a\x00b"}, "command", "NUL byte"),
        ({"command": "x", "cwd": "relative/dir"}, "cwd", "absolute path"),
        ({"command": "x", "env": ["A=1"]}, "env", "Must be an object"),
        ({"command": "x", "env": {"1BAD": "v"}}, "env", "not a valid variable"),
        ({"command": "x", "env": {"A": 1}}, "env", "must be a string"),
        ({"command": "x", "shell": "bash"}, "spec", "Unknown keys"),
    ],
)
def test_it_refuses_bad_specs(spec: object, field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        runner.validate(spec)
    assert message in info.value.errors[field]


def test_it_cleans_a_good_spec() -> None:
    assert runner.validate({"command": "ls", "cwd": "", "env": {}}) == {"command": "ls"}
