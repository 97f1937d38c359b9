"""The `karmchari` CLI against a live Karmchari server (and a real worker)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from jobs import services
from jobs.models import App, Execution, Job, Schedule
from jobs.runners import Outcome
from karmchari_cli.main import main
from tests.integration.conftest import ROOT, Processes, processes, queue  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ops_job(make_app: Callable[..., App]) -> Job:
    return services.job_create(
        app=make_app("ops"), name="disk-report", spec={"command": "df -h /"}
    )


def test_it_lists_jobs_as_a_table_and_as_json(
    server: str, ops_job: Job, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["jobs", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID",
        "APP",
        "NAME",
        "KIND",
        "ENABLED",
        "QUEUE",
        "NEXT_RUN",
        "RUNS",
    ]
    assert lines[1].split()[:6] == [
        str(ops_job.pk),
        "ops",
        "disk-report",
        "shell",
        "yes",
        "celery",
    ]
    assert main(["--json", "jobs", "list", "--app", "ops"]) == 0
    assert [job["name"] for job in json.loads(capsys.readouterr().out)] == [
        "disk-report"
    ]


def test_it_explains_an_auth_failure(
    server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KARMCHARI_TOKEN", "wrong")
    assert main(["agents"]) == 3
    err = capsys.readouterr().err
    assert "Authentication failed" in err
    assert "Invalid or revoked token" in err

    monkeypatch.delenv("KARMCHARI_TOKEN")
    assert main(["agents"]) == 3
    assert "No API token: set KARMCHARI_TOKEN" in capsys.readouterr().err


def test_it_reads_the_config_file(
    server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "config.ini"
    url = os.environ["KARMCHARI_URL"]
    config.write_text(f"[work]\nurl = {url}\ntoken = {server}\n")
    monkeypatch.setenv("KARMCHARI_CONFIG", str(config))
    monkeypatch.delenv("KARMCHARI_TOKEN")
    monkeypatch.delenv("KARMCHARI_URL")
    assert main(["--profile", "work", "--json", "agents"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_it_previews_a_schedule(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["schedules", "preview", "30 9 * * 1", "--tz", "Asia/Kolkata", "-n", "2"])
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("(Asia/Kolkata)")
    assert out[0].count("Asia/Kolkata") == 1
    assert len(out) == 3
    assert out[1].strip().endswith("T09:30:00+05:30")

    assert main(["schedules", "preview", "61 * * * *"]) == 1
    assert "minute" in capsys.readouterr().err


def test_it_runs_lists_and_kills_an_execution(
    server: str, ops_job: Job, capsys: pytest.CaptureFixture[str]
) -> None:
    # No worker consumes the queue: the run stays pending until killed.
    assert main(["run", "ops/disk-report", "--param", "day=monday"]) == 0
    execution = Execution.objects.get(job=ops_job)
    assert execution.parameters == {"day": "monday"}
    assert f"Execution {execution.pk} of ops/disk-report: pending" in (
        capsys.readouterr().out
    )

    assert main(["executions", "list", "--job", "disk-report"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:3] == [str(execution.pk), "ops/disk-report", "pending"]

    assert main(["kill", str(execution.pk)]) == 0
    assert "asked to kill" in capsys.readouterr().out
    execution.refresh_from_db()
    assert execution.status == Execution.Status.KILLED

    assert main(["kill", str(execution.pk)]) == 1
    assert "already finished" in capsys.readouterr().err
    assert main(["run", "no-such-job"]) == 1
    assert "No job named 'no-such-job'" in capsys.readouterr().err


@pytest.mark.integration
def test_it_follows_a_real_run_and_exits_with_its_code(
    server: str,
    processes: Processes,  # noqa: F811
    queue: str,  # noqa: F811
    make_app: Callable[..., App],
) -> None:
    processes.worker(queue)
    services.job_create(
        app=make_app("it"),
        name="count",
        queue=queue,
        spec={"command": "for i in 1 2 3; do echo line $i; sleep 0.3; done; exit 3"},
    )
    # The installed entry point runs karmchari_cli.main:main, as `-m` does here.
    result = subprocess.run(
        [sys.executable, "-m", "karmchari_cli", "run", "it/count", "--follow"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout == "line 1\nline 2\nline 3\n", result.stderr
    assert result.returncode == 3
    assert "failed (exit code 3)" in result.stderr


def test_it_exits_0_when_an_http_job_succeeds(
    server: str, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The http runner records the HTTP status as the run's exit_code (200)."""
    job = services.job_create(
        app=make_app("ops"),
        name="ping-api",
        kind="http",
        spec={"method": "GET", "url": "https://example.com/health"},
    )

    def finish_it(seconds: float) -> None:
        # What a worker does meanwhile (jobs/runners/http.py on a 200 answer).
        execution = Execution.objects.get(job=job)
        Execution.objects.filter(pk=execution.pk).update(
            status="running", started_at=timezone.now() - timedelta(seconds=1)
        )
        execution.refresh_from_db()
        services.execution_finish(
            execution=execution,
            outcome=Outcome(status="succeeded", exit_code=200, output="HTTP 200 OK"),
        )

    monkeypatch.setattr(
        "karmchari_cli.main.time", types.SimpleNamespace(sleep=finish_it)
    )
    assert main(["run", "ops/ping-api", "--wait"]) == 0


