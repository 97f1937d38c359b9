"""Schedules and firing. The beat tick (jobs/scheduler.py) calls schedules_fire_due();
the API and admin call schedule_create/schedule_update. Both end in
schedules_fire(), so a slot is decided the same way whichever path reaches it."""

from __future__ import annotations

import functools
import hashlib
import logging
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_redis import get_redis_connection

from jobs import firing, redis_batch, schedules
from jobs.models import Execution, Job, Schedule
from jobs.services.base import Gone
from jobs.services.outbox import executions_send
from jobs.services.overlap import (
    execution_kill_active,
    executions_active_counts,
    overlap_verdict,
)
from jobs.stats import stats_forget, stats_invalidate

logger = logging.getLogger(__name__)


SCHEDULE_CHANNEL = (
    f"{settings.CACHES['default'].get('KEY_PREFIX') or 'karmchari'}:schedules:changed"
)


# The longest epsilon or jitter a schedule (or a job's ping grace) may have.
MAX_SCHEDULE_DELAY = timedelta(days=366)


class ScheduleInvalid(ValueError):
    """Schedule fields that cannot be stored: maps each field's name to why."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def schedule_parse(*, kind: str, expression: str, tz: str) -> schedules.Parsed:
    """The compiled expression; ScheduleError saying what is wrong otherwise."""
    return schedules.parse(kind, expression, tz)


def schedule_check_delay(value: timedelta | None) -> None:
    """ValueError unless `value` may be an epsilon, a jitter or a job's ping grace."""
    if value is None:
        return
    if value < timedelta(0):
        raise ValueError("Must not be negative.")
    if value > MAX_SCHEDULE_DELAY:
        raise ValueError(f"Must be at most {MAX_SCHEDULE_DELAY.days} days.")


def schedule_check_moment(moment: datetime) -> None:
    """ValueError unless within the years where every time zone's clock and croniter
    can still count."""
    if not 1971 <= moment.year <= 9998:
        raise ValueError("Must be between 1971 and 9998.")


def schedule_check_expression(*, kind: str, expression: str, tz: str) -> None:
    """ScheduleInvalid under the field at fault, with the parser's explanation."""
    try:
        schedule_parse(kind=kind, expression=expression, tz=tz)
    except schedules.ScheduleError as exc:
        field = "timezone" if "time zone" in str(exc) else "expression"
        raise ScheduleInvalid({field: str(exc)}) from None


_CHECKED_FIELDS = (
    "kind",
    "expression",
    "timezone",
    "epsilon",
    "jitter",
    "start_at",
    "end_at",
)


def schedule_check(*, schedule: Schedule | None, fields: Mapping[str, Any]) -> None:
    """ScheduleInvalid naming each field at fault, unless `fields` (those sent or
    changed) over `schedule` (None, or unsaved: a new one) make a schedule the
    scheduler can fire. What the API and the admin both refuse.

    A new or re-timed schedule that would never fire is a mistake (a date in the
    past, a window that is over): refused rather than stored dead."""
    base = schedule if schedule is not None else Schedule()
    values = {
        name: fields[name] if name in fields else getattr(base, name)
        for name in _CHECKED_FIELDS
    }
    errors: dict[str, str] = {}
    try:
        schedule_check_expression(
            kind=values["kind"], expression=values["expression"], tz=values["timezone"]
        )
    except ScheduleInvalid as exc:
        errors.update(exc.errors)
    checks: dict[str, Callable[[Any], None]] = {
        "epsilon": schedule_check_delay,
        "jitter": schedule_check_delay,
        "start_at": schedule_check_moment,
        "end_at": schedule_check_moment,
    }
    for name, check in checks.items():
        if fields.get(name) is not None:
            try:
                check(fields[name])
            except ValueError as exc:
                errors[name] = str(exc)
    start_at, end_at = values["start_at"], values["end_at"]
    if start_at and end_at and end_at <= start_at:
        errors.setdefault("end_at", "Must be after start_at.")
    if errors:
        raise ScheduleInvalid(errors)
    timing = {"kind", "expression", "timezone", "start_at", "end_at"}
    # Only a new schedule or a change of its timing (a PUT sends unchanged values
    # too: disabling a finished schedule is no re-timing).
    retimed = {
        name for name in timing & set(fields) if fields[name] != getattr(base, name)
    }
    if base.pk is not None and not retimed:
        return
    probe = Schedule(**{name: values[name] for name in timing})
    now = timezone.now()
    if schedule_next_run(probe, after=now) is not None:
        return
    if end_at is not None and end_at <= now:
        raise ScheduleInvalid({"end_at": "Already passed."})
    raise ScheduleInvalid({"expression": "This schedule has no fire time after now."})


