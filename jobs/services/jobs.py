"""Jobs: their specs and secrets, their parents (dependencies), deleting them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from jobs import access
from jobs.metrics import metrics_forget_jobs
from jobs.models import App, Execution, Job
from jobs.runners import SpecError, get_runner
from jobs.secrets import job_secrets_set, spec_split_secrets
from jobs.services.base import DependencyCycle, Gone
from jobs.services.overlap import (
    BUFFERING_POLICIES,
    execution_kill_active,
    executions_settle_buffered,
)
from jobs.services.schedules import schedules_announce_change, schedules_fire
from jobs.stats import stats_forget, stats_invalidate


def job_clean_spec(*, kind: str, spec: Any) -> dict[str, Any]:
    """The spec as the runner for `kind` will read it; SpecError if it cannot run."""
    runner = get_runner(kind)
    if runner is None:
        raise SpecError({"kind": f"Jobs of kind {kind!r} are not supported yet."})
    return runner.validate(spec)


def job_create(
    *,
    app: App,
    name: str,
    spec: Any,
    kind: str = Job.Kind.SHELL,
    secrets: Mapping[str, str | None] | None = None,
    **fields: Any,
) -> Job:
    parents = fields.pop("parents", None)
    children = fields.pop("children", None)
    job = Job(app=app, name=name, kind=kind, spec=spec)
    for field, value in fields.items():
        setattr(job, field, value)
    return job_insert(job=job, parents=parents, children=children, secrets=secrets)


def job_insert(
    *,
    job: Job,
    parents: list[Job] | None = None,
    children: list[Job] | None = None,
    secrets: Mapping[str, str | None] | None = None,
) -> Job:
    """Save a new job built elsewhere (job_create, the admin's add form): its spec
    cleaned, and any secret-looking values in it moved to its secrets."""
    spec = job_clean_spec(kind=job.kind, spec=job.spec)
    job.spec, split = spec_split_secrets(kind=job.kind, spec=spec)
    with transaction.atomic():
        job.save()
        if parents is not None:
            job_set_parents(job=job, parents=parents)
        if children:
            job_set_children(job=job, children=children)
        if split or secrets:
            job_secrets_set(job=job, secrets={**split, **(secrets or {})})
    stats_invalidate(job_id=None)
    return job


def job_update(
    *,
    job: Job,
    secrets: Mapping[str, str | None] | None = None,
    replace_secrets: bool = False,
    **fields: Any,
) -> Job:
    """Change a job. `secrets` sets (None deletes, SECRET_MASK keeps) the named
    secrets; `replace_secrets` deletes the others. Secret-looking values in a new
    spec move to the secrets, as with job_insert."""
    parents = fields.pop("parents", None)
    children = fields.pop("children", None)
    split: dict[str, str] = {}
    if "kind" in fields or "spec" in fields:
        kind = fields.get("kind", job.kind)
        spec = job_clean_spec(kind=kind, spec=fields.get("spec", job.spec))
        fields["spec"], split = spec_split_secrets(kind=kind, spec=spec)
    was_enabled = job.enabled
    for field, value in fields.items():
        setattr(job, field, value)
    with transaction.atomic():
        # Its row, locked until this commits: a job deleted meanwhile is a 404 (a
        # save would find no row), and two edits of one job take turns.
        if not Job.objects.select_for_update().filter(pk=job.pk).exists():
            raise Gone(f"Job {job.name!r} was deleted meanwhile.")
        if parents is not None:
            job_set_parents(job=job, parents=parents)
        if children is not None:
            job_set_children(job=job, children=children)
        job.save(update_fields=[*fields, "updated"])
        if split or secrets or replace_secrets:
            job_secrets_set(
                job=job, secrets={**split, **(secrets or {})}, replace=replace_secrets
            )
        if was_enabled and not job.enabled:
            # Runs not started yet (queued, buffered, a retry in its backoff) do not
            # start: a job is disabled so that it stops running.
            Execution.objects.filter(job=job, status=Execution.Status.PENDING).update(
                status=Execution.Status.SKIPPED,
                finished_at=timezone.now(),
                reason="Its job was disabled before it started.",
            )
        if job.enabled and not was_enabled:
            # Its schedules stood still while it was disabled: settle those slots by
            # each schedule's misfire policy now, rather than as a burst next tick.
            rows = list(
                job.schedules.filter(enabled=True, next_run_at__lte=timezone.now())
                .select_related("job__app")
                .select_for_update()
            )
            if rows:
                schedules_fire(
                    rows,
                    now=timezone.now(),
                    late_reason="job was disabled",
                    epsilon=timedelta(0),  # as for a schedule re-enabled
                )
        if "overlap_policy" in fields and job.overlap_policy not in BUFFERING_POLICIES:
            # Ends of runs only look for buffered runs under a buffering policy:
            # those held back under the old one are decided again now.
            executions_settle_buffered(job=job)
    stats_forget(job_id=job.pk)
    if "enabled" in fields:
        schedules_announce_change()
    return job


def job_parents_cycle(*, job: Job | None, parents: list[Job]) -> str | None:
    """Why these parents would make a dependency cycle for `job`, or None."""
    if job is None or job.pk is None:
        return None  # a new job has no children yet
    if any(parent.pk == job.pk for parent in parents):
        return "A job cannot depend on itself."
    links = Job.parents.through.objects
    seen: set[int] = set()
    frontier = {parent.pk for parent in parents}
    while frontier:
        if job.pk in frontier:
            return f"Job {job.name!r} would depend on itself through its parents."
        seen |= frontier
        frontier = (
            set(
                links.filter(from_job_id__in=frontier).values_list(
                    "to_job_id", flat=True
                )
            )
            - seen
        )
    return None


# Any fixed number: the transaction-level advisory lock that serialises edits of
# dependencies on PostgreSQL.
_PARENTS_LOCK = 0x6B61726D  # "karm"


def job_children_cycle(
    *, job: Job | None, parents: list[Job], children: list[Job]
) -> str | None:
    """Why making `children` run after `job` (whose parents are `parents`) would
    make a dependency cycle, or None."""
    for child in children:
        if job is not None and job.pk is not None and child.pk == job.pk:
            return "A job cannot depend on itself."
        if job_parents_cycle(job=child, parents=parents):
            return (
                f"Job {child.name!r} cannot run after this job: this job already "
                "runs after it."
            )
    return None


def _lock_dependencies() -> None:
    """Two edits that each pass the cycle check alone (A under B, B under A) must
    not both commit: on PostgreSQL one edit of dependencies at a time, until the
    transaction ends. (SQLite, for development, is left as it is.)"""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PARENTS_LOCK])


def job_set_parents(*, job: Job, parents: list[Job]) -> Job:
    with transaction.atomic():
        _lock_dependencies()
        if why := job_parents_cycle(job=job, parents=parents):
            raise DependencyCycle(why)
        job.parents.set(parents)
    return job


def job_set_children(*, job: Job, children: list[Job]) -> Job:
    """The jobs that run after each success of `job` (Kala's dependent jobs, edited
    from the parent's side)."""
    with transaction.atomic():
        _lock_dependencies()
        # From the database, not a prefetch made before the lock: another edit
        # may have given it parents meanwhile.
        parents = list(Job.objects.filter(children=job))
        why = job_children_cycle(job=job, parents=parents, children=children)
        if why:
            raise DependencyCycle(why, field="children")
        job.children.set(children)
    return job


def jobs_doomed(*, jobs: list[Job], user: Any = None) -> list[Job]:
    """`jobs` and, by Kala's rule, every child that deleting them leaves with no
    other parent (and theirs, and so on), in that order. With a `user` under
    per-app access, only children they may see go with them: one in an app hidden
    from them only loses its link."""
    doomed = list(jobs)
    seen = {job.pk for job in doomed}
    index = 0
    while index < len(doomed):
        current = doomed[index]
        index += 1
        children = current.children.prefetch_related("parents").order_by("pk")
        if user is not None:
            children = access.restrict(children, user, "app")
        for child in children:
            if child.pk in seen:
                continue
            if {parent.pk for parent in child.parents.all()} <= seen:
                doomed.append(child)
                seen.add(child.pk)
    return doomed


def jobs_delete(*, jobs: list[Job], user: Any = None) -> list[int]:
    """Delete jobs and, by Kala's rule, every child left with no other parent (and
    theirs, and so on; of those `user` may see, see jobs_doomed). Their running
    executions are asked to stop first. Answers the primary keys deleted. The API,
    the admin, the job file and the compat APIs all delete through here."""
    with transaction.atomic():
        doomed = jobs_doomed(jobs=jobs, user=user)
        for each in doomed:
            execution_kill_active(
                job_id=each.pk, immediate=True, why="Its job was deleted."
            )
        Job.objects.filter(pk__in=[each.pk for each in doomed]).delete()
    deleted = [each.pk for each in doomed]
    stats_invalidate(job_id=None)
    schedules_announce_change()
    transaction.on_commit(lambda: metrics_forget_jobs(deleted))
    return deleted


def job_delete(*, job: Job, user: Any = None) -> list[int]:
    """jobs_delete of one job."""
    return jobs_delete(jobs=[job], user=user)
