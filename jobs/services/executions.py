"""A run's life on the worker side: trigger, claim, run, end, and what the end sets
off (a retry, dependent jobs). The claim and the end are the hot path: see
docs/operations.md, "How a run works"."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from agents.models import Agent
from jobs import control, logs, metrics, notifications, pgsql, redis_batch
from jobs.models import Execution, Job, JobSecret
from jobs.runners import Outcome, RunContext, get_runner
from jobs.secrets import OutputMasker, SecretError, job_secrets_reveal, mask_text
from jobs.services.base import Conflict
from jobs.services.outbox import execution_send, executions_send
from jobs.services.overlap import BUFFERING_POLICIES, execution_release_buffered
from jobs.stats import stats_forget, stats_invalidate
from karmchari_site.text import storable

logger = logging.getLogger(__name__)

# The `worker` of an external run: its process lives elsewhere.
EXTERNAL_WORKER = Execution.EXTERNAL_WORKERS[0]

T = TypeVar("T")


def external_open(
    *,
    job: Job,
    trigger: str,
    worker: str = EXTERNAL_WORKER,
    parameters: dict[str, Any] | None = None,
) -> Execution:
    """An external job's run, running from now (its process lives elsewhere): an
    attempt, and an active run, in the job's stats."""
    now = timezone.now()
    execution = Execution.objects.create(
        job=job,
        trigger=trigger,
        parameters=parameters or {},
        status=Execution.Status.RUNNING,
        started_at=now,
        worker=worker,
    )
    Job.objects.filter(pk=job.pk).update(last_attempted_at=now)
    stats_forget(job_id=job.pk)
    return execution


def job_trigger(
    *,
    job: Job,
    trigger: str = Execution.Trigger.API,
    parameters: dict[str, Any] | None = None,
) -> Execution:
    """Create a pending execution and send it to the job's queue once committed."""
    if not job.enabled:
        raise Conflict(f"Job {job.name!r} is disabled; enable it before running it.")
    if job.kind == Job.Kind.EXTERNAL:
        # Nothing to send: its process lives elsewhere and reports through the API.
        return external_open(job=job, trigger=trigger, parameters=parameters)
    # One INSERT, atomic by itself: no BEGIN/COMMIT round trips (on PostgreSQL a
    # prepared one). Sent once it is committed (at once, or when a caller's own
    # transaction commits).
    execution = Execution(
        job=job,
        trigger=trigger,
        parameters=parameters or {},
        dispatched_at=timezone.now(),
    )
    if connection.vendor == "postgresql":
        pgsql.insert(execution)
    else:
        execution.save(force_insert=True)
    transaction.on_commit(lambda: _execution_created(execution=execution))
    return execution


def _execution_created(*, execution: Execution) -> None:
    """After a trigger commits: the run sent, and its job's cached stats forgotten
    with other writes in one batch (jobs/redis_batch.py)."""
    execution_send(execution=execution)
    stats_invalidate(job_id=execution.job_id, pipe=redis_batch.batch)
    redis_batch.batch.send()


def execution_claim(
    *, execution_id: int, worker: str, now: datetime | None = None
) -> Execution | None:
    """Move a pending execution to running; None if someone else already has it.

    One commit (one WAL flush): a single statement on PostgreSQL (jobs/pgsql.py), a
    transaction elsewhere. `execution_run` retries the claim with the same `now`
    after a dropped connection, and the claim accepts its own earlier claim (same
    worker, same start stamp): a claim whose commit went through but whose answer was
    lost is taken up again, never lost and never doubled.
    """
    now = now or timezone.now()
    if connection.vendor == "postgresql":
        execution = pgsql.claim(execution_id=execution_id, worker=worker, now=now)
    else:
        execution = _claim_orm(execution_id=execution_id, worker=worker, now=now)
    if execution is not None:
        transaction.on_commit(lambda: _execution_started(execution=execution))
    return execution


def _execution_started(*, execution: Execution) -> None:
    """After a claim commits: its job's cached stats forgotten (it is running now)
    and its start lag recorded (scheduled runs), in the batch; its notifications."""
    stats_invalidate(job_id=execution.job_id, pipe=redis_batch.batch)
    metrics.metrics_observe_execution(execution=execution, pipe=redis_batch.batch)
    redis_batch.batch.send()
    notifications.execution_changed(execution=execution)


