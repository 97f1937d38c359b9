"""Stats for the API: totals over all jobs and per job, cached in Redis.

Services that change what these count call stats_invalidate(); the cache timeout
(KARMCHARI_STATS_CACHE_SECONDS) bounds staleness for writes that do not (a schedule's
next run time, runs the beat tick sends, until their claim).
"""

from __future__ import annotations

import contextlib
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.db import transaction
from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import TruncHour
from django.http import Http404
from django.utils import timezone
from django_redis import get_redis_connection

from agents import live
from agents.models import Agent
from jobs import schedules
from jobs.models import App, Execution, Job, Schedule

_GLOBAL_KEY = "stats:global"
# Every app's figures asked for since the last change, in one Redis hash (by app
# id), so that a change forgets them all with the global figures, in the same DEL;
# each app's entry is written alone (HSET), never read, changed and written back.
_APPS_KEY = "stats:apps"
RECENT = 10


def _job_key(job_id: int) -> str:
    return f"stats:job:{job_id}"


def stats_invalidate(*, job_id: int | None, pipe: Any = None) -> None:
    """Forget the global figures and, given a job, that job's: at once, or queued in
    `pipe` (a Redis pipeline the caller sends with its other commands). The
    generation moves on, so figures being computed meanwhile are not stored."""
    keys = [_GLOBAL_KEY, _APPS_KEY, DASHBOARD_KEY]
    if job_id is not None:
        keys += [_job_key(job_id), _hourly_key(job_id)]
    backend = caches["default"]  # once: each read through `cache` is a lookup
    # The generation first: a store after it is refused, one before it is deleted.
    if pipe is not None:
        pipe.incr(backend.make_key(_GENERATION_KEY))
        pipe.delete(*(backend.make_key(key) for key in keys))
    else:
        with contextlib.suppress(Exception):  # Redis down: nothing cached either
            get_redis_connection("default").incr(backend.make_key(_GENERATION_KEY))
        cache.delete_many(keys)


