"""Agents: the Celery workers that run executions, with their host facts and load."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models


class Agent(models.Model):
    class Status(models.TextChoices):
        ONLINE = "online"
        DRAINING = "draining"
        OFFLINE = "offline"

    instance_id = models.UUIDField(
        default=uuid.uuid4,
        unique=True,
        help_text="Stable for one worker process lifetime.",
    )
    name = models.CharField(max_length=255, help_text="The Celery hostname.")
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    os_name = models.CharField("OS", max_length=100, blank=True)
    os_version = models.CharField("OS version", max_length=255, blank=True)
    cpu_arch = models.CharField("CPU architecture", max_length=50, blank=True)
    cpu_cores = models.PositiveIntegerField("CPU cores", null=True, blank=True)
    memory_total = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Bytes of physical memory."
    )
    swap_total = models.PositiveBigIntegerField(null=True, blank=True)
    memory_free = models.PositiveBigIntegerField(null=True, blank=True)
    swap_free = models.PositiveBigIntegerField(null=True, blank=True)
    process_cpu_load = models.FloatField(
        null=True, blank=True, help_text="Worker process tree, 0 to 1 of all cores."
    )
    cpu_time = models.FloatField(
        "CPU time",
        null=True,
        blank=True,
        help_text="Seconds of CPU used by the worker process tree.",
    )
    system_cpu_load = models.FloatField(
        null=True, blank=True, help_text="Whole host, 0 to 1 of all cores."
    )
    load_average = models.JSONField(default=list, blank=True)
    pid = models.PositiveIntegerField(
        null=True, blank=True, help_text="Process id of the worker's main process."
    )
    running = models.JSONField(
        default=list,
        blank=True,
        help_text="Ids of the executions it was running at the last saved heartbeat.",
    )
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.ONLINE
    )
    drained = models.BooleanField(
        default=False,
        help_text="Drained by an operator: a worker restarted under this name stays "
        "draining until resumed.",
    )
    queues = models.JSONField(default=list, blank=True)
    version = models.CharField(max_length=50, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # One row per worker name: a restarted worker takes its row over (and
            # the previous instance's running executions are recovered).
            models.UniqueConstraint(fields=["name"], name="agents_agent_unique_name"),
        ]
        indexes = [
            # Liveness sweep: agents not yet offline whose heartbeat is older than
            # the window (exclude(status=OFFLINE).filter(last_heartbeat__lt=...)).
            models.Index(
                fields=["last_heartbeat"],
                name="agents_agent_live_heartbeat",
                condition=~models.Q(status="offline"),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def is_fresh(self, *, now: datetime, seen_at: datetime | None = None) -> bool:
        """Heard from within the liveness window (`seen_at`: a newer live stamp)."""
        last = max(filter(None, [self.last_heartbeat, seen_at]), default=None)
        window = timedelta(seconds=settings.KARMCHARI_AGENT_WINDOW_SECONDS)
        return last is not None and last >= now - window
