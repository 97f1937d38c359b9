"""What operators and external processes ask of a run: pause, resume and kill (the
control bus, jobs/control.py, carries them to the worker), a retry by hand, and an
external job's reports."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from jobs import control, logs
from jobs.models import MAX_ATTEMPT, Execution, ExecutionEvent, Job
from jobs.runners import PAUSABLE_KINDS, Outcome
from jobs.secrets import SecretError, job_secrets_reveal, mask_text
from jobs.services.base import Conflict, ServiceError, actor_name, event_actor
from jobs.services.executions import (
    execution_finish,
    execution_runner_status,
    execution_send_later,
    external_start,
)
from jobs.services.overlap import execution_release_buffered
from jobs.stats import stats_forget, stats_invalidate

logger = logging.getLogger(__name__)

_CONTROL_STATES = {
    "pause": Execution.DesiredState.PAUSE,
    "resume": Execution.DesiredState.RUN,
    "kill": Execution.DesiredState.KILL,
}
_PAST = {"pause": "paused", "resume": "resumed", "kill": "killed"}
REPORTABLE_STATUSES = (
    Execution.Status.RUNNING,
    Execution.Status.PAUSED,
    Execution.Status.SUCCEEDED,
    Execution.Status.FAILED,
    Execution.Status.KILLED,
    Execution.Status.TIMED_OUT,
)


def execution_control(
    *, execution: Execution, action: str, user: Any, detail: str = ""
) -> Execution:
    """Ask for pause, resume or kill: stored as desired_state, published on Redis.
    `detail` says why on the audit trail (the system's own kills).

    Answers at once; the owning worker acts within ~0.1 s (or, with Redis down,
    KARMCHARI_CONTROL_DB_INTERVAL). A pending execution that is killed never starts.
    """
    if action not in _CONTROL_STATES:
        raise ServiceError(f"Unknown action {action!r}: use pause, resume or kill.")
    execution.refresh_from_db(fields=["status", "desired_state"])
    if execution.is_finished:
        raise Conflict(
            f"Execution #{execution.pk} already finished ({execution.status}); "
            f"it cannot be {_PAST[action]}."
        )
    kind = execution.job.kind
    if action == "pause" and kind not in PAUSABLE_KINDS:
        raise Conflict(f"Jobs of kind {kind!r} cannot be paused; kill them instead.")
    killing = Conflict(
        f"Execution #{execution.pk} is being killed; it cannot be {_PAST[action]}."
    )
    if action != "kill" and execution.desired_state == Execution.DesiredState.KILL:
        raise killing
    if (
        action == "resume"
        and execution.status != Execution.Status.PAUSED
        and execution.desired_state != Execution.DesiredState.PAUSE
    ):
        raise Conflict(f"Execution #{execution.pk} is not paused.")
    desired = _CONTROL_STATES[action]
    now = timezone.now()
    with transaction.atomic():
        if action == "kill" and (
            Execution.objects.filter(
                pk=execution.pk, status=Execution.Status.PENDING
            ).update(
                status=Execution.Status.KILLED,
                desired_state=desired,
                finished_at=now,
                reason=f"Killed by {actor_name(user)} before it started.",
            )
        ):
            ExecutionEvent.objects.create(
                execution=execution,
                action=action,
                actor=event_actor(user),
                detail=" ".join(
                    filter(None, [detail, "Was pending: it will not start."])
                ),
            )
            # It will never end, so no end releases a run buffered behind it.
            job_id = execution.job_id
            transaction.on_commit(lambda: execution_release_buffered(job_id=job_id))
        else:
            active = Execution.objects.filter(
                pk=execution.pk, status__in=Execution.ACTIVE_STATUSES
            )
            if action != "kill":  # a kill is final: a later pause cannot undo it
                active = active.exclude(desired_state=Execution.DesiredState.KILL)
            if not active.update(desired_state=desired):
                execution.refresh_from_db(fields=["status", "desired_state"])
                if not execution.is_finished:
                    raise killing
                raise Conflict(
                    f"Execution #{execution.pk} already finished "
                    f"({execution.status}); it cannot be {_PAST[action]}."
                )
            ExecutionEvent.objects.create(
                execution=execution,
                action=action,
                actor=event_actor(user),
                detail=detail,
            )
            # Read after the UPDATE above: a claim that committed before it is seen
            # here; one after it reads the new desired state itself (jobs/control.py).
            worker = _worker_of(execution_id=execution.pk)
            transaction.on_commit(
                lambda: control.publish(
                    execution_id=execution.pk, desired_state=desired, worker=worker
                )
            )
    stats_invalidate(job_id=execution.job_id)
    execution.refresh_from_db()
    return execution


def _worker_of(*, execution_id: int) -> str:
    worker = (
        Execution.objects.filter(pk=execution_id)
        .values_list("worker", flat=True)
        .first()
    )
    return worker or ""


def execution_report(
    *,
    execution: Execution,
    status: str,
    user: Any,
    output: str = "",
    error: str = "",
    exit_code: int | None = None,
    reason: str = "",
) -> Execution:
    """Progress or the end of an external job, sent by the process running it."""
    if (
        execution.job.kind != Job.Kind.EXTERNAL
        and execution.worker not in Execution.EXTERNAL_WORKERS
    ):
        raise Conflict("Only executions of external jobs report their own progress.")
    if status not in REPORTABLE_STATUSES:
        raise ServiceError(f"Cannot report status {status!r}.")
    # Masked as a worker masks what its runs print (the process may know a secret).
    hidden = job_secret_values(job_id=execution.job_id)
    output, error, reason = (
        mask_text(text, hidden) for text in (output, error, reason)
    )
    # All of a report or none of it, one report of a run at a time (the row lock):
    # concurrent progress reports append in turn, and of two final reports the
    # second sees the first one's end and is refused.
    with transaction.atomic():
        Execution.objects.select_for_update().filter(pk=execution.pk).exists()
        execution.refresh_from_db()
        if execution.is_finished:
            raise Conflict(
                f"Execution #{execution.pk} already finished ({execution.status})."
            )
        if execution.status == Execution.Status.PENDING:
            # Not started yet (sent to nobody, or a retry in its backoff): the
            # process that reports is running it.
            external_start(execution=execution)
            execution.refresh_from_db()
        if output:
            logs.log_append(execution_id=execution.pk, data=output.encode())
        if status in Execution.FINAL_STATUSES or status != execution.status:
            ExecutionEvent.objects.create(
                execution=execution,
                action=ExecutionEvent.Action.REPORT,
                actor=event_actor(user),
                detail=f"Reported {status}.",
            )
        if status in Execution.FINAL_STATUSES:
            now = timezone.now()
            outcome = Outcome(
                status=status,
                exit_code=exit_code,
                output=logs.log_tail_text(execution_id=execution.pk),
                error=error,
                reason=reason,
                paused_seconds=external_paused_seconds(execution=execution, now=now),
            )
            execution = execution_finish(execution=execution, outcome=outcome, now=now)
            if execution.status != status:
                raise Conflict(
                    f"Execution #{execution.pk} already finished ({execution.status})."
                )
            transaction.on_commit(lambda: logs.log_close(execution_id=execution.pk))
            return execution
        if status != execution.status:
            resumed = execution.status == Execution.Status.PAUSED
            execution_runner_status(execution_id=execution.pk, status=status)
            if resumed:
                _add_paused_time(execution=execution)
            stats_forget(job_id=execution.job_id)
    execution.refresh_from_db()
    return execution


def job_secret_values(*, job_id: int) -> list[str]:
    """The job's secret values, to mask what its process sends (a report, a ping's
    body); none when some cannot be decrypted (those stay unknown here: what was
    sent is still taken)."""
    try:
        return list(job_secrets_reveal(job_id=job_id).values())
    except SecretError:
        logger.warning("job %s: a secret cannot be decrypted to mask it", job_id)
        return []


def _paused_stretch(*, execution: Execution, now: datetime) -> float:
    """Seconds since an external run reported paused (its latest such report)."""
    paused = (
        execution.events.filter(
            action=ExecutionEvent.Action.REPORT, detail="Reported paused."
        )
        .order_by("-created")
        .values_list("created", flat=True)
        .first()
    )
    return 0.0 if paused is None else max(0.0, (now - paused).total_seconds())


def _add_paused_time(*, execution: Execution) -> None:
    """An external run reported running again: the stretch since it reported paused
    is paused time (not counted against its timeout, nor in its duration)."""
    stretch = _paused_stretch(execution=execution, now=timezone.now())
    if stretch:
        Execution.objects.filter(pk=execution.pk).update(
            paused_seconds=F("paused_seconds") + stretch
        )


def external_paused_seconds(*, execution: Execution, now: datetime) -> float:
    """An external run's paused time at its end, `now`: what it had, plus the
    stretch it is still paused for (it may end, or be killed, without resuming)."""
    paused = execution.paused_seconds or 0.0
    if execution.status == Execution.Status.PAUSED:
        paused += _paused_stretch(execution=execution, now=now)
    return paused


def execution_retry(*, execution: Execution, user: Any) -> Execution:
    """Run a finished execution again now, by hand (whatever max_retries says)."""
    execution.refresh_from_db(fields=["status"])
    if not execution.is_finished:
        raise Conflict(
            f"Execution #{execution.pk} is still {execution.status}; "
            "kill it or wait for it to finish before retrying."
        )
    if execution.attempt >= MAX_ATTEMPT:
        raise Conflict(
            f"Execution #{execution.pk} is attempt {execution.attempt}, the highest "
            "a run can have; run its job instead."
        )
    disabled = Conflict(f"Job {execution.job.name!r} is disabled; enable it first.")
    if not execution.job.enabled:
        raise disabled
    with transaction.atomic():
        # The job's row, then the run's, as the automatic retry takes them: one
        # retry of a run at a time (a double-clicked button, a client's repeated
        # POST, the automatic one), and none for a job disabled meanwhile.
        if (
            not Job.objects.select_for_update()
            .filter(pk=execution.job_id, enabled=True)
            .exists()
        ):
            raise disabled
        Execution.objects.select_for_update().filter(pk=execution.pk).exists()
        active = (
            execution.retries.filter(status__in=Execution.ACTIVE_STATUSES)
            .values_list("pk", flat=True)
            .first()
        )
        if active is not None:
            raise Conflict(
                f"Execution #{execution.pk} is already being retried as #{active}."
            )
        retry = Execution.objects.create(
            job=execution.job,
            trigger=Execution.Trigger.RETRY,
            attempt=execution.attempt + 1,
            retry_of=execution,
            parameters=execution.parameters,
            dispatched_at=timezone.now(),
        )
        ExecutionEvent.objects.create(
            execution=execution,
            action=ExecutionEvent.Action.RETRY,
            actor=event_actor(user),
            detail=f"Retried as #{retry.pk}.",
        )
        if retry.job.kind == Job.Kind.EXTERNAL:
            external_start(execution=retry)  # answered as it is: running
            retry.refresh_from_db()
        else:
            transaction.on_commit(
                lambda: execution_send_later(execution=retry, delay=0.0)
            )
    stats_invalidate(job_id=execution.job_id)
    return retry