def _claim_orm(*, execution_id: int, worker: str, now: datetime) -> Execution | None:
    # The worker's Agent row, in the same statement (NULL if it never registered).
    agent = Agent.objects.filter(name=worker).values("pk")[:1]
    with transaction.atomic():
        claimed = Execution.objects.filter(
            Q(status=Execution.Status.PENDING, job__enabled=True)
            | Q(status=Execution.Status.RUNNING, worker=worker, started_at=now),
            pk=execution_id,
        ).update(
            status=Execution.Status.RUNNING,
            started_at=now,
            worker=worker,
            agent_id=Subquery(agent),
        )
        if not claimed:
            return None
        execution = (
            Execution.objects.select_related("job__app")
            .annotate(
                job_has_secrets=Exists(
                    JobSecret.objects.filter(job_id=OuterRef("job_id"))
                ),
            )
            .get(pk=execution_id)
        )
        Job.objects.filter(pk=execution.job_id).update(last_attempted_at=now)
        execution.job.last_attempted_at = now
    return execution


def _children_of(job_id: Any) -> QuerySet[Any]:
    return Job.parents.through.objects.filter(to_job_id=job_id)


def execution_finish(
    *, execution: Execution, outcome: Outcome, now: datetime | None = None
) -> Execution:
    """Record how a running execution ended and fold it into the job's stats, then
    set off what follows (dependants, a retry, a buffered run, notifications).

    `execution_run` retries the end with the same `now` after a dropped connection:
    an end whose commit went through but whose answer was lost is recognised by its
    stamp, and what follows it still happens (its counters were in that commit)."""
    now = now or timezone.now()
    # What a job prints may hold NUL bytes, which PostgreSQL text cannot.
    ended = {
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "output": storable(outcome.output),
        "error": storable(outcome.error),
        "reason": storable(outcome.reason),
        "finished_at": now,
        **(
            {"paused_seconds": outcome.paused_seconds} if outcome.paused_seconds else {}
        ),
    }
    before = {field: getattr(execution, field) for field in ended}
    for field, value in ended.items():
        setattr(execution, field, value)
    # One commit for the end and the job's counters: a single statement on
    # PostgreSQL (jobs/pgsql.py), a transaction elsewhere.
    if connection.vendor == "postgresql":
        duration = execution.duration or 0.0
        job_now = pgsql.finish(execution=execution, ended=ended, duration=duration)
    else:
        job_now = _finish_orm(execution=execution, ended=ended)
    # The overlap policy as the end found it (switched to a buffering one while the
    # run went, it has a run to release); None: not known, look anyway.
    policy: str | None = None
    if job_now is not None:
        execution.job_has_children = job_now.has_children  # type: ignore[attr-defined]
        policy = job_now.overlap_policy
    else:
        for field, value in before.items():
            setattr(execution, field, value)
        job = execution.job  # refresh_from_db() would drop a loaded job
        try:
            execution.refresh_from_db()
        except Execution.DoesNotExist:
            # Its job was deleted while it ran (the delete asked it to stop).
            logger.info(
                "execution %s was deleted before its run finished", execution.pk
            )
            return execution
        execution.job = job
        if (execution.status, execution.finished_at) != (outcome.status, now):
            logger.warning(
                "execution %s was %s before its run finished; outcome %s not recorded",
                execution.pk,
                execution.status,
                outcome.status,
            )
            return execution
        logger.info("execution %s: its end was recorded; going on", execution.pk)
    try:
        # The retry first: it counts as active, so a buffered run waits for it
        # rather than both going past max_concurrent (as for a lost run,
        # jobs/recovery.py). Before the end's notifications, which run at once
        # outside a transaction: they tell by it whether a retry follows.
        _execution_after_finish(execution=execution)
    finally:
        transaction.on_commit(lambda: _execution_ended(execution=execution))
    if policy is None or policy in BUFFERING_POLICIES:
        execution_release_buffered(job_id=execution.job_id)
    return execution


def _execution_ended(*, execution: Execution) -> None:
    """After an end commits: its job's cached stats forgotten and its duration
    recorded (sent with other ends' in one batch, jobs/redis_batch.py), then its
    notifications."""
    stats_invalidate(job_id=execution.job_id, pipe=redis_batch.batch)
    metrics.metrics_observe_execution(execution=execution, pipe=redis_batch.batch)
    redis_batch.batch.send()
    notifications.execution_changed(execution=execution)


