"""Retention: drop finished executions a job no longer keeps, in small batches.

Runs as the `jobs.prune_executions` task, which beat sends every
KARMCHARI_PRUNE_SECONDS. Deletes go by primary key in batches, so PostgreSQL only
locks the rows it removes and the table stays writable; active executions (pending,
running, paused) are never touched, nor the earlier attempts of an active retry, nor
the parent run an active dependant was started by, nor a run that ended less than
JUST_ENDED ago (what follows an end, its retry or its notifications, still reads it).
Age is counted from a run's end. An execution's events and log chunks go with it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.models import Execution, Job, NotificationDelivery
from jobs.stats import stats_forget

logger = logging.getLogger(__name__)

# A run's end is committed before its retry is made: a prune in between would take
# the run (keep_failed 0) and with it the retry. Kept this long, then counted again.
JUST_ENDED = timedelta(minutes=1)


def executions_prune(*, now: datetime | None = None, batch: int = 1000) -> int:
    """Delete what each job's retention does not keep; answers how many went."""
    now = now or timezone.now()
    removed = 0
    for job in (
        Job.objects.select_related("app")
        .only(
            "id",
            "keep_succeeded",
            "keep_failed",
            "keep_days",
            "app__keep_succeeded",
            "app__keep_failed",
            "app__keep_days",
        )
        .iterator()
    ):
        removed += execution_prune_job(job=job, now=now, batch=batch)
    if removed:
        logger.info("retention: removed %d finished execution(s)", removed)
    deliveries_prune(now=now, batch=batch)
    return removed


def deliveries_prune(*, now: datetime, batch: int = 1000) -> int:
    """Drop the delivery log's sent and failed entries older than
    KARMCHARI_KEEP_DELIVERY_DAYS (0: keep them all), ten batches at most per run."""
    days = settings.KARMCHARI_KEEP_DELIVERY_DAYS
    if not days:
        return 0
    old = (
        NotificationDelivery.objects.filter(created__lt=now - timedelta(days=days))
        .exclude(status=NotificationDelivery.Status.PENDING)
        .order_by("id")
        .values_list("id", flat=True)
    )
    doomed = list(old[: 10 * batch])
    for start in range(0, len(doomed), batch):
        NotificationDelivery.objects.filter(
            pk__in=doomed[start : start + batch]
        ).delete()
    if doomed:
        logger.info("retention: removed %d old notification deliveries", len(doomed))
    return len(doomed)


def execution_prune_job(*, job: Job, now: datetime, batch: int = 1000) -> int:
    """One job's share. At most ten batches per kind of row per run: a huge backlog
    drains over a few runs instead of loading millions of ids at once."""
    cap = 10 * batch
    keep_succeeded, keep_failed, keep_days = job.retention()
    finished = Execution.objects.filter(
        job=job, status__in=Execution.FINAL_STATUSES
    ).exclude(finished_at__gt=now - JUST_ENDED)
    doomed: list[int] = []
    groups = (
        (finished.filter(status=Execution.Status.SUCCEEDED), keep_succeeded),
        (finished.exclude(status=Execution.Status.SUCCEEDED), keep_failed),
    )
    for rows, keep in groups:
        if keep is not None:
            # Newest first by id (ids grow with creation): everything past `keep`.
            newest_first = rows.order_by("-id").values_list("id", flat=True)
            doomed += list(newest_first[keep : keep + cap])
    if keep_days is not None:
        # Days since it ended: a run that took two days is not old when it ends.
        cutoff = now - timedelta(days=keep_days)
        old = finished.filter(
            Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created__lt=cutoff)
        ).order_by("id")
        doomed += list(old.values_list("id", flat=True)[:cap])
    if doomed:
        doomed = sorted(set(doomed) - _still_referenced(job=job))
    for start in range(0, len(doomed), batch):
        with transaction.atomic():
            # Only the ids: Django's delete loads the rows it deletes, and a run's
            # output and error tails may be a megabyte each.
            Execution.objects.filter(pk__in=doomed[start : start + batch]).only(
                "pk"
            ).delete()
    if doomed:
        stats_forget(job_id=job.pk)
    return len(doomed)


def _still_referenced(*, job: Job) -> set[int]:
    """The job's finished runs that a run still to end (pending, running, paused)
    points to: every earlier attempt of its retry chain, so the chain and the failures
    it answers stay readable until it ends, and the parent run a dependant (or a
    retry of one, which carries its parameters) was started by."""
    active = Execution.objects.filter(status__in=Execution.ACTIVE_STATUSES).order_by()
    kept: set[int] = set()
    # One query per step back along the chains: as many as the longest one's
    # attempts, each by primary key.
    step = set(
        active.filter(job=job, retry_of__isnull=False).values_list(
            "retry_of_id", flat=True
        )
    )
    while step:
        kept |= step
        step = (
            set(
                Execution.objects.filter(pk__in=step, retry_of__isnull=False)
                .order_by()
                .values_list("retry_of_id", flat=True)
            )
            - kept
        )
    for parent in active.filter(job__parents=job).values_list(
        "parameters__parent_execution", flat=True
    ):
        if isinstance(parent, int):
            kept.add(parent)
    return kept
