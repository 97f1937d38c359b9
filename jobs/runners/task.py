"""Task jobs: send a named Celery task and follow it to its end.

Only names listed in KARMCHARI_ALLOWED_TASKS may be sent. Following a task needs its
result: the project keeps CELERY_TASK_IGNORE_RESULT on for everything else and sends
these with `ignore_result=False`, so only task jobs write to the result backend
(CELERY_RESULT_BACKEND, Redis by default). The runner polls the result's state; a kill
or a timeout revokes the task with SIGTERM to whichever worker runs it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import current_app
from django.conf import settings

from jobs.runners import Outcome, RunContext, SpecError

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.2


def _allowed(name: str) -> bool:
    return name in settings.KARMCHARI_ALLOWED_TASKS


class TaskRunner:
    def validate(self, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise SpecError({"spec": "Must be an object with a 'task' name."})
        errors: dict[str, str] = {}
        unknown = sorted(set(spec) - {"task", "args", "kwargs", "queue"})
        if unknown:
            errors["spec"] = f"Unknown keys for a task job: {', '.join(unknown)}."
        name = spec.get("task")
        if not isinstance(name, str) or not name:
            errors["task"] = "A task job needs the Celery task name."
        elif not _allowed(name):
            errors["task"] = (
                f"{name!r} is not in KARMCHARI_ALLOWED_TASKS; ask an administrator."
            )
        args = spec.get("args", [])
        if not isinstance(args, list):
            errors["args"] = "Must be a list."
        kwargs = spec.get("kwargs", {})
        if not isinstance(kwargs, dict):
            errors["kwargs"] = "Must be an object."
        queue = spec.get("queue", "")
        if not isinstance(queue, str):
            errors["queue"] = "Must be a queue name."
        if errors:
            raise SpecError(errors)
        cleaned: dict[str, Any] = {"task": name}
        if args:
            cleaned["args"] = args
        if kwargs:
            cleaned["kwargs"] = kwargs
        if queue:
            cleaned["queue"] = queue
        return cleaned

    def run(self, spec: dict[str, Any], context: RunContext) -> Outcome:
        name = spec["task"]
        if not _allowed(name):
            return Outcome(status="failed", reason=f"Task {name!r} is not allowed.")
        result = current_app.send_task(
            name,
            args=spec.get("args", []),
            kwargs=spec.get("kwargs", {}),
            queue=spec.get("queue") or None,
            ignore_result=False,
        )
        context.on_output(f"sent {name} as {result.id}\n".encode())
        deadline = time.monotonic() + context.timeout if context.timeout else None
        next_check = 0.0
        while True:
            desired = context.poll()
            if desired == "kill":
                _revoke(result.id)
                return Outcome(status="killed", reason="Killed on request (revoked).")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                _revoke(result.id)
                return Outcome(
                    status="timed_out",
                    reason=f"Timed out after {context.timeout:g}s (revoked).",
                )
            if now >= next_check:
                next_check = now + _POLL_SECONDS
                state: str
                try:
                    state = result.state
                except Exception:
                    logger.warning("cannot read the state of task %s", result.id)
                    state = "PENDING"
                if state == "SUCCESS":
                    output = _render(result.result)
                    context.on_output(output.encode())
                    return Outcome(status="succeeded", exit_code=0, output=output)
                if state == "FAILURE":
                    return Outcome(
                        status="failed",
                        error=str(result.traceback or ""),
                        reason=f"Task raised {result.result!r}.",
                    )
                if state == "REVOKED":
                    return Outcome(status="killed", reason="The task was revoked.")
            time.sleep(0.1)


def _revoke(task_id: str) -> None:
    try:
        current_app.control.revoke(task_id, terminate=True, signal="SIGTERM")
    except Exception:
        logger.exception("could not revoke task %s", task_id)


def _render(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    limit: int = settings.KARMCHARI_OUTPUT_LIMIT
    return text[-limit:]