def _finish_orm(*, execution: Execution, ended: dict[str, Any]) -> pgsql.Ended | None:
    """As pgsql.finish: None if no longer running, else the job as it is now."""
    with transaction.atomic():
        if not Execution.objects.filter(
            pk=execution.pk,
            status__in=(Execution.Status.RUNNING, Execution.Status.PAUSED),
        ).update(**ended):
            return None
        _job_stats_add(execution=execution)
        # One read for both, after the job's row was written (its lock held).
        has_children, policy = (
            Job.objects.filter(pk=execution.job_id)
            .annotate(has_children=Exists(_children_of(OuterRef("pk"))))
            .values_list("has_children", "overlap_policy")
            .get()
        )
    return pgsql.Ended(bool(has_children), policy)


def _job_stats_add(*, execution: Execution) -> None:
    """Fold a finished run into its job's counters (with F(): no lost update)."""
    stats: dict[str, Any] = {
        "duration_total": F("duration_total") + (execution.duration or 0.0)
    }
    if execution.status == Execution.Status.SUCCEEDED:
        stats.update(
            success_count=F("success_count") + 1, last_success_at=execution.finished_at
        )
    else:
        stats.update(
            error_count=F("error_count") + 1, last_error_at=execution.finished_at
        )
    Job.objects.filter(pk=execution.job_id).update(**stats)


def _skip_if_job_disabled(*, execution_id: int) -> bool:
    """A pending run the claim refused because its job is disabled ends skipped.

    The claim is where "a disabled job's runs do not start" holds, whatever made
    the run: a trigger or a beat tick that read the job as enabled just before a
    disable committed, a retry, a child. (The disable itself skips the runs that
    were pending when it committed.)"""
    return bool(
        Execution.objects.filter(
            pk=execution_id, status=Execution.Status.PENDING, job__enabled=False
        ).update(
            status=Execution.Status.SKIPPED,
            finished_at=timezone.now(),
            reason="Its job was disabled before it started.",
        )
    )


def execution_run(*, execution_id: int, worker: str) -> Execution | None:
    """Claim, run and finish one execution. A no-op if it is not pending any more."""
    # Subscribed before the claim reads the desired state, so that a command sent
    # in between is heard, not lost.
    listener = control.ControlListener(execution_id, worker=worker)
    listener.subscribe()
    now = timezone.now()
    execution = _with_reconnect(
        lambda: execution_claim(execution_id=execution_id, worker=worker, now=now),
        what=f"execution {execution_id}: claiming it",
    )
    if execution is None:
        listener.close()
        if _skip_if_job_disabled(execution_id=execution_id):
            logger.info("execution %s: its job is disabled; skipped", execution_id)
        else:
            logger.info("execution %s is not pending; nothing to run", execution_id)
        return None
    listener.open(desired=execution.desired_state)
    job = execution.job
    if job.kind == Job.Kind.EXTERNAL:
        # Fired by a schedule (or a retry now due): now running; its own process
        # reports the rest. Not this worker's: it must not be lost with it.
        listener.close()
        Execution.objects.filter(pk=execution.pk).update(
            worker=EXTERNAL_WORKER, agent=None
        )
        execution.worker, execution.agent = EXTERNAL_WORKER, None
        return execution
    runner = get_runner(job.kind)
    if runner is None:
        listener.close()
        outcome = Outcome(
            status=Execution.Status.FAILED,
            reason=f"This worker cannot run jobs of kind {job.kind!r}.",
        )
        return execution_finish(execution=execution, outcome=outcome)

    def record_pid(pid: int) -> None:
        _with_reconnect(
            lambda: Execution.objects.filter(pk=execution_id).update(pid=pid),
            what=f"execution {execution_id}: recording pid",
        )

    try:
        # Decrypted here, in the worker, just before the run: never stored elsewhere.
        # The claim already knows whether the job has any (no query when not).
        secrets = (
            _with_reconnect(
                lambda: job_secrets_reveal(job_id=job.pk),
                what=f"execution {execution_id}: reading its secrets",
            )
            if getattr(execution, "job_has_secrets", True)
            else {}
        )
    except SecretError as exc:
        listener.close()
        outcome = Outcome(
            status=Execution.Status.FAILED, reason=f"Secrets unreadable: {exc}"
        )
        return execution_finish(execution=execution, outcome=outcome)

    writer = logs.LogWriter(execution_id)
    # What the run prints reaches the live log and the database with its secrets
    # masked.
    masker = OutputMasker(secrets.values(), writer.write)

    def poll() -> str:
        writer.flush_if_due()
        return listener.poll()

    def on_status(status: str, paused_seconds: float) -> None:
        try:
            execution_runner_status(
                execution_id=execution_id, status=status, paused_seconds=paused_seconds
            )
        except DatabaseError:
            logger.exception("execution %s: could not record %s", execution_id, status)

    context = RunContext(
        execution_id=execution_id,
        job_name=job.name,
        app_name=job.app.name,
        timeout=job.timeout,
        on_start=record_pid,
        on_output=masker.write,
        poll=poll,
        on_status=on_status,
        secrets=secrets,
    )
    try:
        outcome = runner.run(job.spec, context)
    except Exception as exc:
        # Not logger.exception: the message may quote a secret (a URL, an argument).
        logger.error(
            "execution %s: runner crashed\n%s",
            execution_id,
            mask_text(traceback.format_exc(), secrets.values()),
        )
        outcome = Outcome(status=Execution.Status.FAILED, reason=f"Runner error: {exc}")
    finally:
        listener.close()
        masker.flush()
        # Everything is in the database before the end is: log readers rely on it.
        writer.close()
    outcome = dataclasses.replace(
        outcome,
        output=mask_text(outcome.output, secrets.values()),
        error=mask_text(outcome.error, secrets.values()),
        reason=mask_text(outcome.reason, secrets.values()),
    )
    # The run may have outlived the worker's database connection (a restart, a
    # failover, pg_terminate_backend): reconnect rather than leave it `running`.
    ended_at = timezone.now()
    return _with_reconnect(
        lambda: execution_finish(execution=execution, outcome=outcome, now=ended_at),
        what=f"execution {execution_id}: recording its end",
    )


