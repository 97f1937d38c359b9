"""Operations: notifications (sent by jobs/notifications.py). NotificationChannel:
where they go; NotificationRule: which events of an app's or job's runs go there;
NotificationDelivery: the delivery log; NotificationState: what a channel was told
about a job (flood control)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models
from django.db.models import Q

from jobs.models.apps import App
from jobs.models.executions import Execution
from jobs.models.jobs import Job

# A channel's secret as typed (the stored token is longer), as before it was
# encrypted: migration 0023 can go back to the old column.
MAX_SECRET_LENGTH = 200
# A rule's repeat_every: at most this (a reminder a month apart is no reminder).
MAX_REPEAT_EVERY = timedelta(days=30)
# A channel told of more state changes than this within repeat_every hears no more
# of them until the job has been stable for repeat_every (flapping).
FLAP_CHANGES = 4
_REPEAT_EVERY_RANGE = (
    "Enter a duration from 0 (send every failure) to 30 days, e.g. 01:00:00 for an "
    "hour."
)


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
    # A Fernet token (jobs/secrets.py, as JobSecret.value), never the key itself: set
    # it with jobs.secrets.encrypt(); only the sender decrypts it. Not editable, so no
    # ModelForm or ModelSerializer shows it back by accident.
    secret = models.TextField(
        blank=True,
        editable=False,
        help_text="Webhooks: key of the X-Karmchari-Signature HMAC-SHA256 header, "
        "encrypted; never shown.",
    )
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_secret(self) -> bool:
        return bool(self.secret)

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
    repeat_every = models.DurationField(
        default=timedelta(hours=1),
        validators=[
            MinValueValidator(timedelta(0), message=_REPEAT_EVERY_RANGE),
            MaxValueValidator(MAX_REPEAT_EVERY, message=_REPEAT_EVERY_RANGE),
        ],
        help_text="While the job keeps failing (or running late), one reminder at "
        "most this often; the failures in between are held back and counted. "
        "0 sends every failure. [DD] [HH:[MM:]]ss, e.g. 01:00:00.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(app__isnull=True, job__isnull=False)
                | Q(app__isnull=False, job__isnull=True),
                name="jobs_notificationrule_app_xor_job",
                violation_error_message="A rule is for an app or for a job.",
            ),
            models.CheckConstraint(
                condition=Q(repeat_every__gte=timedelta(0))
                & Q(repeat_every__lte=MAX_REPEAT_EVERY),
                name="jobs_notificationrule_repeat_every_range",
                violation_error_message=_REPEAT_EVERY_RANGE,
            ),
        ]

    def __str__(self) -> str:
        return f"{', '.join(self.events)} -> {self.channel}"


class NotificationDelivery(models.Model):
    """One notification to one channel, and how sending it went (the delivery log)."""

    # The event of a test message (POST /api/notification-channels/{id}/test/): of
    # no job, sent whatever the rules say.
    TEST_EVENT = "test"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"
        # Recorded, never sent: flood control kept it back (NotificationState).
        HELD = "held", "Held back"

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


@dataclass(frozen=True)
class Verdict:
    """What one run is news of for one channel (NotificationState.observe)."""

    TELL = "tell"  # send it: the first failure, a recovery, or every one (0)
    REMIND = "remind"  # send it as a reminder: still failing, held_back since
    HOLD = "hold"  # record it held back, do not send
    NONE = "none"  # nothing to say

    action: str
    # The failure and late messages held back since held_since (the last message
    # sent), which this one reports; 0 when none.
    held_back: int = 0
    held_since: datetime | None = None
    # Flapping: (state changes, since when), reported with this message.
    flapping: tuple[int, datetime] | None = None


class NotificationState(models.Model):
    """What a channel was told about a job, so that a job failing every minute does
    not send a message a minute: only the first failure (or late run) goes out at
    once; later ones are held back and counted until the rule's repeat_every has
    passed, then one reminder reports them; a success after them is a recovery.

    One row per channel and job, made at the first failure or late run the channel
    hears of; jobs/notifications.py locks it (select_for_update) in the transaction
    that records the delivery, so two workers ending runs of one job at once do not
    both send the first failure."""

    class Health(models.TextChoices):
        OK = "ok"
        FAILING = "failing"

    channel = models.ForeignKey(
        NotificationChannel, models.CASCADE, related_name="states"
    )
    # Indexed by the (job, channel) unique constraint, which leads with it.
    job = models.ForeignKey(
        Job, models.CASCADE, related_name="notification_states", db_index=False
    )
    told = models.CharField(
        max_length=10,
        choices=Health.choices,
        default=Health.OK,
        help_text="Failing from a failure or late run sent until the next success.",
    )
    told_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last message was sent."
    )
    held_back = models.PositiveIntegerField(
        default=0, help_text="Failure and late messages held back since told_at."
    )
    health = models.CharField(
        max_length=10,
        choices=Health.choices,
        default=Health.OK,
        help_text="What the job's last run showed (differs from told while flapping).",
    )
    health_since = models.DateTimeField(null=True, blank=True)
    changes = models.PositiveIntegerField(
        default=0, help_text="Health changes since changes_since (flapping)."
    )
    changes_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # The row every end of a run of the job locks, by job and channel.
            models.UniqueConstraint(
                fields=["job", "channel"], name="jobs_notificationstate_one_per_pair"
            ),
        ]
        indexes = [
            # The reminders' timer (jobs.notification_reminders._reminders_due)
            # reads only failing pairs, longest untold first: few rows among one
            # per pair.
            models.Index(
                fields=["told_at"],
                name="jobs_notificationstate_failing",
                condition=models.Q(health="failing"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_id} -> {self.channel_id}: {self.told}"

    @property
    def flapping(self) -> bool:
        return self.changes > FLAP_CHANGES

    def observe(
        self,
        *,
        failing: bool,
        now: datetime,
        repeat: timedelta,
        last_success_at: datetime | None = None,
    ) -> Verdict:
        """A run of the job failed (or was late) or succeeded: record it and answer
        what to tell the channel. `repeat` is the rule's repeat_every;
        `last_success_at` the job's (a success this row never saw ends what it was
        told). Changes the row in memory; the caller saves it."""
        seen = self.Health.FAILING if failing else self.Health.OK
        if failing and self._missed_a_success(last_success_at):
            # Its channel was disabled, or its rules gone, while the job recovered:
            # this failure starts a new story.
            self.told = self.health = self.Health.OK
            self.held_back, self.changes, self.changes_since = 0, 0, None
        if not repeat:
            # 0: every failure, as without flood control (no holding, no flapping).
            if seen != self.health:
                self.health, self.health_since = seen, now
            self.changes, self.changes_since = 0, None
            if failing or self.told == self.Health.FAILING:
                return self._tell(seen, now)
            return Verdict(Verdict.NONE)
        flapped = None
        changed = seen != self.health
        if changed:
            self.health, self.health_since = seen, now
            if self.flapping:
                self.changes += 1
            elif self.changes_since is None or now - self.changes_since > repeat:
                self.changes, self.changes_since = 1, now
            else:
                self.changes += 1
        elif (
            self.flapping
            and self.health_since is not None
            and now - self.health_since >= repeat
        ):
            # Stable for repeat_every: tell where it settled, once.
            assert self.changes_since is not None
            flapped = (self.changes, self.changes_since)
            self.changes, self.changes_since = 0, None
        if self.flapping:
            assert self.changes_since is not None
            flapping = (self.changes, self.changes_since)
            if not failing:
                # A recovery held back; a success after a success is no news.
                return Verdict(Verdict.HOLD if changed else Verdict.NONE)
            if self.told_at is None or now - self.told_at >= repeat:
                return self._tell(seen, now, remind=True, flapping=flapping)
            return self._hold(failing)
        if failing:
            if self.told == self.Health.OK:
                return self._tell(seen, now, flapping=flapped)
            if flapped or self.told_at is None or now - self.told_at >= repeat:
                return self._tell(seen, now, remind=True, flapping=flapped)
            return self._hold(failing)
        if self.told == self.Health.FAILING or flapped:
            return self._tell(seen, now, flapping=flapped)
        return Verdict(Verdict.NONE)

    # What observe() changes: a locked row is saved with these only.
    OBSERVED = [
        "told",
        "told_at",
        "held_back",
        "health",
        "health_since",
        "changes",
        "changes_since",
    ]

    def _missed_a_success(self, last_success_at: datetime | None) -> bool:
        return (
            self.health == self.Health.FAILING
            and last_success_at is not None
            and self.health_since is not None
            and last_success_at > self.health_since
        )

    def _tell(
        self,
        told: str,
        now: datetime,
        *,
        remind: bool = False,
        flapping: tuple[int, datetime] | None = None,
    ) -> Verdict:
        verdict = Verdict(
            Verdict.REMIND if remind else Verdict.TELL,
            held_back=self.held_back,
            held_since=self.told_at,
            flapping=flapping,
        )
        self.told, self.told_at, self.held_back = told, now, 0
        return verdict

    def _hold(self, failing: bool) -> Verdict:
        if failing:
            self.held_back += 1
        return Verdict(Verdict.HOLD)
