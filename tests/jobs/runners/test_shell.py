from __future__ import annotations

import concurrent.futures
import os
import pwd
import signal
import time
from pathlib import Path

import pytest
from django.test import override_settings

from jobs.runners import Outcome, RunContext, SpecError
from jobs.runners.shell import ShellRunner, TailBuffer
from tests.waiting import group_gone, process_state, wait_for

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


def test_it_counts_dropped_bytes_in_the_tail_buffer() -> None:
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
        ({"command": "x", "user": 0}, "user", "Must be a user name"),
        ({"command": "x", "user": "a b"}, "user", "Must be a user name"),
    ],
)
def test_it_refuses_bad_specs(spec: object, field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        runner.validate(spec)
    assert message in info.value.errors[field]


def test_it_refuses_an_env_name_that_is_not_text() -> None:
    # Not from JSON, whose keys are text, but from code or YAML (`env: {1: b}`).
    with pytest.raises(SpecError) as info:
        runner.validate({"command": "x", "env": {1: "b"}})
    assert info.value.errors["env"] == "1 is not a valid variable name."


def test_it_cleans_a_good_spec() -> None:
    assert runner.validate({"command": "ls", "cwd": "", "env": {}}) == {"command": "ls"}


# --- Control: pause, resume, kill (the supervise loop polls context.poll) -----------


class Controlled:
    """Runs a shell command in a thread with a desired state the test sets."""

    def __init__(self, command: str, timeout: float | None = None) -> None:
        self.desired = "run"
        self.statuses: list[str] = []
        self.paused: list[float] = []  # Paused time so far, with each status.
        self.pids: list[int] = []
        self.output = bytearray()
        context = RunContext(
            execution_id=9,
            job_name="ctl",
            app_name="default",
            timeout=timeout,
            on_start=self.pids.append,
            on_output=self.output.extend,
            poll=lambda: self.desired,
            on_status=self.on_status,
        )
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.future = self.pool.submit(runner.run, {"command": command}, context)

    def on_status(self, status: str, paused_seconds: float) -> None:
        self.statuses.append(status)
        self.paused.append(paused_seconds)

    def pid(self) -> int:
        return wait_for(lambda: self.pids and self.pids[0], timeout=10)

    def outcome(self) -> Outcome:
        try:
            return self.future.result(timeout=30)
        finally:
            self.pool.shutdown()


def test_it_pauses_and_resumes_the_group_and_excludes_paused_time() -> None:
    job = Controlled("echo start; sleep 0.5; echo done", timeout=1.5)
    pid = job.pid()
    wait_for(lambda: b"start" in job.output)
    job.desired = "pause"
    wait_for(lambda: process_state(pid) == "T")
    assert job.statuses == ["paused"]
    paused_at = time.monotonic()
    # Stopped longer than the whole timeout: only running time may count.
    wait_for(lambda: time.monotonic() - paused_at > 1.6, timeout=5)
    assert process_state(pid) == "T"
    job.desired = "run"
    outcome = job.outcome()
    assert outcome.status == "succeeded", outcome
    assert outcome.output == "start\ndone\n"
    assert job.statuses == ["paused", "running"]
    assert outcome.paused_seconds >= 1.6
    # Told when it resumed, so the row has it while the run goes on.
    assert job.paused[0] == 0 and 1.6 <= job.paused[1] <= outcome.paused_seconds


@override_settings(KARMCHARI_KILL_GRACE=0.3)
def test_it_kills_on_request_with_sigkill_after_the_grace() -> None:
    job = Controlled(
        "trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.1; done"
    )
    pid = job.pid()
    wait_for(lambda: b"ready" in job.output)
    job.desired = "kill"
    outcome = job.outcome()
    assert outcome.status == "killed"
    assert outcome.exit_code == -signal.SIGKILL
    assert outcome.reason == "Killed on request (SIGKILL after the grace period)."
    assert "got TERM" in outcome.output
    assert group_gone(pid)


def test_it_kills_a_paused_job() -> None:
    job = Controlled("echo ready; sleep 30")
    pid = job.pid()
    wait_for(lambda: b"ready" in job.output)
    job.desired = "pause"
    wait_for(lambda: process_state(pid) == "T")
    job.desired = "kill"
    outcome = job.outcome()
    assert outcome.status == "killed"
    assert outcome.exit_code == -signal.SIGTERM
    assert group_gone(pid)


def test_it_streams_output_as_it_arrives() -> None:
    job = Controlled("echo one; echo two >&2; sleep 0.2; echo three")
    outcome = job.outcome()
    assert outcome.status == "succeeded"
    assert sorted(bytes(job.output).split()) == [b"one", b"three", b"two"]


@override_settings(KARMCHARI_SHELL_ALLOWED_COMMANDS=["/opt/jobs/", "make"])
@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        ("/opt/jobs/backup.sh --full", True),
        ("make", True),
        ("make test", True),
        ("makeover", False),
        ("rm -rf /", False),
        ("make test; rm -rf /", False),
        ("make $(whoami)", False),
        ("/opt/jobs/x.sh | sh", False),
        ("/opt/jobs/../../bin/sh -c id", False),
        ('/opt/jobs/"../../bin/sh"', False),
        ("/opt/jobs/$TOOL", False),
        ("/opt/jobs/${TOOL}", False),
        ("/opt/jobs/*", False),
        ("/opt/jobs/x\\ y", True),
        ("/opt/jobs/\\.\\./x", False),
        ("/opt/jobs/'unterminated", False),
        ("/opt/jobs/report.sh $HOME ../out", True),
    ],
)
def test_it_enforces_the_command_allow_list(command: str, allowed: bool) -> None:
    if allowed:
        assert runner.validate({"command": command})["command"] == command
    else:
        with pytest.raises(SpecError) as info:
            runner.validate({"command": command})
        assert "command" in info.value.errors