_RECONNECT_ATTEMPTS = 5


def _with_reconnect(write: Callable[[], T], *, what: str) -> T:
    """Run a write, opening a new database connection when the old one has died.

    Only connection errors are retried, and only writes that are safe to repeat
    (conditional UPDATEs). Within a Celery task Django checks its connection only
    when the task starts, so a connection dropped while a job ran shows up here.
    """
    for attempt in range(1, _RECONNECT_ATTEMPTS + 1):
        try:
            return write()
        except (OperationalError, InterfaceError):
            if attempt == _RECONNECT_ATTEMPTS or connection.in_atomic_block:
                raise
            logger.warning("%s: database connection lost; reconnecting", what)
            connection.close()
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


RETRYABLE_STATUSES = (
    Execution.Status.FAILED,
    Execution.Status.TIMED_OUT,
    Execution.Status.LOST,
)


def execution_runner_status(
    *, execution_id: int, status: str, paused_seconds: float | None = None
) -> bool:
    """The worker acted on a desired state: running → paused or paused → running.

    `paused_seconds`: the run's paused time so far, kept on the row as it goes, so a
    running run's time so far leaves out the pauses it came back from."""
    source, target = (
        (Execution.Status.RUNNING, Execution.Status.PAUSED)
        if status == Execution.Status.PAUSED
        else (Execution.Status.PAUSED, Execution.Status.RUNNING)
    )
    paused = {} if paused_seconds is None else {"paused_seconds": paused_seconds}
    return bool(
        Execution.objects.filter(pk=execution_id, status=source).update(
            status=target, **paused
        )
    )


def retry_delay(*, backoff: float, attempt: int) -> float:
    """Seconds before the attempt after `attempt`: exponential up to
    KARMCHARI_RETRY_BACKOFF_MAX, with equal jitter (half fixed, half random) so a
    burst of failures does not retry in lockstep."""
    base = min(
        float(backoff) * 2.0 ** min(attempt - 1, 64),
        max(float(backoff), settings.KARMCHARI_RETRY_BACKOFF_MAX),
    )
    return base / 2 + random.uniform(0, base / 2)  # noqa: S311 (not a secret)