def schedule_upcoming(schedule: Schedule, *, after: datetime, n: int) -> list[datetime]:
    """A saved schedule's next `n` slots after `after`: inside its start/end window
    and no more than its repetitions left (what it will really fire)."""
    if schedule.start_at is not None and schedule.start_at > after:
        # Fire times are whole seconds: the first one at or after start_at.
        start = schedule.start_at
        if start.microsecond:
            start = start.replace(microsecond=0) + timedelta(seconds=1)
        after = start - timedelta(seconds=1)
    if schedule.repetitions_left is not None:
        n = min(n, schedule.repetitions_left)
    parsed = schedule_parse(
        kind=schedule.kind, expression=schedule.expression, tz=schedule.timezone
    )
    fires: list[datetime] = []
    for fire in parsed.iter_fires(after):
        if len(fires) >= n or (schedule.end_at is not None and fire > schedule.end_at):
            break
        fires.append(fire)
    return fires


def schedule_next_run(schedule: Schedule, *, after: datetime) -> datetime | None:
    """The first slot after `after` inside the schedule's start/end window."""
    upcoming = schedule_upcoming(schedule, after=after, n=1)
    return upcoming[0] if upcoming else None


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
        stored: Schedule | None = None
        if changed is not None:
            stored = (
                Schedule.objects.select_for_update()
                .filter(pk=schedule.pk)
                .only(*_TIMING_FIELDS, "next_run_at")
                .first()
            )
            if stored is None:
                # Deleted by another request meanwhile: a save would insert it again.
                raise Gone(f"Schedule #{schedule.pk} was deleted meanwhile.")
        reenabled = changed is not None and schedule.enabled and not was_enabled
        unrun: list[firing.Skip] = []
        missed = schedule.next_run_at is not None and schedule.next_run_at <= now
        if changed is None or _TIMING_FIELDS & changed:
            if reenabled and missed:
                # Re-enabled and re-timed at once: the slots of the disabled time
                # (as the new timing has them) are settled below, not dropped.
                assert schedule.next_run_at is not None
                first = schedule.next_run_at - timedelta(seconds=1)
                schedule.next_run_at = schedule_next_run(schedule, after=first)
                missed = (
                    schedule.next_run_at is not None and schedule.next_run_at <= now
                )
            if not (reenabled and missed):
                if stored is not None:
                    unrun = _unrun_before_retiming(
                        stored, now=now, job=schedule.job, was_enabled=was_enabled
                    )
                schedule.next_run_at = schedule_next_run(schedule, after=now)
        moved_from = None
        if changed and "job" in changed:
            moved_from = (
                Schedule.objects.filter(pk=schedule.pk)
                .values_list("job_id", flat=True)
                .first()
            )
        schedule.save()
        _insert_executions([_skipped(schedule, u.slot, u.reason, now) for u in unrun])
        if reenabled and missed and schedule.job.enabled:
            # No epsilon: every slot of the disabled time is missed, so the policy
            # settles them all (run_once: the latest), not each one "still on time".
            schedules_fire(
                [schedule],
                now=now,
                late_reason="schedule was disabled",
                epsilon=timedelta(0),
            )
    stats_forget(job_id=schedule.job_id)  # its next run
    if moved_from not in (None, schedule.job_id):
        stats_forget(job_id=moved_from)  # its next run was this schedule's
    schedules_announce_change()
    return schedule


def _unrun_before_retiming(
    stored: Schedule, *, now: datetime, job: Job, was_enabled: bool
) -> list[firing.Skip]:
    """The slots a schedule had due under its old timing, which its new timing
    drops: recorded as skipped, so that nothing is dropped silently (they were due
    while its job or it was disabled, or while the beat was behind or down)."""
    if stored.next_run_at is None or stored.next_run_at > now:
        return []
    try:
        parsed = schedule_parse(
            kind=stored.kind, expression=stored.expression, tz=stored.timezone
        )
    except schedules.ScheduleError:
        return []
    cause = (
        "job was disabled"
        if not job.enabled
        else "schedule was disabled"
        if not was_enabled
        else "missed"
    )
    return firing.unrun(
        parsed,
        first=stored.next_run_at,
        until=now,
        why=f"{cause}; its schedule was re-timed before it ran",
        end_at=stored.end_at,
        repetitions_left=stored.repetitions_left,
    )


