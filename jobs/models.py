"""The job domain: App groups Jobs; Schedules fire them; Executions are the runs."""

from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import (
    MaxValueValidator,
    MinValueValidator,
    RegexValidator,
    validate_email,
)
from django.db import models
from django.db.models import Q

from agents.models import Agent
from jobs.runners import ENV_NAME

# Execution.attempt is a small integer: the highest attempt number a run can have.
MAX_ATTEMPT = 32767

# App names become URL segments in the JobStreamer compat API (/{app}/jobs), so names
# of top-level routes are refused.
RESERVED_APP_NAMES = (
    "admin",
    "api",
    "static",
    "media",
    "apps",
    "agents",
    "agent",
    "registerJob",
    "jobState",
    "metrics",
    "ping",
)


def validate_not_reserved(name: str) -> None:
    """The friendly twin of the jobs_app_name_not_reserved constraint."""
    if name.lower() in {reserved.lower() for reserved in RESERVED_APP_NAMES}:
        raise ValidationError(f"{name!r} is reserved for a route; choose another name.")


slug_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z",
    "Use letters, digits, '.', '_' or '-', starting with a letter or digit.",
)


class App(models.Model):
    name = models.CharField(
        max_length=100, unique=True, validators=[slug_validator, validate_not_reserved]
    )
    description = models.TextField(blank=True)
    meta = models.JSONField(
        default=dict, blank=True, help_text="Free-form data, e.g. a classpath."
    )
    # Retention defaults for the app's jobs (empty: the KARMCHARI_KEEP_* settings).
    keep_succeeded = models.PositiveIntegerField(
        null=True, blank=True, help_text="Succeeded executions kept per job."
    )
    keep_failed = models.PositiveIntegerField(
        null=True, blank=True, help_text="Other finished executions kept per job."
    )
    keep_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Finished executions older than this go."
    )
    # Per-app access (jobs/access.py): who sees and acts on the app's jobs.
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="karmchari_apps",
        help_text="Users who see and act on this app's jobs. Matters only with "
        "per-app access on (KARMCHARI_PER_APP_ACCESS).",
    )
    groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="karmchari_apps",
        help_text="Groups whose members see and act on this app's jobs. Matters "
        "only with per-app access on (KARMCHARI_PER_APP_ACCESS).",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            # With per-app access on, sees every app as if it were off.
            ("access_all_apps", "Can access every app"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(name__in=RESERVED_APP_NAMES),
                name="jobs_app_name_not_reserved",
                violation_error_message="This name is reserved for a route.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


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

    app = models.ForeignKey(App, models.PROTECT, related_name="jobs")
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

    job = models.ForeignKey(Job, models.CASCADE, related_name="secrets")
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


class Schedule(models.Model):
    class Kind(models.TextChoices):
        CRON = "cron"
        INTERVAL = "interval", "ISO 8601 repeating interval"
        ONCE = "once", "One-shot"

    class MisfirePolicy(models.TextChoices):
        RUN_ONCE = "run_once", "Run the latest missed slot"
        SKIP = "skip", "Skip missed slots"
        RUN_ALL = "run_all", "Run every missed slot within the window"

    job = models.ForeignKey(Job, models.CASCADE, related_name="schedules")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.CRON)
    expression = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    epsilon = models.DurationField(
        null=True, blank=True, help_text="How late a slot may still start."
    )
    misfire_policy = models.CharField(
        max_length=20, choices=MisfirePolicy.choices, default=MisfirePolicy.RUN_ONCE
    )
    jitter = models.DurationField(
        default=timedelta(0),
        blank=True,
        help_text="Delay each run by up to this much, never past the next slot.",
    )
    jitter_hashed = models.BooleanField(
        default=False,
        help_text="Derive the delay from the job's name (stable) instead of random.",
    )
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    repetitions_left = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty means unlimited."
    )
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["next_run_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(start_at__isnull=True)
                | Q(end_at__isnull=True)
                | Q(end_at__gt=models.F("start_at")),
                name="jobs_schedule_window_ordered",
                violation_error_message="end_at must be after start_at.",
            ),
        ]
        indexes = [
            # The beat tick: enabled AND next_run_at <= now ORDER BY next_run_at.
            models.Index(
                fields=["next_run_at"],
                name="jobs_schedule_due",
                condition=Q(enabled=True, next_run_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.expression} ({self.timezone})"


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

    execution = models.ForeignKey(Execution, models.CASCADE, related_name="events")
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

    execution = models.ForeignKey(Execution, models.CASCADE, related_name="log_chunks")
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


# --- Operations: notifications (jobs/notifications.py) ------------------------------


class NotificationChannel(models.Model):
    """Where notifications go: a webhook, email addresses or a Slack-style webhook."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (signed JSON POST)"
        EMAIL = "email"
        SLACK = "slack", "Slack-compatible incoming webhook"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    target = models.CharField(
        max_length=1000, help_text="The URL, or email addresses separated by commas."
    )
    secret = models.CharField(
        max_length=200,
        blank=True,
        help_text="Webhooks: key of the X-Karmchari-Signature HMAC-SHA256 header.",
    )
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """A target its kind can send to (the admin shows why under the field); rows
        stored before this check are sent as they are."""
        super().clean()
        target = self.target.strip()
        if self.kind in (self.Kind.WEBHOOK, self.Kind.SLACK):
            # Not URLValidator: it refuses hosts without a dot (http://alerts:9093/),
            # which a receiver on the same network often has.
            try:
                parts = urlsplit(target)
                host = parts.hostname
            except ValueError:  # a malformed IPv6 host or port
                parts, host = None, None
            if (
                parts is None
                or parts.scheme not in ("http", "https")
                or not host
                or any(c.isspace() for c in target)
            ):
                raise ValidationError(
                    {"target": "Enter an http:// or https:// URL to POST to."}
                )
        elif self.kind == self.Kind.EMAIL:
            addresses = [a.strip() for a in target.split(",") if a.strip()]
            if not addresses:
                raise ValidationError({"target": "Enter at least one email address."})
            for address in addresses:
                try:
                    validate_email(address)
                except ValidationError:
                    raise ValidationError(
                        {
                            "target": f"{address!r} is not an email address: enter "
                            "addresses separated by commas."
                        }
                    ) from None


class NotificationRule(models.Model):
    """Which events of a job's runs go to a channel. Rules of a job replace those of
    its app; a job with none uses its app's."""

    class Event(models.TextChoices):
        FAILURE = "failure"
        SUCCESS = "success"
        START = "start"
        RECOVERY = "recovery", "Recovery (first success after failures)"
        LATE = "late", "Late (did not start within its window)"
        SLOW = "slow", "Slow (much longer than its average)"

    channel = models.ForeignKey(
        NotificationChannel, models.CASCADE, related_name="rules"
    )
    app = models.ForeignKey(
        App, models.CASCADE, null=True, blank=True, related_name="notification_rules"
    )
    job = models.ForeignKey(
        Job, models.CASCADE, null=True, blank=True, related_name="notification_rules"
    )
    events = models.JSONField(
        default=list, help_text="Any of failure, success, start, recovery, late, slow."
    )
    slow_factor = models.FloatField(
        null=True,
        blank=True,
        # Below 1, most runs would be "slow" (below 0, every one).
        validators=[MinValueValidator(1.0)],
        help_text="Slow means longer than this times the average "
        "(default KARMCHARI_NOTIFY_SLOW_FACTOR); at least 1.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(app__isnull=True, job__isnull=False)
                | Q(app__isnull=False, job__isnull=True),
                name="jobs_notificationrule_app_xor_job",
                violation_error_message="A rule is for an app or for a job.",
            ),
        ]

    def __str__(self) -> str:
        return f"{', '.join(self.events)} -> {self.channel}"


class NotificationDelivery(models.Model):
    """One notification to one channel, and how sending it went (the delivery log)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    channel = models.ForeignKey(
        NotificationChannel, models.CASCADE, related_name="deliveries"
    )
    job = models.ForeignKey(
        Job, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    execution = models.ForeignKey(
        Execution, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    event = models.CharField(max_length=20)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            # A late (or ping-late) alert is sent once per execution and channel.
            models.UniqueConstraint(
                fields=["channel", "execution", "event"],
                name="jobs_delivery_once_per_event",
                condition=Q(event__in=["late"]),
            ),
        ]
        indexes = [
            # The failed-deliveries metric and the admin's failure filter.
            models.Index(
                fields=["created"],
                name="jobs_delivery_failed",
                condition=Q(status="failed"),
            ),
            # Beat's sweep of deliveries whose task was never sent (or lost).
            models.Index(
                fields=["created"],
                name="jobs_delivery_pending",
                condition=Q(status="pending"),
            ),
            # The delivery log, newest first (the admin's list and its pages).
            models.Index(fields=["-created", "-id"], name="jobs_delivery_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.event} -> {self.channel_id} ({self.status})"


class ApiToken(models.Model):
    """An API token. Only a SHA-256 of the key is stored: the key itself is shown
    once, when the token is made. Named, revocable, with its last use."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="What or who uses it.")
    prefix = models.CharField(
        max_length=12, editable=False, help_text="The key's first characters."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