# Moved on by every stats_invalidate. A reader notes it before computing, and its
# figures are stored only if it has not moved since: a change that lands while they
# are computed (a run ending) would otherwise be hidden behind figures from before
# it, for a whole KARMCHARI_STATS_CACHE_SECONDS.
_GENERATION_KEY = "stats:generation"
_STORE_IF_CURRENT = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
else
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 1
"""


def _generation() -> str | None:
    """The generation now, or None when Redis cannot tell (then nothing is stored)."""
    try:
        key = caches["default"].make_key(_GENERATION_KEY)
        value = get_redis_connection("default").get(key)
    except Exception:
        return None
    return (value or b"0").decode()


def _store(
    key: str, value: bytes, *, seconds: float, generation: str | None, field: str = ""
) -> None:
    """Cache `value` (encoded) under `key` (or in the hash `key`, under `field`) if
    the generation is still `generation`."""
    if generation is None:
        return
    backend = caches["default"]
    with contextlib.suppress(Exception):
        get_redis_connection("default").eval(
            _STORE_IF_CURRENT,
            2,
            backend.make_key(_GENERATION_KEY),
            backend.make_key(key),
            generation,
            value,
            field,
            max(1, int(seconds)),
        )


def _cache_set(key: str, value: Any, *, seconds: float, generation: str | None) -> None:
    encoded = caches["default"].client.encode(value)  # type: ignore[attr-defined]
    _store(key, encoded, seconds=seconds, generation=generation)


def stats_forget(*, job_id: int | None) -> None:
    """stats_invalidate once the current transaction commits (at once outside one),
    so a reader in between cannot cache the figures from before the change."""
    transaction.on_commit(lambda: stats_invalidate(job_id=job_id))


def _by_status(executions: Any) -> dict[str, int]:
    counts = dict.fromkeys(Execution.Status.values, 0)
    for row in executions.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def _within(
    apps: QuerySet[App] | None,
) -> tuple[QuerySet[Job], QuerySet[Execution], QuerySet[Schedule]]:
    """Jobs, executions and schedules of `apps` (None: of every app)."""
    jobs, executions, schedules_ = (
        Job.objects.all(),
        Execution.objects.all(),
        Schedule.objects.all(),
    )
    if apps is None:
        return jobs, executions, schedules_
    return (
        jobs.filter(app__in=apps),
        executions.filter(job__app__in=apps),
        schedules_.filter(job__app__in=apps),
    )


def stats_global(*, apps: QuerySet[App] | None = None) -> dict[str, Any]:
    """Totals over the jobs of `apps` (access.scope(); None: every app, cached)."""
    generation = None
    if apps is None:
        cached = cache.get(_GLOBAL_KEY)
        if cached is not None:
            return dict(cached)
        generation = _generation()
    job_rows, execution_rows, schedule_rows = _within(apps)
    jobs = job_rows.aggregate(
        jobs=Count("id"),
        enabled=Count("id", filter=Q(enabled=True)),
        success_count=Sum("success_count"),
        error_count=Sum("error_count"),
        last_attempted_at=Max("last_attempted_at"),
        duration_total=Sum("duration_total"),
        untimed_count=Sum("untimed_count"),
    )
    runs = (
        (jobs["success_count"] or 0)
        + (jobs["error_count"] or 0)
        - (jobs["untimed_count"] or 0)
    )
    executions = _by_status(execution_rows)
    figures = {
        "jobs": jobs["jobs"],
        "enabled_jobs": jobs["enabled"],
        "disabled_jobs": jobs["jobs"] - jobs["enabled"],
        "success_count": jobs["success_count"] or 0,
        "error_count": jobs["error_count"] or 0,
        "average_duration": (jobs["duration_total"] or 0.0) / runs if runs else None,
        "last_attempted_at": jobs["last_attempted_at"],
        "next_run_at": schedule_rows.filter(enabled=True, job__enabled=True).aggregate(
            next=Min("next_run_at")
        )["next"],
        "active_executions": sum(executions[s] for s in Execution.ACTIVE_STATUSES),
        "executions": executions,
        "generated_at": timezone.now(),
    }
    if apps is None:
        _cache_set(
            _GLOBAL_KEY,
            figures,
            seconds=settings.KARMCHARI_STATS_CACHE_SECONDS,
            generation=generation,
        )
    return figures


def stats_app(*, app: App) -> dict[str, Any]:
    """stats_global over one app's jobs, with the app's name and creation time;
    cached until anything changes, like the global figures."""
    key = caches["default"].make_key(_APPS_KEY)
    with contextlib.suppress(Exception):  # Redis down: computed every time
        cached = get_redis_connection("default").hget(key, str(app.pk))
        if cached is not None:
            figures = dict(pickle.loads(cached))  # noqa: S301 (our own cache)
            # All apps share the hash and its expiry, which each new entry pushes
            # on: an entry's own age bounds how stale it may be.
            age = timezone.now() - figures["generated_at"]
            if age.total_seconds() < settings.KARMCHARI_STATS_CACHE_SECONDS:
                return figures
    generation = _generation()
    figures = {
        **stats_global(apps=App.objects.filter(pk=app.pk)),
        "app": app.name,
        "created": app.created,
    }
    _store(
        _APPS_KEY,
        pickle.dumps(figures),
        seconds=settings.KARMCHARI_STATS_CACHE_SECONDS,
        generation=generation,
        field=str(app.pk),
    )
    return figures


def stats_job(*, job: Job) -> dict[str, Any]:
    key = _job_key(job.pk)
    cached = cache.get(key)
    if cached is not None:
        return dict(cached)
    generation = _generation()
    # Read after the generation: a run that ended since the caller loaded the job
    # is in its counters.
    try:
        job.refresh_from_db(fields=["enabled", *Job.COUNTER_FIELDS])
    except Job.DoesNotExist:
        raise Http404("The job was deleted meanwhile.") from None
    executions = _by_status(job.executions.all())
    figures = {
        "job": job.pk,
        "success_count": job.success_count,
        "error_count": job.error_count,
        "last_success_at": job.last_success_at,
        "last_error_at": job.last_error_at,
        "last_attempted_at": job.last_attempted_at,
        "average_duration": job.average_duration,
        "next_run_at": job.schedules.filter(enabled=True).aggregate(
            next=Min("next_run_at")
        )["next"]
        if job.enabled
        else None,
        "active_executions": sum(executions[s] for s in Execution.ACTIVE_STATUSES),
        "executions": executions,
        "recent_executions": [
            {
                "id": execution.pk,
                "status": execution.status,
                "trigger": execution.trigger,
                "attempt": execution.attempt,
                "created": execution.created,
                "started_at": execution.started_at,
                "finished_at": execution.finished_at,
                "duration": execution.duration,
            }
            for execution in job.executions.order_by("-id").only(
                "id",
                "job_id",  # else each row reloads it (job.executions sets it)
                "status",
                "trigger",
                "attempt",
                "created",
                "started_at",
                "finished_at",
                "paused_seconds",
            )[:RECENT]
        ],
        "generated_at": timezone.now(),
    }
    _cache_set(
        key,
        figures,
        seconds=settings.KARMCHARI_STATS_CACHE_SECONDS,
        generation=generation,
    )
    return figures


# --- Operator console: the admin dashboard and the job page -------------------------

DASHBOARD_KEY = "stats:dashboard"
# The dashboard is for watching, so its figures live briefly; stats_invalidate() drops
# them sooner on every change it hears of.
DASHBOARD_SECONDS = 10
HOURS = 24
UPCOMING = 10
FAILING = 10
DASHBOARD_AGENTS = 20

# Series of the hourly chart, bottom of the stack first.
OUTCOMES: dict[str, tuple[str, ...]] = {
    "succeeded": (Execution.Status.SUCCEEDED,),
    "failed": (
        Execution.Status.FAILED,
        Execution.Status.TIMED_OUT,
        Execution.Status.LOST,
    ),
    "killed": (Execution.Status.KILLED,),
    "skipped": (Execution.Status.SKIPPED,),
    "active": Execution.ACTIVE_STATUSES,
}
_OUTCOME_OF = {status: name for name, group in OUTCOMES.items() for status in group}


def _hourly_key(job_id: int | None) -> str:
    return f"stats:hourly:{'all' if job_id is None else job_id}"


def stats_hourly(
    *,
    job_id: int | None = None,
    now: datetime | None = None,
    apps: QuerySet[App] | None = None,
) -> list[dict[str, Any]]:
    """Executions created in each of the last 24 hours, by outcome, oldest first,
    of one job, or of the jobs of `apps` (None: every app; cached).

    One GROUP BY over the rows of the window, found through the `created` indexes
    (jobs_execution_newest, or jobs_execution_job_newest for one job). Hours are UTC.
    """
    key = _hourly_key(job_id)
    cached = cache.get(key) if apps is None else None
    if cached is not None and now is None:
        return list(cached)
    generation = _generation() if apps is None else None
    now = now or timezone.now()
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=HOURS - 1)
    _, executions, _ = _within(apps)
    executions = executions.filter(created__gte=start)
    if job_id is not None:
        executions = executions.filter(job_id=job_id)
    rows = (
        executions.order_by()
        .annotate(hour=TruncHour("created", tzinfo=UTC))
        .values("hour", "status")
        .annotate(n=Count("id"))
    )
    hours = [start + timedelta(hours=i) for i in range(HOURS)]
    buckets = {hour: dict.fromkeys(OUTCOMES, 0) for hour in hours}
    for row in rows:
        bucket = buckets.get(row["hour"].astimezone(UTC))
        if bucket is not None:
            bucket[_OUTCOME_OF[row["status"]]] += row["n"]
    series = [{"hour": hour, **buckets[hour]} for hour in hours]
    _cache_set(key, series, seconds=DASHBOARD_SECONDS, generation=generation)
    return series


def _upcoming(now: datetime, apps: QuerySet[App] | None = None) -> list[dict[str, Any]]:
    """The next fire times over all enabled schedules of enabled jobs.

    Any of the first N fire times belongs to one of the N schedules that fire first
    (anything else fires after those N), so N rows through jobs_schedule_due and pure
    schedule maths suffice, whatever the number of schedules.
    """
    _, _, schedule_rows = _within(apps)
    rows = (
        schedule_rows.filter(enabled=True, job__enabled=True, next_run_at__isnull=False)
        .select_related("job__app")
        .order_by("next_run_at")[:UPCOMING]
    )
    fires: list[dict[str, Any]] = []
    for schedule in rows:
        assert schedule.next_run_at is not None
        times = [schedule.next_run_at]
        with contextlib.suppress(schedules.ScheduleError):
            times += schedules.preview(
                schedule.kind,
                schedule.expression,
                schedule.timezone,
                schedule.next_run_at,
                UPCOMING - 1,
            )
        if schedule.end_at is not None:
            times = [t for t in times if t <= schedule.end_at]
        if schedule.repetitions_left is not None:
            times = times[: schedule.repetitions_left]
        fires += [
            {
                "at": at,
                "overdue": at < now,
                "schedule_id": schedule.pk,
                "expression": schedule.expression,
                "timezone": schedule.timezone,
                "job_id": schedule.job_id,
                "job": schedule.job.name,
                "app": schedule.job.app.name,
            }
            for at in times
        ]
    fires.sort(key=lambda fire: fire["at"])
    return fires[:UPCOMING]


def _failing(apps: QuerySet[App] | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Jobs whose last finished run failed: the last error is newer than the last
    success (the denormalised timestamps; no look at executions)."""
    job_rows, _, _ = _within(apps)
    failing = job_rows.filter(last_error_at__isnull=False).filter(
        Q(last_success_at__isnull=True) | Q(last_error_at__gt=F("last_success_at"))
    )
    rows = failing.select_related("app").order_by("-last_error_at")[:FAILING]
    listed = [
        {
            "job_id": job.pk,
            "job": job.name,
            "app": job.app.name,
            "enabled": job.enabled,
            "last_error_at": job.last_error_at,
            "last_success_at": job.last_success_at,
            "error_count": job.error_count,
        }
        for job in rows
    ]
    total = len(listed) if len(listed) < FAILING else failing.count()
    return total, listed


