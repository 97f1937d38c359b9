"""Batch jobs: a JobStreamer definition of Java batchlets, kept so it can be shown and
edited through the JobStreamer API. Karmchari has no JVM to run batchlets: a run fails
at once, saying so. (A definition with a shell command becomes a shell job instead.)
"""

from __future__ import annotations

from typing import Any

from jobs.runners import Outcome, RunContext, SpecError

NOT_RUNNABLE = (
    "This job is a JobStreamer batch definition (Java batchlets), which Karmchari "
    "cannot run. Give a step a shell command (batchlet properties 'command'), or "
    "make it a shell job."
)


class BatchRunner:
    def validate(self, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise SpecError({"spec": "Must be an object: the job definition."})
        return dict(spec)

    def run(self, spec: dict[str, Any], context: RunContext) -> Outcome:
        return Outcome(status="failed", reason=NOT_RUNNABLE)
