"""Job: what to run, and how (kind, spec, retries, overlap, retention), with its
run counters; JobSecret: the encrypted values its runs get."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from jobs.models.apps import App
from jobs.models.base import MAX_ATTEMPT, slug_validator
from jobs.runners import ENV_NAME


class Job(models.Model):
    class Kind(models.TextChoices):
        SHELL = "shell"
        HTTP = "http"
        TASK = "task"
        EXTERNAL = "external"
        # A JobStreamer definition of Java batchlets: stored and shown, never run.
        BATCH = "batch", "Batch definition (not runnable)"

    class OverlapPolicy(models.TextChoices):
        SKIP = "skip", "Skip the new run"
        BUFFER_ONE = "buffer_one", "Buffer one"
        BUFFER_ALL = "buffer_all", "Buffer all"
        CANCEL_OTHER = "cancel_other", "Cancel the running one"
        TERMINATE_OTHER = "terminate_other", "Terminate the running one"
        ALLOW_ALL = "allow_all", "Allow all"

    # Indexed by the (app, name) unique constraint, which leads with it.
    app = models.ForeignKey(App, models.PROTECT, related_name="jobs", db_index=False)
    name = models.CharField(max_length=200, validators=[slug_validator])
    uid = models.UUIDField(
        "UUID",
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text="Stable public id (Kala's job id).",
    )
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.SHELL)
    spec = models.JSONField(
        default=dict,
        blank=True,
        help_text="What to run, by kind: shell {command, cwd, env}.",
    )
    enabled = models.BooleanField(default=True)
    owner = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True)
    queue = models.CharField(
        max_length=100, default="celery", help_text="Celery queue that runs this job."
    )
    timeout = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds before the run is stopped."
    )
    # The last attempt's number (1 + max_retries) must fit Execution.attempt.
    max_retries = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(MAX_ATTEMPT - 1)]
    )
    retry_backoff = models.PositiveIntegerField(
        default=10, help_text="Seconds before the first retry; doubles each attempt."
    )
    overlap_policy = models.CharField(
        max_length=20, choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP
    )
    max_concurrent = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    ping_grace = models.DurationField(
        null=True,
        blank=True,
        help_text="External jobs: how long after a scheduled slot a ping to "
        "/ping/<uid> may arrive before the run counts as late (empty: not watched).",
    )
    # Retention (empty: the app's setting).
    keep_succeeded = models.PositiveIntegerField(
        null=True, blank=True, help_text="Succeeded executions kept (empty: app's)."
    )
    keep_failed = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Other finished executions kept (empty: app's).",
    )
    keep_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days finished executions are kept (empty: app's).",
    )
    legacy = models.JSONField(
        default=dict,
        blank=True,
        help_text="What a compatibility API keeps that has no field of its own "
        "(Kala's free-text name and epsilon, a JobStreamer definition).",
    )
    parents = models.ManyToManyField(
        "self", symmetrical=False, related_name="children", blank=True
    )

    # Denormalised stats, written only with F() expressions by services.
    success_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    duration_total = models.FloatField(
        default=0.0, help_text="Seconds, summed over finished runs."
    )
    untimed_count = models.PositiveIntegerField(
        default=0,
        help_text="Finished runs with no duration (lost), left out of the average.",
    )

    # The figures above, written by the services as runs start and end (never by
    # a form); the stats read them fresh.
    COUNTER_FIELDS = (
        "success_count",
        "error_count",
        "last_success_at",
        "last_error_at",
        "last_attempted_at",
        "duration_total",
        "untimed_count",
    )

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["app__name", "name"]
        permissions = [
            # A shell job runs any command on the workers: its own permission.
            ("manage_shell_job", "Can create and edit shell jobs"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["app", "name"], name="jobs_job_unique_name_per_app"
            ),
            models.CheckConstraint(
                condition=Q(max_concurrent__isnull=True) | Q(max_concurrent__gte=1),
                name="jobs_job_max_concurrent_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def retention(self) -> tuple[int | None, int | None, int | None]:
        """(succeeded kept, others kept, days kept): the job's own, else its app's,
        else the KARMCHARI_KEEP_* settings. None is no limit: a setting of 0, and 0
        days at any level (a job can lift its app's limit so). A job's or app's count
        of 0 keeps none of that kind. Reads self.app: select_related it when looping
        over jobs."""
        from django.conf import settings

        def pick(own: int | None, app: int | None, default: int) -> int | None:
            if own is not None:
                return own
            if app is not None:
                return app
            return default or None

        return (
            pick(
                self.keep_succeeded,
                self.app.keep_succeeded,
                settings.KARMCHARI_KEEP_SUCCEEDED,
            ),
            pick(
                self.keep_failed, self.app.keep_failed, settings.KARMCHARI_KEEP_FAILED
            ),
            pick(self.keep_days, self.app.keep_days, settings.KARMCHARI_KEEP_DAYS)
            or None,
        )

    @property
    def timed_runs(self) -> int:
        """Finished runs whose duration is in duration_total."""
        return max(0, self.success_count + self.error_count - self.untimed_count)

    @property
    def average_duration(self) -> float | None:
        runs = self.timed_runs
        return self.duration_total / runs if runs else None


secret_name_validator = RegexValidator(
    ENV_NAME,
    "Use an environment variable name: letters, digits and '_', not starting with "
    "a digit.",
)


class JobSecret(models.Model):
    """A value a job's runs need that nobody may read back: a shell job gets it in
    its environment, an HTTP job where its spec says `${NAME}`.

    `value` holds a Fernet token (jobs/secrets.py), never the plain value; only the
    worker running the job decrypts it.
    """

    # Indexed by the (job, name) unique constraint, which leads with it.
    job = models.ForeignKey(Job, models.CASCADE, related_name="secrets", db_index=False)
    name = models.CharField(
        max_length=255,
        validators=[secret_name_validator],
        help_text="Like an environment variable, e.g. DB_PASSWORD.",
    )
    value = models.TextField(
        editable=False, help_text="Encrypted (a Fernet token); never shown."
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # Its index also serves "the secrets of these jobs" (the API's prefetch,
            # the worker's one query before a run).
            models.UniqueConstraint(
                fields=["job", "name"], name="jobs_jobsecret_unique_name_per_job"
            ),
        ]

    def __str__(self) -> str:
        return self.name
