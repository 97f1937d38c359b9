"""Overlap policies: what a new run does while others of its job are active (run,
skip, buffer, cancel or terminate them), and releasing buffered runs as others end."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection

from django.db import transaction
from django.utils import timezone

from jobs import control
from jobs.models import Execution, ExecutionEvent, Job
from jobs.services.outbox import executions_send

logger = logging.getLogger(__name__)


def executions_active_counts(job_ids: set[int]) -> tuple[Counter[int], Counter[int]]:
    """Per job: executions pending-and-sent or running/paused, and buffered ones."""
    active: Counter[int] = Counter()
    buffered: Counter[int] = Counter()
    rows = (
        Execution.objects.filter(
            job_id__in=job_ids, status__in=Execution.ACTIVE_STATUSES
        )
        .values_list("job_id", "status", "dispatched_at")
        .order_by()
    )
    for job_id, status, dispatched_at in rows:
        if status == Execution.Status.PENDING and dispatched_at is None:
            buffered[job_id] += 1
        else:
            active[job_id] += 1
    return active, buffered


# The overlap policies that hold runs back (dispatched_at NULL) until others end.
BUFFERING_POLICIES = frozenset(
    {
        Job.OverlapPolicy.BUFFER_ONE,
        Job.OverlapPolicy.BUFFER_ALL,
        Job.OverlapPolicy.CANCEL_OTHER,
    }
)


def overlap_verdict(job: Job, active: int, buffered: int) -> tuple[str, str]:
    """What a new scheduled run does while others of its job are active:
    run, skip, buffer (start when they finish), cancel (kill them gracefully and
    buffer) or terminate (kill them at once and run). Temporal's overlap policies."""
    policy = job.overlap_policy
    limit = job.max_concurrent
    if policy == Job.OverlapPolicy.ALLOW_ALL:
        if limit is None or active < limit:
            return "run", ""
        return "skip", f"overlap: max_concurrent ({limit}) runs already active"
    if active < (limit or 1):
        return "run", ""
    if policy == Job.OverlapPolicy.BUFFER_ONE:
        if buffered:
            return "skip", "overlap: a run is already buffered (buffer_one)"
        return "buffer", ""
    if policy == Job.OverlapPolicy.BUFFER_ALL:
        return "buffer", ""
    if policy == Job.OverlapPolicy.CANCEL_OTHER:
        return "cancel", ""
    if policy == Job.OverlapPolicy.TERMINATE_OTHER:
        return "terminate", ""
    return "skip", f"overlap: {active} run(s) of this job still active (skip)"


def execution_release_buffered(*, job_id: int) -> Execution | None:
    """Start the oldest buffered run of a job if it now has room (called whenever
    one of its executions ends)."""
    # Most jobs never buffer: look for a buffered run first, so the common end of a
    # run costs this one indexed query (jobs_execution_pending), not three.
    oldest = (
        Execution.objects.filter(
            job_id=job_id, status=Execution.Status.PENDING, dispatched_at__isnull=True
        )
        .order_by("scheduled_for", "id")
        .first()
    )
    if oldest is None:
        return None
    job = Job.objects.select_related("app").get(pk=job_id)
    active, _ = executions_active_counts({job_id})
    if active[job_id] >= (job.max_concurrent or 1):
        return None
    now = timezone.now()
    taken = Execution.objects.filter(pk=oldest.pk, dispatched_at__isnull=True).update(
        dispatched_at=now
    )
    if not taken:
        return None
    oldest.dispatched_at = now
    transaction.on_commit(lambda: executions_send([(oldest, 0.0)]))
    return oldest


