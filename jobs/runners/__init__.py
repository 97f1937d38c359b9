"""How a job runs. One small protocol; one module per job kind.

A runner knows nothing of the ORM: it gets the job's spec and limits, and answers an
Outcome that the execution service records.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


def _no_output(chunk: bytes) -> None:
    pass


def _always_run() -> str:
    return "run"


def _no_status(status: str) -> None:
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
    # The runner acted on a desired state: "paused" or "running" again.
    on_status: Callable[[str], None] = _no_status


class Runner(Protocol):
    def validate(self, spec: Any) -> dict[str, Any]:
        """The cleaned spec, or SpecError naming what is wrong."""
        ...

    def run(self, spec: dict[str, Any], context: RunContext) -> Outcome: ...


# Kinds whose runs can be stopped and continued (SIGSTOP/SIGCONT, or the external
# process reading its desired state). The others can only be killed.
PAUSABLE_KINDS = frozenset({"shell", "external"})


SECRET_MASK = "********"  # noqa: S105 (the placeholder shown instead)
# Spec keys whose values are name: value maps that may hold secrets.
_SECRET_MAPS = ("env", "headers")


def _is_secret(name: str) -> bool:
    from django.conf import settings

    return bool(re.search(settings.KARMCHARI_SECRET_ENV_PATTERN, name))


def mask_spec(spec: Any) -> Any:
    """The spec with secret-looking values (by their names) replaced, for display."""
    if not isinstance(spec, dict):
        return spec
    masked = dict(spec)
    for key in _SECRET_MAPS:
        values = spec.get(key)
        if isinstance(values, dict):
            masked[key] = {
                name: SECRET_MASK if _is_secret(name) else value
                for name, value in values.items()
            }
    return masked


def unmask_spec(spec: Any, previous: Any) -> Any:
    """A spec sent back with masked values keeps the stored secrets."""
    if not isinstance(spec, dict) or not isinstance(previous, dict):
        return spec
    unmasked = dict(spec)
    for key in _SECRET_MAPS:
        values, old = spec.get(key), previous.get(key)
        if isinstance(values, dict) and isinstance(old, dict):
            unmasked[key] = {
                name: old[name] if value == SECRET_MASK and name in old else value
                for name, value in values.items()
            }
    return unmasked


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
