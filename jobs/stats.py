"""Stats for the API: totals over all jobs and per job, cached in Redis.

Services that change what these count call stats_invalidate(); the cache timeout
(KARMCHARI_STATS_CACHE_SECONDS) bounds staleness for writes that do not (a schedule's
next run time, executions inserted by the beat tick).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from jobs.models import Execution, Job, Schedule

_GLOBAL_KEY = "stats:global"


def _job_key(job_id: int) -> str:
    return f"stats:job:{job_id}"


def stats_invalidate(*, job_id: int | None) -> None:
    """Forget the global figures and, given a job, that job's."""
    keys = [_GLOBAL_KEY] if job_id is None else [_GLOBAL_KEY, _job_key(job_id)]
    cache.delete_many(keys)


def _by_status(executions: Any) -> dict[str, int]:
    counts = dict.fromkeys(Execution.Status.values, 0)
    for row in executions.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def stats_global() -> dict[str, Any]:
    cached = cache.get(_GLOBAL_KEY)
    if cached is not None:
        return dict(cached)
    jobs = Job.objects.aggregate(
        jobs=Count("id"),
        enabled=Count("id", filter=Q(enabled=True)),
        success_count=Sum("success_count"),
        error_count=Sum("error_count"),
        last_attempted_at=Max("last_attempted_at"),
        duration_total=Sum("duration_total"),
    )
    runs = (jobs["success_count"] or 0) + (jobs["error_count"] or 0)
    executions = _by_status(Execution.objects.all())
    figures = {
        "jobs": jobs["jobs"],
        "enabled_jobs": jobs["enabled"],
        "disabled_jobs": jobs["jobs"] - jobs["enabled"],
        "success_count": jobs["success_count"] or 0,
        "error_count": jobs["error_count"] or 0,
        "average_duration": (jobs["duration_total"] or 0.0) / runs if runs else None,
        "last_attempted_at": jobs["last_attempted_at"],
        "next_run_at": Schedule.objects.filter(
            enabled=True, job__enabled=True
        ).aggregate(next=Min("next_run_at"))["next"],
        "active_executions": sum(executions[s] for s in Execution.ACTIVE_STATUSES),
        "executions": executions,
        "generated_at": timezone.now(),
    }
    cache.set(_GLOBAL_KEY, figures, settings.KARMCHARI_STATS_CACHE_SECONDS)
    return figures


def stats_job(*, job: Job) -> dict[str, Any]:
    key = _job_key(job.pk)
    cached = cache.get(key)
    if cached is not None:
        return dict(cached)
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
        )["next"],
        "active_executions": sum(executions[s] for s in Execution.ACTIVE_STATUSES),
        "executions": executions,
        "generated_at": timezone.now(),
    }
    cache.set(key, figures, settings.KARMCHARI_STATS_CACHE_SECONDS)
    return figures
