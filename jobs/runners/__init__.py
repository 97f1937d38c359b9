"""How a job runs. One small protocol; one module per job kind.

A runner knows nothing of the ORM: it gets the job's spec and limits, and answers an
Outcome that the execution service records.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class RunContext:
    execution_id: int
    job_name: str
    app_name: str
    timeout: float | None
    on_start: Callable[[int], None] = field(default=lambda pid: None)


class Runner(Protocol):
    def validate(self, spec: Any) -> dict[str, Any]:
        """The cleaned spec, or SpecError naming what is wrong."""
        ...

    def run(self, spec: dict[str, Any], context: RunContext) -> Outcome: ...


def get_runner(kind: str) -> Runner | None:
    """The runner for a job kind, or None when this version cannot run that kind."""
    from jobs.runners.shell import ShellRunner

    runners: dict[str, Runner] = {"shell": ShellRunner()}
    return runners.get(kind)