def _agents(now: datetime) -> list[dict[str, Any]]:
    """Agents, live ones first, with their latest load (one MGET to Redis)."""
    gone = Case(
        When(status=Agent.Status.OFFLINE, then=Value(1)),
        default=Value(0),
        output_field=IntegerField(),
    )
    agents = list(
        Agent.objects.annotate(gone=gone).order_by("gone", "-last_heartbeat", "name")[
            :DASHBOARD_AGENTS
        ]
    )
    samples = live.read_many(
        (agent.instance_id for agent in agents), now=now.timestamp()
    )
    listed = []
    for agent in agents:
        sample = samples.get(str(agent.instance_id))
        seen_at = datetime.fromtimestamp(sample.at, tz=UTC) if sample else None
        if agent.status == Agent.Status.OFFLINE:
            state = "offline"
        elif not agent.is_fresh(now=now, seen_at=seen_at):
            state = "stale"
        else:
            state = "draining" if agent.status == Agent.Status.DRAINING else "alive"
        free = sample.memory_free if sample else agent.memory_free
        averages = sample.load_average if sample else agent.load_average
        running = (sample.running if sample else agent.running) or []
        listed.append(
            {
                "id": agent.pk,
                "name": agent.name,
                "host": agent.host,
                "state": state,
                "cores": agent.cpu_cores,
                "cpu": sample.system_cpu_load if sample else agent.system_cpu_load,
                "load1": averages[0] if averages else None,
                "memory_used": 1 - free / agent.memory_total
                if free is not None and agent.memory_total
                else None,
                "running": 0 if state == "offline" else len(running),
                "last_heartbeat": seen_at or agent.last_heartbeat,
            }
        )
    return listed


