"""Schedule: when a job fires (cron, ISO 8601 interval or one-shot, in a time zone),
and the next slot beat will fire."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import Q

from jobs.models.jobs import Job


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