def executions_settle_buffered(*, job: Job) -> int:
    """Decide again, oldest first, the runs a buffering policy held back, now that
    the job's policy no longer buffers, as if their slots fired now: those with room
    under it start and the others are recorded skipped (`allow_all`, `skip`);
    `terminate_other` starts the newest and stops the rest. Answers how many start.
    """
    held = list(
        Execution.objects.filter(
            job=job, status=Execution.Status.PENDING, dispatched_at__isnull=True
        )
        .select_related("job")
        .order_by("scheduled_for", "id")
    )
    if not held:
        return 0
    now = timezone.now()
    changed = f"its job's overlap policy became {job.overlap_policy} while it waited"
    terminate = job.overlap_policy == Job.OverlapPolicy.TERMINATE_OTHER
    if terminate:
        start = held[-1:]
    else:
        active, _ = executions_active_counts({job.pk})
        count, start = active[job.pk], []
        for execution in held:
            verdict, why = overlap_verdict(job, count, 0)
            if verdict == "run":
                start.append(execution)
                count += 1
                continue
            Execution.objects.filter(
                pk=execution.pk,
                status=Execution.Status.PENDING,
                dispatched_at__isnull=True,
            ).update(
                status=Execution.Status.SKIPPED,
                finished_at=now,
                reason=f"{why}; {changed}",
            )
    # Taken before any kill below: its end must not release them a second time.
    Execution.objects.filter(
        pk__in=[e.pk for e in start], dispatched_at__isnull=True
    ).update(dispatched_at=now)
    if terminate:
        execution_kill_active(
            job_id=job.pk,
            immediate=True,
            why=f"Its job's overlap policy ({job.overlap_policy}).",
            spare={start[0].pk},
        )
    if start:
        transaction.on_commit(lambda: executions_send([(e, 0.0) for e in start]))
    return len(start)


def execution_kill_active(
    *, job_id: int, immediate: bool, why: str, spare: Collection[int] = ()
) -> int:
    """Ask every running/paused execution of a job to stop (overlap cancel/terminate,
    a deleted job), and end its pending ones before they start (sent or buffered;
    but not those in `spare`: the runs the same slot made). A run it spared that
    waits buffered starts at once if that leaves room (no end of the pending runs
    ended here would release it). `why` goes in the audit trail. Answers how many."""
    now = timezone.now()
    pending = list(
        Execution.objects.filter(job_id=job_id, status=Execution.Status.PENDING)
        .exclude(pk__in=list(spare))
        .values_list("pk", flat=True)
    )
    ended = Execution.objects.filter(
        pk__in=pending, status=Execution.Status.PENDING
    ).update(
        status=Execution.Status.KILLED,
        desired_state=Execution.DesiredState.KILL,
        finished_at=now,
        reason=f"{why} It was stopped before it started.",
    )
    ExecutionEvent.objects.bulk_create(
        ExecutionEvent(
            execution_id=execution_id,
            action=ExecutionEvent.Action.KILL,
            detail=f"{why} Was pending: it will not start.",
        )
        for execution_id in pending
    )
    asked = Execution.objects.filter(
        job_id=job_id,
        status__in=(Execution.Status.RUNNING, Execution.Status.PAUSED),
    ).exclude(desired_state=Execution.DesiredState.KILL)
    # Running or paused: claimed, so each one's worker is known already.
    workers = dict(asked.values_list("pk", "worker"))
    Execution.objects.filter(pk__in=list(workers)).update(
        desired_state=Execution.DesiredState.KILL
    )
    # In the audit trail too (asked by the system: no actor), which also dates the
    # kill for the grace an external run gets to report it (jobs/pings.py).
    ExecutionEvent.objects.bulk_create(
        ExecutionEvent(
            execution_id=execution_id,
            action=ExecutionEvent.Action.KILL,
            detail=why,
        )
        for execution_id in workers
    )

    def tell_workers() -> None:
        for execution_id, worker in workers.items():
            control.publish(
                execution_id=execution_id,
                desired_state=Execution.DesiredState.KILL,
                worker=worker,
            )

    transaction.on_commit(tell_workers)
    if ended:
        execution_release_buffered(job_id=job_id)
    logger.info(
        "overlap: asked %d execution(s) of job %s to stop%s; %d pending ended",
        len(workers),
        job_id,
        " at once" if immediate else "",
        ended,
    )
    return len(workers) + ended