def stats_dashboard(*, apps: QuerySet[App] | None = None) -> dict[str, Any]:
    """Everything the admin index shows, in a fixed number of queries, over the jobs
    of `apps` (access.scope(); None: every app, cached). Agents are shared by all
    apps: always all of them."""
    generation = None
    if apps is None:
        cached = cache.get(DASHBOARD_KEY)
        if cached is not None:
            return dict(cached)
        generation = _generation()
    now = timezone.now()
    job_rows, execution_rows, _ = _within(apps)
    jobs = job_rows.aggregate(
        total=Count("id"),
        enabled=Count("id", filter=Q(enabled=True)),
        success_count=Sum("success_count"),
        error_count=Sum("error_count"),
    )
    active = dict.fromkeys(Execution.ACTIVE_STATUSES, 0)
    # jobs_execution_status: the handful of active rows, not the whole table.
    for row in (
        execution_rows.filter(status__in=Execution.ACTIVE_STATUSES)
        .order_by()
        .values("status")
        .annotate(n=Count("id"))
    ):
        active[row["status"]] = row["n"]
    hourly = stats_hourly(now=now, apps=apps)
    failing_total, failing = _failing(apps)
    agents = _agents(now)
    figures = {
        "jobs": jobs["total"],
        "enabled_jobs": jobs["enabled"],
        "disabled_jobs": jobs["total"] - jobs["enabled"],
        "success_count": jobs["success_count"] or 0,
        "error_count": jobs["error_count"] or 0,
        "running": active[Execution.Status.RUNNING],
        "paused": active[Execution.Status.PAUSED],
        "pending": active[Execution.Status.PENDING],
        "hourly": hourly,
        "last_day": {name: sum(hour[name] for hour in hourly) for name in OUTCOMES},
        "upcoming": _upcoming(now, apps),
        "failing": failing,
        "failing_total": failing_total,
        "agents": agents,
        "agents_alive": sum(1 for a in agents if a["state"] in ("alive", "draining")),
        "agents_down": sum(1 for a in agents if a["state"] in ("stale", "offline")),
        "generated_at": now,
        "cached": apps is None,
    }
    _cache_set(DASHBOARD_KEY, figures, seconds=DASHBOARD_SECONDS, generation=generation)
    return figures