@pytest.mark.parametrize(
    ("kind", "exit_code", "expected"),
    [
        # e.g. os.system()'s wait status for `exit 1`: 0 once cut to 8 bits.
        ("external", 256, 1),
        ("external", 258, 2),
        ("external", None, 1),
        # An HTTP status is no process's exit code (503 & 0xFF is 247).
        ("http", 503, 1),
        # Killed by a signal (Python's returncode -N): 128 + N as shells say, not
        # -15 & 0xFF (241).
        ("shell", -15, 143),
        ("external", -9, 137),
    ],
)
def test_it_exits_non_zero_when_a_run_fails(
    server: str,
    make_app: Callable[..., App],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    exit_code: int | None,
    expected: int,
) -> None:
    specs = {
        "http": {"method": "GET", "url": "https://example.com/health"},
        "shell": {"command": "sleep 60"},
    }
    job = services.job_create(
        app=make_app("ops"), name="nightly", kind=kind, spec=specs.get(kind, {})
    )

    def finish_it(seconds: float) -> None:
        execution = Execution.objects.get(job=job)
        Execution.objects.filter(pk=execution.pk).update(
            status="running", started_at=timezone.now() - timedelta(seconds=1)
        )
        execution.refresh_from_db()
        services.execution_finish(
            execution=execution,
            outcome=Outcome(status="failed", exit_code=exit_code, reason="it broke"),
        )

    monkeypatch.setattr(
        "karmchari_cli.main.time", types.SimpleNamespace(sleep=finish_it)
    )
    assert main(["run", "ops/nightly", "--wait"]) == expected


def test_it_lists_the_next_run_of_enabled_schedules_only(
    server: str,
    ops_job: Job,
    make_schedule: Callable[..., Schedule],
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_schedule("0 9 1 1 *", job=ops_job, enabled=False)
    assert main(["jobs", "list"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if "ops" in line]
    assert "-01-01T09:00" not in row
    make_schedule("0 9 1 1 *", job=ops_job)
    assert main(["jobs", "list"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if "ops" in line]
    assert "-01-01T09:00" in row


@pytest.mark.parametrize(
    "argv",
    [
        ["schedules", "preview", "* * * * *", "-n", "0"],
        ["schedules", "preview", "* * * * *", "-n", "1001"],
        ["executions", "list", "--limit", "0"],
        ["executions", "list", "--limit", "501"],
    ],
)
def test_it_refuses_a_count_out_of_the_servers_limits(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A count of 0 was left out of the request (so -n 0 asked for 10), and the
    server quietly takes page_size=0 as its default page."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert f"argument {argv[-2]}: " in capsys.readouterr().err


def test_it_keeps_stdout_json_when_following_with_json(
    fake_server: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json run --follow`: the run's output goes to stderr, the JSON of the
    finished execution alone to stdout."""
    answers = {
        ("GET", "/api/jobs/7/"): (
            b'{"id": 7, "app": "ops", "name": "x", "kind": "shell"}'
        ),
        ("POST", "/api/jobs/7/run/"): b'{"id": 99, "status": "pending"}',
        ("GET", "/api/executions/99/"): (
            b'{"id": 99, "status": "succeeded", "exit_code": 0, "reason": ""}'
        ),
    }

    def handle(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if "/log/stream/" in handler.path:
            kind = "text/event-stream"
            body = (
                b'id: 3\nevent: output\ndata: {"offset": 0, "text": "hi\\n"}\n\n'
                b'id: 3\nevent: end\ndata: {"status": "succeeded"}\n\n'
            )
        else:
            kind, body = "application/json", answers[(handler.command, handler.path)]
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    fake_server(handle)
    assert main(["--json", "run", "7", "--follow"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "succeeded"
    assert err == "hi\n"
