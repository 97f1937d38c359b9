"""How a job runs. One small protocol; one module per job kind.

A runner knows nothing of the ORM: it gets the job's spec, limits and secrets, and
answers an Outcome that the execution service records (masking the secrets in it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class SpecError(ValueError):
    """A job spec that cannot run: maps field name to message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Outcome:
    status: str  # an Execution.Status value
    exit_code: int | None = None
    output: str = ""
    error: str = ""
    reason: str = ""
    # Seconds the run spent paused (excluded from its timeout and duration).
    paused_seconds: float = 0.0


def tail_text(data: bytes, dropped: int) -> str:
    """The kept tail of an output as text, saying how many bytes went before it. A
    character cut by the trim is dropped whole rather than shown as U+FFFD."""
    start = 0
    if dropped:
        while start < min(3, len(data)) and 0x80 <= data[start] < 0xC0:
            start += 1
    body = data[start:].decode("utf-8", errors="replace")
    if dropped + start:
        return f"[... {dropped + start} bytes truncated ...]\n{body}"
    return body


def _no_output(chunk: bytes) -> None:
    pass


def _always_run() -> str:
    return "run"


def _no_status(status: str, paused_seconds: float) -> None:
    pass


@dataclass(frozen=True)
class RunContext:
    execution_id: int
    job_name: str
    app_name: str
    timeout: float | None
    on_start: Callable[[int], None] = field(default=lambda pid: None)
    # Live output as it arrives (stdout and stderr interleaved), for the log stream.
    on_output: Callable[[bytes], None] = _no_output
    # Called every ~0.1 s while the job runs: housekeeping (log flushes) plus the
    # operator's desired state, "run", "pause" or "kill". Must be cheap.
    poll: Callable[[], str] = _always_run
    # The runner acted on a desired state: "paused" or "running" again, with the
    # seconds the run has been paused so far (before this pause, when pausing).
    on_status: Callable[[str, float], None] = _no_status
    # The job's secrets by name, decrypted by the worker just before the run: shell
    # jobs get them in their environment, http jobs where the spec says ${NAME}.
    secrets: Mapping[str, str] = field(default_factory=dict)


class Runner(Protocol):
    def validate(self, spec: Any) -> dict[str, Any]:
        """The cleaned spec, or SpecError naming what is wrong."""
        ...

    def run(self, spec: dict[str, Any], context: RunContext) -> Outcome: ...


# Kinds whose runs can be stopped and continued (SIGSTOP/SIGCONT, or the external
# process reading its desired state). The others can only be killed.
PAUSABLE_KINDS = frozenset({"shell", "external"})


SECRET_MASK = "********"  # noqa: S105 (shown instead of a secret's value)
# Shell variable names; also the names of job secrets (jobs/secrets.py).
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def get_runner(kind: str) -> Runner | None:
    """The runner for a job kind, or None when this version cannot run that kind."""
    from jobs.runners.batch import BatchRunner
    from jobs.runners.external import ExternalRunner
    from jobs.runners.http import HttpRunner
    from jobs.runners.shell import ShellRunner
    from jobs.runners.task import TaskRunner

    runners: dict[str, Runner] = {
        "shell": ShellRunner(),
        "http": HttpRunner(),
        "task": TaskRunner(),
        "external": ExternalRunner(),
        "batch": BatchRunner(),
    }
    return runners.get(kind)
