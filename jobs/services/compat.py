"""What the adapters in compat/ (Karmchari, Kala, JobStreamer) need beyond the other
services. compat/ never writes to the database itself; everything goes through here."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from jobs.models import App, Execution, Job, Schedule
from jobs.services.apps import app_create
from jobs.services.executions import job_trigger
from jobs.services.jobs import job_create
from jobs.services.schedules import schedule_create, schedule_delete, schedule_update


def app_get_or_create(*, name: str, description: str = "", creator: Any = None) -> App:
    """The app of this name, created when missing (two racing callers get one; the
    creator is granted it as by app_create)."""
    app = App.objects.filter(name=name).first()
    if app is not None:
        return app
    try:
        with transaction.atomic():
            return app_create(name=name, description=description, creator=creator)
    except IntegrityError:
        return App.objects.get(name=name)


def job_get_or_create(
    *, app: App, name: str, spec: Any, kind: str = Job.Kind.SHELL, **fields: Any
) -> Job:
    """The job of this name in `app`, created with these fields when missing."""
    job = Job.objects.filter(app=app, name=name).first()
    if job is not None:
        return job
    try:
        with transaction.atomic():
            return job_create(app=app, name=name, spec=spec, kind=kind, **fields)
    except IntegrityError:
        return Job.objects.get(app=app, name=name)


def job_trigger_tagged(
    *,
    job: Job,
    external_id: str,
    trigger: str = Execution.Trigger.COMPAT,
    parameters: dict[str, Any] | None = None,
) -> Execution:
    """Run the job now (job_trigger) with a seed system's id on the execution, so
    that id finds the run later. The tag is in place before a worker can claim it."""
    with transaction.atomic():
        execution = job_trigger(job=job, trigger=trigger, parameters=parameters)
        Execution.objects.filter(pk=execution.pk).update(external_id=external_id)
        execution.external_id = external_id
    return execution


def job_create_scheduled(
    *,
    app: App,
    name: str,
    spec: Any,
    kind: str = Job.Kind.SHELL,
    schedule: dict[str, Any] | None = None,
    run_now: bool = False,
    **fields: Any,
) -> Job:
    """Create a job with at most one schedule, and run it at once if asked (and it is
    enabled): all or nothing, so a failure stores nothing."""
    with transaction.atomic():
        job = job_create(app=app, name=name, spec=spec, kind=kind, **fields)
        if schedule is not None:
            schedule_create(job=job, **schedule)
        if run_now and job.enabled:
            job_trigger(job=job, trigger=Execution.Trigger.COMPAT)
    return job


def job_schedule_set(
    *, job: Job, kind: str, expression: str, timezone_name: str = "UTC"
) -> Schedule:
    """Give a job this schedule (JobStreamer's one schedule per job): the job's
    oldest schedule is re-timed and enabled, or a new one is made."""
    current = job.schedules.order_by("pk").first()
    if current is None:
        return schedule_create(
            job=job, kind=kind, expression=expression, timezone=timezone_name
        )
    return schedule_update(
        schedule=current,
        kind=kind,
        expression=expression,
        timezone=timezone_name,
        enabled=True,
    )


def job_schedules_enable(*, job: Job, enabled: bool) -> int:
    """Pause or resume all of a job's schedules; answers how many changed."""
    changed = 0
    for schedule in job.schedules.filter(enabled=not enabled).order_by("pk"):
        schedule_update(schedule=schedule, enabled=enabled)
        changed += 1
    return changed


def job_schedules_delete(*, job: Job) -> int:
    """Remove all of a job's schedules; answers how many there were."""
    doomed = list(job.schedules.all())
    for schedule in doomed:
        schedule_delete(schedule=schedule)
    return len(doomed)
