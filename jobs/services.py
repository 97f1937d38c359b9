"""Every write with side effects. Views, tasks and admin actions call these."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from django_redis import get_redis_connection

from agents.models import Agent
from jobs import (
    access,
    control,
    firing,
    logs,
    metrics,
    notifications,
    pgsql,
    redis_batch,
    schedules,
)
from jobs.models import App, Execution, ExecutionEvent, Job, JobSecret, Schedule
from jobs.runners import PAUSABLE_KINDS, Outcome, RunContext, SpecError, get_runner
from jobs.secrets import (
    OutputMasker,
    SecretError,
    job_secrets_reveal,
    job_secrets_set,
    mask_text,
    spec_split_secrets,
)
from jobs.stats import stats_invalidate

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ServiceError(Exception):
    """A request that is well-formed but cannot be carried out now."""


class Conflict(ServiceError):
    """The object's state forbids the action (answered as 409)."""


def app_create(
    *,
    name: str,
    description: str = "",
    meta: dict[str, Any] | None = None,
    users: Iterable[Any] | None = None,
    groups: Iterable[Any] | None = None,
    creator: Any = None,
    **fields: Any,
) -> App:
    """A new app, granted to `users` and `groups` (per-app access), and to its
    `creator` when per-app access would otherwise hide it from them."""
    with transaction.atomic():
        app = App.objects.create(
            name=name, description=description, meta=meta or {}, **fields
        )
        app_set_access(app=app, users=users, groups=groups)
        if creator is not None:
            app_grant_creator(app=app, user=creator)
    return app


def app_update(
    *,
    app: App,
    users: Iterable[Any] | None = None,
    groups: Iterable[Any] | None = None,
    **fields: Any,
) -> App:
    for name, value in fields.items():
        setattr(app, name, value)
    with transaction.atomic():
        app.save(update_fields=list(fields))
        app_set_access(app=app, users=users, groups=groups)
    return app


def app_set_access(
    *, app: App, users: Iterable[Any] | None, groups: Iterable[Any] | None
) -> App:
    """Who sees the app with per-app access on; None leaves that side unchanged."""
    if users is not None:
        app.users.set(users)
    if groups is not None:
        app.groups.set(groups)
    return app


def app_grant_creator(*, app: App, user: Any) -> App:
    """Grants a new app to the user who made it, if per-app access would hide it
    from them (they could not see what they just made)."""
    if user is not None and user.is_authenticated and access.is_restricted(user):
        app.users.add(user)
    return app


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
    job = Job(app=app, name=name, kind=kind, spec=spec)
    for field, value in fields.items():
        setattr(job, field, value)
    return job_insert(job=job, parents=parents, secrets=secrets)


