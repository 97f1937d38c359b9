"""Operations: notifications (sent by jobs/notifications.py). NotificationChannel:
where they go; NotificationRule: which events of an app's or job's runs go there;
NotificationDelivery: the delivery log."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, validate_email
from django.db import models
from django.db.models import Q

from jobs.models.apps import App
from jobs.models.executions import Execution
from jobs.models.jobs import Job


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
