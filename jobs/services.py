"""Every write with side effects. Views, tasks and admin actions call these."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from jobs.models import App, Execution, Job
from jobs.runners import Outcome, RunContext, SpecError, get_runner

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request that is well-formed but cannot be carried out now."""


class Conflict(ServiceError):
    """The object's state forbids the action (answered as 409)."""


def app_create(
    *, name: str, description: str = "", meta: dict[str, Any] | None = None
) -> App:
    return App.objects.create(name=name, description=description, meta=meta or {})


def app_update(*, app: App, **fields: Any) -> App:
    for name, value in fields.items():
        setattr(app, name, value)
    app.save(update_fields=list(fields))
    return app


def job_clean_spec(*, kind: str, spec: Any) -> dict[str, Any]:
    """The spec as the runner for `kind` will read it; SpecError if it cannot run."""
    runner = get_runner(kind)
    if runner is None:
        raise SpecError({"kind": f"Jobs of kind {kind!r} are not supported yet."})
    return runner.validate(spec)


def job_create(
    *, app: App, name: str, spec: Any, kind: str = Job.Kind.SHELL, **fields: Any
) -> Job:
    job = Job(app=app, name=name, kind=kind, spec=job_clean_spec(kind=kind, spec=spec))
    for field, value in fields.items():
        setattr(job, field, value)
    job.save()
    return job


def job_update(*, job: Job, **fields: Any) -> Job:
    if "kind" in fields or "spec" in fields:
        fields["spec"] = job_clean_spec(
            kind=fields.get("kind", job.kind), spec=fields.get("spec", job.spec)
        )
    for field, value in fields.items():
        setattr(job, field, value)
    job.save(update_fields=[*fields, "updated"])
    return job


def job_trigger(
    *,
    job: Job,
    trigger: str = Execution.Trigger.API,
    parameters: dict[str, Any] | None = None,
) -> Execution:
    """Create a pending execution and send it to the job's queue once committed."""
    if not job.enabled:
        raise Conflict(f"Job {job.name!r} is disabled; enable it before running it.")
    with transaction.atomic():
        execution = Execution.objects.create(
            job=job,
            trigger=trigger,
            parameters=parameters or {},
            dispatched_at=timezone.now(),
        )
        transaction.on_commit(lambda: execution_send(execution=execution))
    return execution


def execution_send(*, execution: Execution) -> None:
    """Hand the execution to Celery. Safe to repeat: the claim decides who runs it."""
    from jobs.tasks import run_execution

    run_execution.apply_async((execution.pk,), queue=execution.job.queue)


def execution_claim(*, execution_id: int, worker: str) -> Execution | None:
    """Move a pending execution to running; None if someone else already has it."""
    now = timezone.now()
    claimed = Execution.objects.filter(
        pk=execution_id, status=Execution.Status.PENDING
    ).update(status=Execution.Status.RUNNING, started_at=now, worker=worker)
    if not claimed:
        return None
    execution = Execution.objects.select_related("job__app").get(pk=execution_id)
    Job.objects.filter(pk=execution.job_id).update(last_attempted_at=now)
    return execution


def execution_finish(*, execution: Execution, outcome: Outcome) -> Execution:
    """Record how a running execution ended and fold it into the job's stats."""
    now = timezone.now()
    finished = Execution.objects.filter(
        pk=execution.pk, status__in=(Execution.Status.RUNNING, Execution.Status.PAUSED)
    ).update(
        status=outcome.status,
        exit_code=outcome.exit_code,
        output=outcome.output,
        error=outcome.error,
        reason=outcome.reason,
        finished_at=now,
    )
    execution.refresh_from_db()
    if not finished:
        logger.warning(
            "execution %s was %s before its run finished; outcome %s not recorded",
            execution.pk,
            execution.status,
            outcome.status,
        )
        return execution
    duration = execution.duration or 0.0
    stats: dict[str, Any] = {"duration_total": F("duration_total") + duration}
    if outcome.status == Execution.Status.SUCCEEDED:
        stats.update(success_count=F("success_count") + 1, last_success_at=now)
    else:
        stats.update(error_count=F("error_count") + 1, last_error_at=now)
    Job.objects.filter(pk=execution.job_id).update(**stats)
    return execution


def execution_run(*, execution_id: int, worker: str) -> Execution | None:
    """Claim, run and finish one execution. A no-op if it is not pending any more."""
    execution = execution_claim(execution_id=execution_id, worker=worker)
    if execution is None:
        logger.info("execution %s is not pending; nothing to run", execution_id)
        return None
    job = execution.job
    runner = get_runner(job.kind)
    if runner is None:
        outcome = Outcome(
            status=Execution.Status.FAILED,
            reason=f"This worker cannot run jobs of kind {job.kind!r}.",
        )
        return execution_finish(execution=execution, outcome=outcome)

    def record_pid(pid: int) -> None:
        Execution.objects.filter(pk=execution_id).update(pid=pid)

    context = RunContext(
        execution_id=execution_id,
        job_name=job.name,
        app_name=job.app.name,
        timeout=job.timeout,
        on_start=record_pid,
    )
    try:
        outcome = runner.run(job.spec, context)
    except Exception as exc:
        logger.exception("execution %s: runner crashed", execution_id)
        outcome = Outcome(status=Execution.Status.FAILED, reason=f"Runner error: {exc}")
    return execution_finish(execution=execution, outcome=outcome)


def execution_resend_stale(*, older_than: timedelta, batch: int = 500) -> int:
    """The outbox sweep: send again executions left pending for too long.

    A crash between commit and send, or a broker that lost the message, leaves an
    execution pending forever; sending it again is harmless because the claim admits
    only one runner.
    """
    now = timezone.now()
    stale = list(
        Execution.objects.filter(
            status=Execution.Status.PENDING, dispatched_at__lt=now - older_than
        )
        .select_related("job")
        .order_by("dispatched_at")[:batch]
    )
    if not stale:
        return 0
    # Stamp first: a crash after this loses at most one re-send, never floods.
    Execution.objects.filter(pk__in=[e.pk for e in stale]).update(dispatched_at=now)
    for execution in stale:
        execution_send(execution=execution)
    return len(stale)