def test_it_refuses_at_run_time_a_command_the_allow_list_dropped() -> None:
    with override_settings(KARMCHARI_SHELL_ALLOWED_COMMANDS=["/opt/jobs/"]):
        outcome, pids = run("echo hi")
    assert outcome.status == "failed"
    assert outcome.reason.startswith("Command refused:")
    assert pids == []


def test_it_puts_secrets_in_the_environment_over_the_spec_env() -> None:
    context = RunContext(
        execution_id=7,
        job_name="nightly",
        app_name="default",
        timeout=None,
        secrets={"DB_PASSWORD": "hunter2", "MODE": "secret-mode"},
    )
    spec = {"command": 'echo "$DB_PASSWORD $MODE $OTHER"'}
    outcome = runner.run({**spec, "env": {"MODE": "fast", "OTHER": "x"}}, context)
    assert outcome.output == "hunter2 secret-mode x\n"


@override_settings(KARMCHARI_KILL_GRACE=1.5)
def test_it_does_not_count_the_kill_grace_of_a_paused_job_as_paused() -> None:
    job = Controlled(
        "trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.1; done"
    )
    pid = job.pid()
    wait_for(lambda: b"ready" in job.output)
    job.desired = "pause"
    wait_for(lambda: process_state(pid) == "T")
    paused_at = time.monotonic()
    time.sleep(0.3)
    job.desired = "kill"
    killed_at = time.monotonic()
    outcome = job.outcome()
    assert outcome.status == "killed"
    # SIGCONT came with the SIGTERM: the group ran its handler through the grace.
    assert outcome.paused_seconds < killed_at - paused_at + 0.5
    assert job.statuses == ["paused", "running"]


def test_it_refuses_at_run_time_a_command_that_climbs_out_of_an_allowed_directory(
    tmp_path: Path,
) -> None:
    allowed = tmp_path / "jobs"
    allowed.mkdir()
    escape = f"{allowed}/" + "../" * (len(allowed.parts) - 1) + "bin/echo escaped"
    with override_settings(KARMCHARI_SHELL_ALLOWED_COMMANDS=[f"{allowed}/"]):
        outcome, pids = run(escape)
    assert outcome.status == "failed"
    assert outcome.reason.startswith("Command refused:")
    assert pids == []


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of a session: a shell job runs in its own."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
            if os.getsid(pid) == sid and process_state(pid) not in (None, "Z"):
                members.append(pid)
        except OSError:
            continue
    return members


@pytest.mark.parametrize("ending", ["timeout", "kill", "exit"])
def test_it_stops_what_the_job_put_in_a_process_group_of_its_own(ending: str) -> None:
    """GNU timeout(1) puts itself and its command in a group of their own: a
    timeout, a kill and the command's end stop them too, and a pause stops them."""
    command = {
        "exit": "timeout 30 sleep 30 & sleep 0.5; echo done",
        "timeout": "echo started && timeout 30 sleep 30",
        "kill": "echo started && timeout 30 sleep 30",
    }[ending]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pids: list[int] = []
        desired = ["run"]
        context = RunContext(
            execution_id=7,
            job_name="nightly",
            app_name="default",
            timeout=1.0 if ending == "timeout" else None,
            on_start=pids.append,
            poll=lambda: desired[0],
        )
        running = pool.submit(runner.run, {"command": command}, context)
        assert wait_for(lambda: len(session_members(pids[0]) if pids else []) >= 3)
        if ending == "kill":
            desired[0] = "pause"
            assert wait_for(
                lambda: all(
                    process_state(pid) == "T"
                    for pid in session_members(pids[0])
                    if pid != pids[0]
                )
            )
            desired[0] = "kill"
        outcome = running.result(timeout=30)
    left = session_members(pids[0])
    for pid in left:  # clean up before asserting
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"{ending}: processes of the job are still running"
    assert (
        outcome.status
        == {
            "exit": "succeeded",
            "timeout": "timed_out",
            "kill": "killed",
        }[ending]
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a worker running as root")
def test_it_runs_a_shell_job_as_another_user_when_the_worker_is_root(
    tmp_path: Path,
) -> None:
    spec = runner.validate({"command": 'id -u; echo "$HOME $USER"', "user": "nobody"})
    outcome, _ = run(**spec)
    assert outcome.status == "succeeded", outcome
    assert outcome.output == f"65534\n{pwd.getpwnam('nobody').pw_dir} nobody\n"


def test_it_runs_as_its_own_user_without_root() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    outcome, _ = run("id -u", user=me)
    assert (outcome.status, outcome.output) == ("succeeded", f"{os.geteuid()}\n")


def test_it_fails_clearly_for_a_user_the_worker_does_not_have() -> None:
    outcome, pids = run("id -u", user="no-such-user-here")
    assert outcome.status == "failed"
    assert outcome.reason == "No user 'no-such-user-here' on this worker."
    assert pids == []


def test_it_cannot_switch_user_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    outcome, pids = run("id -u", user="root")
    assert outcome.status == "failed"
    assert "does not run as root" in outcome.reason
    assert pids == []