def execution_schedule_retry(*, execution: Execution) -> Execution | None:
    """The next attempt of a failed, timed-out or lost run, if the job allows one.

    Idempotent: an execution is retried at most once automatically. The retry is
    stamped `dispatched_at` = its due time, so the outbox sweep does not send it early.
    """
    if execution.status not in RETRYABLE_STATUSES:
        return None
    job = execution.job
    with transaction.atomic():
        # As the job is now, not as the run's claim loaded it: disabled or given
        # fewer retries meanwhile, it gets no more attempts. Both rows locked: a
        # disable (which skips pending runs) or a retry by hand (which takes the
        # run's lock too) waits for this one, or this one sees what they did.
        current = (
            Job.objects.select_for_update()
            .filter(pk=job.pk)
            .values("enabled", "max_retries", "retry_backoff")
            .first()
        )
        if current is None or not current["enabled"]:
            return None
        if execution.attempt > current["max_retries"]:
            return None
        desired = (
            Execution.objects.select_for_update()
            .filter(pk=execution.pk)
            .values_list("desired_state", flat=True)
            .first()
        )
        if desired is None:
            return None  # deleted meanwhile
        if desired == Execution.DesiredState.KILL:
            # A kill is final, whatever the run ended as: lost before its agent
            # acted, failed before its worker did, timed out during the grace.
            logger.info(
                "execution %s %s after a kill; not retried",
                execution.pk,
                execution.status,
            )
            return None
        if execution.retries.filter(trigger=Execution.Trigger.RETRY).exists():
            _retry_follows(execution)
            return None  # retried already, automatically or by hand
        delay = retry_delay(backoff=current["retry_backoff"], attempt=execution.attempt)
        retry = Execution.objects.create(
            job=job,
            trigger=Execution.Trigger.RETRY,
            attempt=execution.attempt + 1,
            retry_of=execution,
            parameters=execution.parameters,
            dispatched_at=timezone.now() + timedelta(seconds=delay),
        )
        transaction.on_commit(
            lambda: execution_send_later(execution=retry, delay=delay)
        )
        stats_forget(job_id=job.pk)  # its pending retry counts
    _retry_follows(execution)
    logger.info(
        "execution %s %s; attempt %s in %.1fs",
        execution.pk,
        execution.status,
        retry.attempt,
        delay,
    )
    return retry


def _retry_follows(execution: Execution) -> None:
    """Tell the end's notifications (notifications.retry_follows) that this attempt's
    failure is not the last: in memory, no column and no query on the run path."""
    execution.retry_follows = True  # type: ignore[attr-defined]


def execution_send_later(*, execution: Execution, delay: float) -> None:
    if execution.job.kind == Job.Kind.EXTERNAL and delay <= 0:
        external_start(execution=execution)
        return
    # An external job's later attempt too: the worker that claims it when it is due
    # marks it running (execution_run), for its process to take up.
    executions_send([(execution, delay)])


def external_start(*, execution: Execution) -> None:
    """An external job's run is running as soon as it is due: its process, elsewhere,
    reads its desired state and reports through the API."""
    now = timezone.now()
    if Execution.objects.filter(
        pk=execution.pk, status=Execution.Status.PENDING
    ).update(status=Execution.Status.RUNNING, started_at=now, worker=EXTERNAL_WORKER):
        Job.objects.filter(pk=execution.job_id).update(last_attempted_at=now)
        stats_forget(job_id=execution.job_id)


def _release_children(*, execution: Execution) -> None:
    """Kala's rule: a parent's success runs its children, in the order they were
    made (FIFO); a disabled child is recorded as skipped."""
    parent = execution.job
    now = timezone.now()
    # Once per child and parent run, even if this end's follow-ups run again (the
    # worker re-records an end whose answer a dropped connection lost).
    released = set(
        Execution.objects.filter(
            trigger=Execution.Trigger.DEPENDENCY,
            job__in=parent.children.all(),
            parameters__parent_execution=execution.pk,
        ).values_list("job_id", flat=True)
    )
    for child in parent.children.select_related("app").order_by("pk"):
        if child.pk in released:
            continue
        if not child.enabled:
            Execution.objects.create(
                job=child,
                trigger=Execution.Trigger.DEPENDENCY,
                # As a triggered child's: the check above finds it next time.
                parameters={"parent_execution": execution.pk},
                status=Execution.Status.SKIPPED,
                finished_at=now,
                reason=f"Job is disabled; parent {parent.name!r} succeeded "
                f"(execution #{execution.pk}).",
            )
            stats_forget(job_id=child.pk)
            continue
        job_trigger(
            job=child,
            trigger=Execution.Trigger.DEPENDENCY,
            parameters={"parent_execution": execution.pk},
        )


def _execution_after_finish(*, execution: Execution) -> None:
    """What a recorded end sets off: dependent jobs or a retry."""
    if execution.status == Execution.Status.SUCCEEDED and getattr(
        execution, "job_has_children", True
    ):
        _release_children(execution=execution)
    elif execution.status in RETRYABLE_STATUSES:
        execution_schedule_retry(execution=execution)