def schedule_delete(*, schedule: Schedule) -> None:
    job_id = schedule.job_id
    schedule.delete()
    stats_forget(job_id=job_id)
    schedules_announce_change()


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
                schedules_fire(rows, now=now, until=until)
        handled += len(rows)
        if len(rows) < batch:
            break
    return handled


def schedules_fire(
    rows: list[Schedule],
    *,
    now: datetime,
    until: datetime | None = None,
    late_reason: str = "missed",
    epsilon: timedelta | None = None,
) -> None:
    """Decide each row's due slots, insert their executions and advance the rows.
    `epsilon`, when given, overrides each row's. Must run inside a transaction;
    tasks are sent after it commits."""
    active, buffered = executions_active_counts({row.job_id for row in rows})
    executions: list[Execution] = []
    sends: list[tuple[Execution, float]] = []
    kills: list[tuple[int, bool]] = []
    # Jobs whose cached stats this tick changes with rows no claim will follow:
    # runs skipped or buffered, and runs ended or asked to stop (cancel/terminate).
    changed: set[int] = set()
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
            epsilon=next(
                e for e in (epsilon, row.epsilon, default_epsilon) if e is not None
            ),
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
            changed.add(job.pk)
        ran: list[datetime] = []  # slots that run (now or buffered), not skipped
        for slot in decided.run:
            verdict, why = overlap_verdict(job, active[job.pk], buffered[job.pk])
            if verdict == "skip":
                executions.append(_skipped(row, slot, why, now))
                changed.add(job.pk)
                continue
            ran.append(slot)
            execution = Execution(
                job=job,
                schedule=row,
                scheduled_for=slot,
                trigger=Execution.Trigger.SCHEDULE,
            )
            executions.append(execution)
            if verdict in ("cancel", "terminate"):
                kills.append((job.pk, verdict == "terminate"))
                changed.add(job.pk)
            if verdict in ("buffer", "cancel"):
                buffered[job.pk] += 1
                changed.add(job.pk)
            else:
                active[job.pk] += 1
                # Due at its slot plus its jitter; a slot reached late starts at
                # once if that moment has passed, never past the next slot.
                due = slot + timedelta(seconds=_jitter(row, slot, decided.next_run_at))
                delay = max(0.0, (due - now).total_seconds())
                # Stamped with when it is due, as a retry is: the outbox sweep must
                # not take a run held back by its jitter for a lost one.
                execution.dispatched_at = now + timedelta(seconds=delay)
                sends.append((execution, delay))
        if ran:
            row.last_run_at = ran[-1]
            if row.repetitions_left is not None:
                # "Counts down with each run": a slot skipped by the overlap policy
                # does not use one up.
                row.repetitions_left = max(0, row.repetitions_left - len(ran))
        next_run_at = decided.next_run_at
        if next_run_at is None and row.repetitions_left and decided.run:
            # The plan spent the last repetitions, but the overlap policy skipped
            # some of them: the schedule goes on for those.
            candidate = parsed.next_after(max(now, decided.run[-1]))
            if candidate is not None and not (row.end_at and candidate > row.end_at):
                next_run_at = candidate
        row.next_run_at = next_run_at

    _insert_executions(executions)
    _save_fired(rows)
    for job_id, immediate in kills:
        made = {e.pk for e in executions if e.job_id == job_id and e.pk is not None}
        execution_kill_active(
            job_id=job_id,
            immediate=immediate,
            why="Its job's overlap policy.",
            spare=made,
        )
    sends = [(e, delay) for e, delay in sends if e.pk is not None]
    if sends:
        transaction.on_commit(lambda: executions_send(sends))
    if changed:
        transaction.on_commit(lambda: _stats_forget_jobs(changed))


def _stats_forget_jobs(job_ids: set[int]) -> None:
    """After a tick commits: the cached stats of the jobs it changed forgotten,
    once each, in one batch (jobs/redis_batch.py)."""
    for job_id in job_ids:
        stats_invalidate(job_id=job_id, pipe=redis_batch.batch)
    redis_batch.batch.send()


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


def _jitter(row: Schedule, slot: datetime, next_slot: datetime | None) -> float:
    """Seconds after its slot a run is due: random, or stable per job; always
    before the next slot."""
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


def schedules_announce_change() -> None:
    """Wake the beat so a new or changed schedule is seen without waiting."""

    def publish() -> None:
        try:
            get_redis_connection("default").publish(SCHEDULE_CHANNEL, b"1")
        except Exception:
            # Beat polls at least every second; a lost wake-up costs little.
            logger.warning("could not announce a schedule change", exc_info=True)

    transaction.on_commit(publish)
