"""External jobs: the process runs elsewhere and only talks to the API.

Its execution is `running` as soon as it is created. The process reads its desired
state (`GET /api/executions/{id}/`: run, pause or kill) and reports progress and its
end (`POST /api/executions/{id}/report/`). No worker runs anything for it.
"""

from __future__ import annotations

from typing import Any

from jobs.runners import Outcome, RunContext, SpecError


class ExternalRunner:
    def validate(self, spec: Any) -> dict[str, Any]:
        if spec in (None, ""):
            return {}
        if not isinstance(spec, dict):
            raise SpecError({"spec": "Must be an object (usually empty)."})
        unknown = sorted(set(spec) - {"description"})
        if unknown:
            raise SpecError(
                {"spec": f"Unknown keys for an external job: {', '.join(unknown)}."}
            )
        return dict(spec)

    def run(self, spec: dict[str, Any], context: RunContext) -> Outcome:
        # Never called by execution_run; here so the protocol holds.
        return Outcome(status="failed", reason="External jobs report through the API.")
