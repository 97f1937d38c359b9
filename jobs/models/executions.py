"""Execution: one run of a job, its status and outcome; ExecutionEvent: the control
audit trail; ExecutionLogChunk: the run's live output, kept in the database."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from agents.models import Agent
from jobs.models.jobs import Job
from jobs.models.schedules import Schedule


class ExecutionQuerySet(models.QuerySet["Execution"]):
    def active(self) -> ExecutionQuerySet:
        return self.filter(status__in=Execution.ACTIVE_STATUSES)

    def finished(self) -> ExecutionQuerySet:
        return self.filter(status__in=Execution.FINAL_STATUSES)


class Execution(models.Model):
    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        MANUAL = "manual"
        API = "api", "API"
        DEPENDENCY = "dependency"
        RETRY = "retry"
        COMPAT = "compat"
        PING = "ping"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        PAUSED = "paused"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        KILLED = "killed"
        TIMED_OUT = "timed_out", "Timed out"
        LOST = "lost"
        SKIPPED = "skipped"

    class DesiredState(models.TextChoices):
        RUN = "run"
        PAUSE = "pause"
        KILL = "kill"

    ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING, Status.PAUSED)
    # The `worker` of a run whose process lives elsewhere (an external job's, or one
    # a ping began): it reports its own end, even if its job's kind changed since.
    EXTERNAL_WORKERS = ("external", "ping")
    FINAL_STATUSES = (
        Status.SUCCEEDED,
        Status.FAILED,
        Status.KILLED,
        Status.TIMED_OUT,
        Status.LOST,
        Status.SKIPPED,
    )

    # No single-column indexes where a composite one leads with the column
    # (jobs_execution_job_newest, jobs_execution_unique_slot): every index is written
    # on each of a run's three writes.
    job = models.ForeignKey(
        Job, models.CASCADE, related_name="executions", db_index=False
    )
    schedule = models.ForeignKey(
        Schedule,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="executions",
        db_index=False,
    )
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The schedule slot this run fills."
    )
    trigger = models.CharField(
        max_length=20, choices=Trigger.choices, default=Trigger.API
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    retry_of = models.ForeignKey(
        "self",
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="retries",
        db_index=False,  # jobs_execution_retry_of: only the few retried runs
    )
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PENDING
    )
    desired_state = models.CharField(
        max_length=10, choices=DesiredState.choices, default=DesiredState.RUN
    )
    agent = models.ForeignKey(
        Agent, models.SET_NULL, null=True, blank=True, related_name="executions"
    )
    worker = models.CharField(
        max_length=255, blank=True, help_text="Celery hostname that ran it."
    )
    pid = models.PositiveIntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When its task was last sent to the broker."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    paused_seconds = models.FloatField(default=0.0)
    output = models.TextField(blank=True, help_text="Standard output (the tail).")
    error = models.TextField(blank=True, help_text="Standard error (the tail).")
    reason = models.TextField(
        blank=True, help_text="Why it ended this way (timeout, skip, failure)."
    )
    external_id = models.CharField(max_length=64, blank=True)
    parameters = models.JSONField(default=dict, blank=True)

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        get_latest_by = "created"
        constraints = [
            # Exactly-once firing: a second beat inserting the same slot is a no-op.
            # Manual runs have no schedule; NULLs never collide.
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"], name="jobs_execution_unique_slot"
            ),
            models.CheckConstraint(
                condition=Q(attempt__gte=1), name="jobs_execution_attempt_positive"
            ),
        ]
        indexes = [
            # Execution list, newest first, and the same per job (admin, API, stats).
            models.Index(fields=["-created", "-id"], name="jobs_execution_newest"),
            models.Index(fields=["job", "-created"], name="jobs_execution_job_newest"),
            # Status filter on the execution list.
            models.Index(fields=["status", "-created"], name="jobs_execution_status"),
            # Trigger filter on the execution list (admin), newest first.
            models.Index(fields=["trigger", "-created"], name="jobs_execution_trigger"),
            # Outbox sweep: pending executions whose task was sent long ago (or never).
            models.Index(
                fields=["dispatched_at"],
                name="jobs_execution_pending",
                condition=Q(status="pending"),
            ),
            # Live view and overlap checks: what is running or paused now, per job.
            models.Index(
                fields=["job"],
                name="jobs_execution_active",
                condition=Q(status__in=["running", "paused"]),
            ),
            # Retries of a run (and SET NULL when it is deleted): few rows have one.
            models.Index(
                fields=["retry_of"],
                name="jobs_execution_retry_of",
                condition=Q(retry_of__isnull=False),
            ),
            # Compat lookups by a seed system's id (e.g. Karmchari's md5).
            models.Index(
                fields=["external_id"],
                name="jobs_execution_external_id",
                condition=~Q(external_id=""),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds of wall time spent running, paused time excluded."""
        if self.started_at is None:
            return None
        end = self.finished_at
        if end is None:
            return None
        return max(0.0, (end - self.started_at).total_seconds() - self.paused_seconds)


# --- Execution engine: control audit and live output ---------------------------------


class ExecutionEvent(models.Model):
    """Who asked an execution to do what, and when (the control audit trail)."""

    class Action(models.TextChoices):
        PAUSE = "pause"
        RESUME = "resume"
        KILL = "kill"
        RETRY = "retry"
        REPORT = "report"

    # Indexed by jobs_event_execution, which leads with it.
    execution = models.ForeignKey(
        Execution, models.CASCADE, related_name="events", db_index=False
    )
    action = models.CharField(max_length=20, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty for the system (overlap policy, retries).",
    )
    created = models.DateTimeField(auto_now_add=True)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["created", "id"]
        indexes = [
            # The execution detail page and API list its events in order.
            models.Index(fields=["execution", "created"], name="jobs_event_execution"),
        ]

    def __str__(self) -> str:
        return f"{self.action} #{self.execution_id}"


class ExecutionLogChunk(models.Model):
    """A piece of an execution's combined output, at its byte offset in the log.

    Workers append one chunk every second or so while a job runs, and drop the chunks
    that fall out of the capped tail, so the log survives a Redis restart.
    """

    # Indexed by jobs_logchunk_unique_offset, which leads with it.
    execution = models.ForeignKey(
        Execution, models.CASCADE, related_name="log_chunks", db_index=False
    )
    offset = models.PositiveBigIntegerField()
    data = models.BinaryField()

    class Meta:
        ordering = ["offset"]
        constraints = [
            # Also the index of the log reader: WHERE execution_id = %s AND offset...
            models.UniqueConstraint(
                fields=["execution", "offset"], name="jobs_logchunk_unique_offset"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.execution_id}@{self.offset}"

    @property
    def end(self) -> int:
        return self.offset + len(self.data)
