"""Kala's jobs, runs and stats as its API shows them, and a job found by its
id."""

from __future__ import annotations

import re
import uuid
from typing import Any

import isodate
from django.conf import settings
from django.db.models import F, Prefetch, QuerySet, Window
from django.db.models.functions import RowNumber

from compat.kala.protocol import go_time
from compat.security import restrict
from jobs.models import Execution, Job, Schedule

# Kala's ids are its map keys: only the exact spelling it gave out matches.
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Kala's command " " passed its Init (only "" is refused); run, it crashed Kala (no
# program to exec). A shell job needs a command, so such a job gets this one, which
# fails as an exec of nothing does; the Kala API still shows the command as sent.
BLANK_COMMAND = "exit 127"
# Kala's retries are a Go uint; Karmchari records each retry as a run whose attempt
# number (Execution.attempt, at most 32767) is one more than the retries before it.
# More retries than that are kept as sent and shown back, and 32766 are made.
RETRIES_LIMIT = 32766
_RAN = [
    s for s in Execution.FINAL_STATUSES if s != Execution.Status.SKIPPED
]  # skipped slots are not runs: no null stats


def _epsilon_text(job: Job, schedule: Schedule | None) -> str:
    kept = job.legacy.get("kala", {}).get("epsilon")
    if isinstance(kept, str):
        return kept
    if schedule is not None and schedule.epsilon is not None:
        return str(isodate.duration_isoformat(schedule.epsilon))
    return ""


def _schedule_text(job: Job, schedule: Schedule | None) -> str:
    """The schedule as the client sent it. Karmchari stores Kala's interval as the
    elapsed time it means (compat/kala/schedule.py); once the schedule is edited
    natively, the stored expression is what there is to show."""
    kept = job.legacy.get("kala", {})
    if schedule is None:
        # A child's schedule is kept as sent, never parsed (it never runs alone).
        return "" if "expression" in kept else str(kept.get("schedule", ""))
    if kept.get("expression") == schedule.expression:
        return str(kept.get("schedule", schedule.expression))
    return schedule.expression


def _retries(job: Job) -> int:
    """Kala's retries as sent, while the job still has the most Karmchari makes
    (once max_retries is edited natively, what it says)."""
    kept = job.legacy.get("kala", {}).get("retries")
    if job.max_retries == RETRIES_LIMIT and isinstance(kept, str) and kept.isdigit():
        return int(kept)
    return job.max_retries


def _command_text(job: Job) -> str:
    command = str(job.spec.get("command", ""))
    kept = job.legacy.get("kala", {}).get("command")
    return kept if isinstance(kept, str) and command == BLANK_COMMAND else command


def stat(job: Job, execution: Execution) -> dict[str, Any]:
    ran_at = go_time(execution.started_at or execution.created)
    retries = execution.attempt - 1
    success = execution.status == Execution.Status.SUCCEEDED
    nanos = round((execution.duration or 0.0) * 1e9)
    uid = str(job.uid)
    return {
        "job_id": uid,
        "ran_at": ran_at,
        "number_of_retries": retries,
        "success": success,
        "execution_duration": nanos,
        # The seed README's spelling.
        "JobId": uid,
        "RanAt": ran_at,
        "NumberOfRetries": retries,
        "Success": success,
        "ExecutionDuration": nanos,
    }


def runs(job_ids: list[int], limit: int) -> dict[int, list[Execution]]:
    """Each job's latest `limit` finished runs, oldest first, in one query. A run is
    its last attempt (an execution nobody retried); attempt - 1 is its retries."""
    if not job_ids:
        return {}
    ranked = (
        Execution.objects.filter(job_id__in=job_ids, status__in=_RAN)
        .filter(retries__isnull=True)
        .only(
            "job_id",
            "attempt",
            "status",
            "created",
            "started_at",
            "finished_at",
            "paused_seconds",
        )
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("job_id")], order_by=F("pk").desc()
            )
        )
        .filter(rank__lte=limit)
        .order_by("pk")
    )
    found: dict[int, list[Execution]] = {job_id: [] for job_id in job_ids}
    for execution in ranked:
        found[execution.job_id].append(execution)
    return found


def job_json(job: Job, history: list[Execution]) -> dict[str, Any]:
    """A job as Kala shows it. Needs `schedules`, `parents` and `children`
    prefetched, or costs three queries."""
    schedule = min(job.schedules.all(), key=lambda s: s.pk, default=None)
    next_run = (
        schedule.next_run_at if schedule is not None and schedule.enabled else None
    )
    metadata = {
        "success_count": job.success_count,
        "last_success": go_time(job.last_success_at),
        "error_count": job.error_count,
        "last_error": go_time(job.last_error_at),
        "last_attempted_run": go_time(job.last_attempted_at),
    }
    children = sorted(job.children.all(), key=lambda j: j.pk)
    parents = sorted(job.parents.all(), key=lambda j: j.pk)
    return {
        "name": job.legacy.get("kala", {}).get("name", job.name),
        "id": str(job.uid),
        "command": _command_text(job),
        "owner": job.owner,
        "disabled": not job.enabled,
        "dependent_jobs": [str(c.uid) for c in children] or None,
        "parent_jobs": [str(p.uid) for p in parents] or None,
        "schedule": _schedule_text(job, schedule),
        "retries": _retries(job),
        "epsilon": _epsilon_text(job, schedule),
        # Flat, as the seed README shows them; nested below, as Kala sends them.
        **metadata,
        "next_run_at": go_time(next_run),
        "metadata": metadata,
        "stats": [stat(job, e) for e in history] or None,
    }


def kala_jobs(user: Any) -> QuerySet[Job]:
    """Kala's jobs, and their parents and children, as far as the caller may see
    them (per-app access)."""
    related = restrict(Job.objects.all(), user, "app")
    jobs = Job.objects.filter(
        app__name=settings.KARMCHARI_COMPAT_APP, kind=Job.Kind.SHELL
    ).prefetch_related(
        "schedules",
        Prefetch("parents", queryset=related),
        Prefetch("children", queryset=related),
    )
    return restrict(jobs, user, "app")


def find(job_id: str, user: Any) -> Job | None:
    """The job of this id, spelt exactly as Kala gave it out (lowercase, dashed):
    Kala's ids are map keys, so `{...}`, `urn:uuid:`, uppercase or undashed
    spellings of it are unknown ids."""
    if not _ID.fullmatch(job_id):
        return None
    return kala_jobs(user).filter(uid=uuid.UUID(job_id)).first()