def job_insert(
    *,
    job: Job,
    parents: list[Job] | None = None,
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
    split: dict[str, str] = {}
    if "kind" in fields or "spec" in fields:
        kind = fields.get("kind", job.kind)
        spec = job_clean_spec(kind=kind, spec=fields.get("spec", job.spec))
        fields["spec"], split = spec_split_secrets(kind=kind, spec=spec)
    was_enabled = job.enabled
    for field, value in fields.items():
        setattr(job, field, value)
    with transaction.atomic():
        if parents is not None:
            job_set_parents(job=job, parents=parents)
        job.save(update_fields=[*fields, "updated"])
        if split or secrets or replace_secrets:
            job_secrets_set(
                job=job, secrets={**split, **(secrets or {})}, replace=replace_secrets
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
                _fire(rows, now=timezone.now(), late_reason="job was disabled")
        if "overlap_policy" in fields and job.overlap_policy not in BUFFERING_POLICIES:
            # Ends of runs only look for buffered runs under a buffering policy:
            # send those held back under the old one now.
            _send_buffered(job=job)
    if parents is not None:
        stats_invalidate(job_id=job.pk)
    if "enabled" in fields:
        _announce_schedule_change()
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
    if job.kind == Job.Kind.EXTERNAL:
        # Nothing to send: its process lives elsewhere and reports through the API.
        now = timezone.now()
        execution = Execution.objects.create(
            job=job,
            trigger=trigger,
            parameters=parameters or {},
            status=Execution.Status.RUNNING,
            started_at=now,
            worker="external",
        )
        Job.objects.filter(pk=job.pk).update(last_attempted_at=now)
        stats_invalidate(job_id=job.pk)
        return execution
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


def execution_send(*, execution: Execution) -> None:
    """Hand the execution to Celery. Safe to repeat: the claim decides who runs it.
    A broker outage is logged, not raised: the outbox sweep sends it later."""
    executions_send([(execution, 0.0)])


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
            Q(status=Execution.Status.PENDING)
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
                job_has_children=Exists(_children_of(OuterRef("job_id"))),
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
    ended = {
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "output": outcome.output,
        "error": outcome.error,
        "reason": outcome.reason,
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
        finished = pgsql.finish(execution=execution, ended=ended, duration=duration)
    else:
        finished = _finish_orm(execution=execution, ended=ended)
    if not finished:
        for field, value in before.items():
            setattr(execution, field, value)
        job = execution.job  # refresh_from_db() would drop a loaded job
        execution.refresh_from_db()
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
    transaction.on_commit(lambda: _execution_ended(execution=execution))
    if execution.job.overlap_policy in BUFFERING_POLICIES:
        execution_release_buffered(job_id=execution.job_id)
    _execution_after_finish(execution=execution)
    return execution


def _execution_ended(*, execution: Execution) -> None:
    """After an end commits: its job's cached stats forgotten and its duration
    recorded (sent with other ends' in one batch, jobs/redis_batch.py), then its
    notifications."""
    stats_invalidate(job_id=execution.job_id, pipe=redis_batch.batch)
    metrics.metrics_observe_execution(execution=execution, pipe=redis_batch.batch)
    redis_batch.batch.send()
    notifications.execution_changed(execution=execution)


def _finish_orm(*, execution: Execution, ended: dict[str, Any]) -> bool:
    with transaction.atomic():
        finished = bool(
            Execution.objects.filter(
                pk=execution.pk,
                status__in=(Execution.Status.RUNNING, Execution.Status.PAUSED),
            ).update(**ended)
        )
        if finished:
            _job_stats_add(execution=execution)
    return finished


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


def execution_run(*, execution_id: int, worker: str) -> Execution | None:
    """Claim, run and finish one execution. A no-op if it is not pending any more."""
    # Subscribed before the claim reads the desired state, so that a command sent
    # in between is heard, not lost.
    listener = control.ControlListener(execution_id)
    listener.subscribe()
    now = timezone.now()
    execution = _with_reconnect(
        lambda: execution_claim(execution_id=execution_id, worker=worker, now=now),
        what=f"execution {execution_id}: claiming it",
    )
    if execution is None:
        listener.close()
        logger.info("execution %s is not pending; nothing to run", execution_id)
        return None
    listener.open(desired=execution.desired_state)
    job = execution.job
    if job.kind == Job.Kind.EXTERNAL:
        # Fired by a schedule: now running; its own process reports the rest.
        listener.close()
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

    def on_status(status: str) -> None:
        try:
            execution_runner_status(execution_id=execution_id, status=status)
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


def execution_resend_stale(*, older_than: timedelta, batch: int = 500) -> int:
    """The outbox sweep: send again executions left pending for too long.

    A crash between commit and send, or a broker that lost the message (a Redis
    restart), leaves an execution pending forever; sending it again is harmless
    because the claim admits only one runner. But a run pending for long is usually
    just waiting behind a backlog: only runs whose queue the broker reports empty are
    sent again (a lost message cannot be behind anything), so a long backlog is not
    flooded with duplicates.
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
    waiting = _messages_waiting({execution.job.queue for execution in stale})
    lost = [execution for execution in stale if waiting.get(execution.job.queue) == 0]
    if not lost:
        return 0
    # Stamp first: a crash after this loses at most one re-send, never floods.
    Execution.objects.filter(pk__in=[e.pk for e in lost]).update(dispatched_at=now)
    executions_send([(execution, 0.0) for execution in lost])
    return len(lost)


def _messages_waiting(queues: Iterable[str]) -> dict[str, int]:
    """Messages ready in each queue, as the broker counts them (a queue it does not
    know holds none). Queues it could not be asked about are left out."""
    from jobs.tasks import run_execution

    counts: dict[str, int] = {}
    try:
        with run_execution.app.connection_for_write() as conn:
            for queue in sorted(queues):
                channel: Any = conn.channel()
                try:
                    counts[queue] = channel.queue_declare(
                        queue=queue, passive=True
                    ).message_count
                except conn.channel_errors:
                    counts[queue] = 0  # never declared, or deleted: nothing waits
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
    except Exception:
        logger.warning("outbox: cannot ask the broker about its queues", exc_info=True)
    return counts


# --- Schedules and firing ------------------------------------------------------------
# The beat tick (jobs/scheduler.py) calls schedules_fire_due(); the API and admin call
# schedule_create/schedule_update. Both end in _fire(), so a slot is decided the same
# way whichever path reaches it.

SCHEDULE_CHANNEL = "karmchari:schedules:changed"


def schedule_parse(*, kind: str, expression: str, tz: str) -> schedules.Parsed:
    """The compiled expression; ScheduleError saying what is wrong otherwise."""
    return schedules.parse(kind, expression, tz)


def schedule_next_run(schedule: Schedule, *, after: datetime) -> datetime | None:
    """The first slot after `after` inside the schedule's start/end window."""
    parsed = schedule_parse(
        kind=schedule.kind, expression=schedule.expression, tz=schedule.timezone
    )
    if schedule.start_at is not None and schedule.start_at > after:
        after = schedule.start_at - timedelta(seconds=1)
    slot = parsed.next_after(after)
    if slot is None or (schedule.end_at is not None and slot > schedule.end_at):
        return None
    if schedule.repetitions_left == 0:
        return None
    return slot


def schedule_create(*, job: Job, kind: str, expression: str, **fields: Any) -> Schedule:
    schedule = Schedule(job=job, kind=kind, expression=expression, **fields)
    return schedule_save(schedule=schedule, changed=None)


def schedule_update(*, schedule: Schedule, **fields: Any) -> Schedule:
    was_enabled = schedule.enabled
    changed = {
        name for name, value in fields.items() if getattr(schedule, name) != value
    }
    for name, value in fields.items():
        setattr(schedule, name, value)
    return schedule_save(schedule=schedule, changed=changed, was_enabled=was_enabled)


_TIMING_FIELDS = {
    "kind",
    "expression",
    "timezone",
    "start_at",
    "end_at",
    "repetitions_left",
}


def schedule_save(
    *, schedule: Schedule, changed: set[str] | None, was_enabled: bool = True
) -> Schedule:
    """Save a new (`changed` None) or edited schedule, keeping next_run_at right.

    A new or re-timed schedule starts from the next slot after now. Re-enabling one
    applies its misfire policy to the slots it missed while disabled (recorded as
    skipped, or run once), never a burst of old runs.
    """
    now = timezone.now()
    with transaction.atomic():
        if changed is None or _TIMING_FIELDS & changed:
            schedule.next_run_at = schedule_next_run(schedule, after=now)
        schedule.save()
        reenabled = changed is not None and schedule.enabled and not was_enabled
        missed = schedule.next_run_at is not None and schedule.next_run_at <= now
        if reenabled and missed and schedule.job.enabled:
            _fire([schedule], now=now, late_reason="schedule was disabled")
    _announce_schedule_change()
    return schedule


def schedule_delete(*, schedule: Schedule) -> None:
    schedule.delete()
    _announce_schedule_change()


def schedule_next_due() -> datetime | None:
    """The earliest slot of any enabled schedule: what beat sleeps until.

    Beat asks this on every tick, so the SQL is compiled once per process and run
    on a raw cursor; the planner answers it from the jobs_schedule_due index.
    """
    sql, params = _next_due_sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    raw: datetime | str = row[0]
    # SQLite hands back text; PostgreSQL an aware datetime.
    value = datetime.fromisoformat(raw) if isinstance(raw, str) else raw
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@functools.cache
def _next_due_sql(vendor: str) -> tuple[str, tuple[Any, ...]]:
    query = (
        Schedule.objects.filter(
            enabled=True, next_run_at__isnull=False, job__enabled=True
        )
        .order_by("next_run_at")
        .values_list("next_run_at", flat=True)[:1]
    ).query
    sql, params = query.sql_with_params()
    return sql, tuple(params)


def schedules_fire_due(
    *,
    now: datetime,
    ahead: timedelta = timedelta(0),
    batch: int = 500,
    max_batches: int = 20,
) -> int:
    """Fire every schedule due by `now + ahead`, in batches of one transaction each.

    Slots up to `ahead` in the future are fired early and sent with their ETA, so
    the task is already at the worker when its time comes (as Quartz's
    fire-ahead window does): a burst of a thousand slots still starts on time.
    Answers how many schedules were handled; stops after `max_batches`.
    """
    handled = 0
    until = now + ahead
    for _ in range(max_batches):
        with transaction.atomic():
            due = Schedule.objects.filter(
                enabled=True, next_run_at__lte=until, job__enabled=True
            ).order_by("next_run_at")
            if connection.features.has_select_for_update_skip_locked:
                # A second beat skips rows this one holds instead of waiting.
                due = due.select_for_update(skip_locked=True, of=("self",))
            rows = list(due.select_related("job__app")[:batch])
            if rows:
                _fire(rows, now=now, until=until)
        handled += len(rows)
        if len(rows) < batch:
            break
    return handled


def _fire(
    rows: list[Schedule],
    *,
    now: datetime,
    until: datetime | None = None,
    late_reason: str = "missed",
) -> None:
    """Decide each row's due slots, insert their executions and advance the rows.
    Must run inside a transaction; tasks are sent after it commits."""
    active, buffered = _active_counts({row.job_id for row in rows})
    executions: list[Execution] = []
    sends: list[tuple[Execution, float]] = []
    kills: list[tuple[int, bool]] = []
    default_epsilon = timedelta(seconds=settings.KARMCHARI_DEFAULT_EPSILON)
    for row in rows:
        try:
            parsed = schedule_parse(
                kind=row.kind, expression=row.expression, tz=row.timezone
            )
        except schedules.ScheduleError as exc:
            # One bad row must not stop the tick: park it, visibly.
            logger.error("schedule %s cannot fire: %s; disabling it", row.pk, exc)
            row.enabled = False
            row.next_run_at = None
            continue
        assert row.next_run_at is not None
        decided = firing.plan(
            parsed,
            first=row.next_run_at,
            now=now,
            until=until,
            epsilon=row.epsilon if row.epsilon is not None else default_epsilon,
            policy=row.misfire_policy,
            end_at=row.end_at,
            repetitions_left=row.repetitions_left,
            catchup_window=timedelta(seconds=settings.KARMCHARI_CATCHUP_WINDOW),
            catchup_max=settings.KARMCHARI_CATCHUP_MAX,
            late_reason=late_reason,
        )
        job = row.job
        for skip in decided.skipped:
            executions.append(_skipped(row, skip.slot, skip.reason, now))
        for slot in decided.run:
            verdict, why = _overlap(job, active[job.pk], buffered[job.pk])
            if verdict == "skip":
                executions.append(_skipped(row, slot, why, now))
                continue
            execution = Execution(
                job=job,
                schedule=row,
                scheduled_for=slot,
                trigger=Execution.Trigger.SCHEDULE,
            )
            executions.append(execution)
            if verdict in ("cancel", "terminate"):
                kills.append((job.pk, verdict == "terminate"))
            if verdict in ("buffer", "cancel"):
                buffered[job.pk] += 1
            else:
                execution.dispatched_at = now
                active[job.pk] += 1
                wait = max(0.0, (slot - now).total_seconds())
                sends.append(
                    (execution, wait + _jitter(row, slot, decided.next_run_at))
                )
        if decided.run:
            row.last_run_at = decided.run[-1]
            if row.repetitions_left is not None:
                row.repetitions_left = max(0, row.repetitions_left - len(decided.run))
        row.next_run_at = decided.next_run_at

    _insert_executions(executions)
    _save_fired(rows)
    for job_id, immediate in kills:
        execution_kill_active(job_id=job_id, immediate=immediate)
    sends = [(e, delay) for e, delay in sends if e.pk is not None]
    if sends:
        transaction.on_commit(lambda: executions_send(sends))


def _save_fired(rows: list[Schedule]) -> None:
    """Write back the fired rows in one round trip. (bulk_update would build a CASE
    per field per row: seconds of SQL compiling for a burst of a thousand.)"""
    table = connection.ops.quote_name(Schedule._meta.db_table)
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET next_run_at = %s, last_run_at = %s, "  # noqa: S608
            "repetitions_left = %s, enabled = %s WHERE id = %s",
            [
                (
                    ops.adapt_datetimefield_value(row.next_run_at),
                    ops.adapt_datetimefield_value(row.last_run_at),
                    row.repetitions_left,
                    row.enabled,
                    row.pk,
                )
                for row in rows
            ],
        )


def _skipped(row: Schedule, slot: datetime, reason: str, now: datetime) -> Execution:
    return Execution(
        job=row.job,
        schedule=row,
        scheduled_for=slot,
        trigger=Execution.Trigger.SCHEDULE,
        status=Execution.Status.SKIPPED,
        reason=reason,
        finished_at=now,
    )


def _insert_executions(executions: list[Execution]) -> None:
    """Insert in one statement; on a slot another beat already filled, fall back to
    row by row so only the duplicates are dropped (UNIQUE (schedule, scheduled_for)).
    """
    if not executions:
        return
    try:
        with transaction.atomic():
            Execution.objects.bulk_create(executions)
    except IntegrityError:
        logger.info("some slots were already taken; inserting one by one")
        for execution in executions:
            execution.pk = None
            try:
                with transaction.atomic():
                    execution.save(force_insert=True)
            except IntegrityError:
                execution.pk = None
                logger.info(
                    "slot %s of schedule %s already fired elsewhere",
                    execution.scheduled_for,
                    execution.schedule_id,
                )


def _active_counts(job_ids: set[int]) -> tuple[Counter[int], Counter[int]]:
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


def _overlap(job: Job, active: int, buffered: int) -> tuple[str, str]:
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


def _jitter(row: Schedule, slot: datetime, next_slot: datetime | None) -> float:
    """Seconds to delay a run: random, or stable per job; never past the next slot."""
    spread = row.jitter.total_seconds() if row.jitter else 0.0
    if spread <= 0:
        return 0.0
    if row.jitter_hashed:
        digest = hashlib.sha256(f"{row.job.app.name}/{row.job.name}".encode()).digest()
        delay = int.from_bytes(digest[:8], "big") / 2**64 * spread
    else:
        delay = random.uniform(0, spread)  # noqa: S311 (spreading load, not secrets)
    if next_slot is not None:
        delay = min(delay, max(0.0, (next_slot - slot).total_seconds() - 0.001))
    return delay


def executions_send(sends: list[tuple[Execution, float]]) -> None:
    """Send tasks (each with its delay in seconds). A broker outage leaves the rest
    pending for the outbox sweep to send later; it never raises into the caller."""
    from jobs.tasks import run_execution

    try:
        # One producer (and connection) for the whole burst, not one per task.
        with run_execution.app.producer_or_acquire() as producer:
            for execution, delay in sends:
                run_execution.apply_async(
                    (execution.pk,),
                    queue=execution.job.queue,
                    countdown=delay or None,  # type: ignore[arg-type]
                    producer=producer,
                )
    except Exception:
        logger.exception("could not send all executions; the outbox sweep will retry")


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
    active, _ = _active_counts({job_id})
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


def _send_buffered(*, job: Job) -> int:
    """Send every buffered run of a job (its policy no longer buffers)."""
    held = list(
        Execution.objects.filter(
            job=job, status=Execution.Status.PENDING, dispatched_at__isnull=True
        ).select_related("job")
    )
    if not held:
        return 0
    now = timezone.now()
    Execution.objects.filter(pk__in=[e.pk for e in held]).update(dispatched_at=now)
    transaction.on_commit(lambda: executions_send([(e, 0.0) for e in held]))
    return len(held)


def execution_kill_active(*, job_id: int, immediate: bool) -> int:
    """Ask every running/paused execution of a job to stop (overlap cancel/terminate).
    Answers how many were asked."""
    asked = Execution.objects.filter(
        job_id=job_id,
        status__in=(Execution.Status.RUNNING, Execution.Status.PAUSED),
    ).exclude(desired_state=Execution.DesiredState.KILL)
    ids = list(asked.values_list("pk", flat=True))
    Execution.objects.filter(pk__in=ids).update(
        desired_state=Execution.DesiredState.KILL
    )

    def tell_workers() -> None:
        for execution_id in ids:
            control.publish(
                execution_id=execution_id, desired_state=Execution.DesiredState.KILL
            )

    transaction.on_commit(tell_workers)
    logger.info(
        "overlap: asked %d execution(s) of job %s to stop%s",
        len(ids),
        job_id,
        " at once" if immediate else "",
    )
    return len(ids)


def _announce_schedule_change() -> None:
    """Wake the beat so a new or changed schedule is seen without waiting."""

    def publish() -> None:
        try:
            get_redis_connection("default").publish(SCHEDULE_CHANNEL, b"1")
        except Exception:
            # Beat polls at least every second; a lost wake-up costs little.
            logger.warning("could not announce a schedule change", exc_info=True)

    transaction.on_commit(publish)


# --- Execution engine: control bus, reports, retries, dependencies -------------------
# The control bus (jobs/control.py) carries what these write; the worker side lives
# in execution_run and the runners.

_CONTROL_STATES = {
    "pause": Execution.DesiredState.PAUSE,
    "resume": Execution.DesiredState.RUN,
    "kill": Execution.DesiredState.KILL,
}
_PAST = {"pause": "paused", "resume": "resumed", "kill": "killed"}
RETRYABLE_STATUSES = (
    Execution.Status.FAILED,
    Execution.Status.TIMED_OUT,
    Execution.Status.LOST,
)
REPORTABLE_STATUSES = (
    Execution.Status.RUNNING,
    Execution.Status.PAUSED,
    Execution.Status.SUCCEEDED,
    Execution.Status.FAILED,
    Execution.Status.KILLED,
    Execution.Status.TIMED_OUT,
)


def _actor(user: Any) -> Any:
    return (
        user if user is not None and getattr(user, "is_authenticated", False) else None
    )


def _who(user: Any) -> str:
    actor = _actor(user)
    return actor.get_username() if actor is not None else "the system"


def execution_control(*, execution: Execution, action: str, user: Any) -> Execution:
    """Ask for pause, resume or kill: stored as desired_state, published on Redis.

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
                reason=f"Killed by {_who(user)} before it started.",
            )
        ):
            ExecutionEvent.objects.create(
                execution=execution,
                action=action,
                actor=_actor(user),
                detail="Was pending: it will not start.",
            )
        else:
            changed = Execution.objects.filter(
                pk=execution.pk, status__in=Execution.ACTIVE_STATUSES
            ).update(desired_state=desired)
            if not changed:
                execution.refresh_from_db(fields=["status"])
                raise Conflict(
                    f"Execution #{execution.pk} already finished "
                    f"({execution.status}); it cannot be {_PAST[action]}."
                )
            ExecutionEvent.objects.create(
                execution=execution, action=action, actor=_actor(user)
            )
            transaction.on_commit(
                lambda: control.publish(
                    execution_id=execution.pk, desired_state=desired
                )
            )
    stats_invalidate(job_id=execution.job_id)
    execution.refresh_from_db()
    return execution


def execution_runner_status(*, execution_id: int, status: str) -> bool:
    """The worker acted on a desired state: running → paused or paused → running."""
    source, target = (
        (Execution.Status.RUNNING, Execution.Status.PAUSED)
        if status == Execution.Status.PAUSED
        else (Execution.Status.PAUSED, Execution.Status.RUNNING)
    )
    return bool(
        Execution.objects.filter(pk=execution_id, status=source).update(status=target)
    )


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
    if execution.job.kind != Job.Kind.EXTERNAL:
        raise Conflict("Only executions of external jobs report their own progress.")
    if status not in REPORTABLE_STATUSES:
        raise ServiceError(f"Cannot report status {status!r}.")
    execution.refresh_from_db()
    if execution.is_finished:
        raise Conflict(
            f"Execution #{execution.pk} already finished ({execution.status})."
        )
    if output:
        logs.log_append(execution_id=execution.pk, data=output.encode())
    if status in Execution.FINAL_STATUSES:
        with transaction.atomic():
            ExecutionEvent.objects.create(
                execution=execution,
                action=ExecutionEvent.Action.REPORT,
                actor=_actor(user),
                detail=f"Reported {status}.",
            )
        outcome = Outcome(
            status=status,
            exit_code=exit_code,
            output=logs.log_tail_text(execution_id=execution.pk),
            error=error,
            reason=reason,
        )
        return execution_finish(execution=execution, outcome=outcome)
    if status != execution.status:
        execution_runner_status(execution_id=execution.pk, status=status)
        ExecutionEvent.objects.create(
            execution=execution,
            action=ExecutionEvent.Action.REPORT,
            actor=_actor(user),
            detail=f"Reported {status}.",
        )
        stats_invalidate(job_id=execution.job_id)
    execution.refresh_from_db()
    return execution


def retry_delay(*, backoff: float, attempt: int) -> float:
    """Seconds before the attempt after `attempt`: exponential, with equal jitter
    (half fixed, half random) so a burst of failures does not retry in lockstep."""
    base = float(backoff) * 2.0 ** (attempt - 1)
    return base / 2 + random.uniform(0, base / 2)  # noqa: S311 (not a secret)


def execution_schedule_retry(*, execution: Execution) -> Execution | None:
    """The next attempt of a failed, timed-out or lost run, if the job allows one.

    Idempotent: an execution is retried at most once automatically. The retry is
    stamped `dispatched_at` = its due time, so the outbox sweep does not send it early.
    """
    job = execution.job
    if (
        execution.status not in RETRYABLE_STATUSES
        or execution.attempt > job.max_retries
        or not job.enabled
    ):
        return None
    if execution.retries.filter(trigger=Execution.Trigger.RETRY).exists():
        return None
    delay = retry_delay(backoff=job.retry_backoff, attempt=execution.attempt)
    with transaction.atomic():
        retry = Execution.objects.create(
            job=job,
            trigger=Execution.Trigger.RETRY,
            attempt=execution.attempt + 1,
            retry_of=execution,
            parameters=execution.parameters,
            dispatched_at=timezone.now() + timedelta(seconds=delay),
        )
        transaction.on_commit(lambda: _send_later(execution=retry, delay=delay))
    logger.info(
        "execution %s %s; attempt %s in %.1fs",
        execution.pk,
        execution.status,
        retry.attempt,
        delay,
    )
    return retry


def execution_retry(*, execution: Execution, user: Any) -> Execution:
    """Run a finished execution again now, by hand (whatever max_retries says)."""
    execution.refresh_from_db(fields=["status"])
    if not execution.is_finished:
        raise Conflict(
            f"Execution #{execution.pk} is still {execution.status}; "
            "kill it or wait for it to finish before retrying."
        )
    if not execution.job.enabled:
        raise Conflict(f"Job {execution.job.name!r} is disabled; enable it first.")
    with transaction.atomic():
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
            actor=_actor(user),
            detail=f"Retried as #{retry.pk}.",
        )
        transaction.on_commit(lambda: _send_later(execution=retry, delay=0.0))
    stats_invalidate(job_id=execution.job_id)
    return retry


def _send_later(*, execution: Execution, delay: float) -> None:
    if execution.job.kind == Job.Kind.EXTERNAL:
        _external_start(execution_id=execution.pk)
        return
    executions_send([(execution, delay)])


def _external_start(*, execution_id: int) -> None:
    """An external job's run is running as soon as it exists: its process, elsewhere,
    reads its desired state and reports through the API."""
    Execution.objects.filter(pk=execution_id, status=Execution.Status.PENDING).update(
        status=Execution.Status.RUNNING, started_at=timezone.now(), worker="external"
    )


class DependencyCycle(ServiceError):
    """Parents that would make a job wait for itself (answered as 400)."""


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


def job_set_parents(*, job: Job, parents: list[Job]) -> Job:
    if why := job_parents_cycle(job=job, parents=parents):
        raise DependencyCycle(why)
    job.parents.set(parents)
    return job


def _release_children(*, execution: Execution) -> None:
    """Kala's rule: a parent's success runs its children, in the order they were
    made (FIFO); a disabled child is recorded as skipped."""
    parent = execution.job
    now = timezone.now()
    for child in parent.children.select_related("app").order_by("pk"):
        if not child.enabled:
            Execution.objects.create(
                job=child,
                trigger=Execution.Trigger.DEPENDENCY,
                status=Execution.Status.SKIPPED,
                finished_at=now,
                reason=f"Job is disabled; parent {parent.name!r} succeeded "
                f"(execution #{execution.pk}).",
            )
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


# --- Compatibility APIs ---------------------------------------------------------------
# What the adapters in compat/ (Karmchari, Kala, JobStreamer) need beyond the services
# above. compat/ never writes to the database itself; everything goes through here.


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


def job_delete(*, job: Job) -> list[int]:
    """Delete a job and, by Kala's rule, every child left with no other parent (and
    theirs, and so on). Their running executions are asked to stop first. Answers the
    primary keys deleted."""
    with transaction.atomic():
        doomed: list[Job] = [job]
        seen = {job.pk}
        index = 0
        while index < len(doomed):
            current = doomed[index]
            index += 1
            for child in current.children.prefetch_related("parents").order_by("pk"):
                if child.pk in seen:
                    continue
                if {parent.pk for parent in child.parents.all()} <= seen:
                    doomed.append(child)
                    seen.add(child.pk)
        for each in doomed:
            execution_kill_active(job_id=each.pk, immediate=True)
        Job.objects.filter(pk__in=seen).delete()
    stats_invalidate(job_id=None)
    _announce_schedule_change()
    return [each.pk for each in doomed]
