"""What the operator console's tests share: a clean cache, agents and staff clients;
for the notifications' tests, rules, runs and flood-control helpers (the webhook
receiver is tests/receiver.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone

from agents.models import Agent
from jobs import notifications, secrets, services
from jobs.models import (
    App,
    Execution,
    Job,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
)
from jobs.runners import Outcome
from karmchari_site.celery import app as celery_app
from tests.receiver import Receiver

NumQueries = Callable[..., object]


@pytest.fixture
def fresh_cache() -> None:
    cache.clear()


def make_agent(name: str = "w1@host", **fields: object) -> Agent:
    fields.setdefault("instance_id", uuid.uuid4())
    fields.setdefault("last_heartbeat", timezone.now())
    fields.setdefault("cpu_cores", 8)
    fields.setdefault("memory_total", 16 << 30)
    fields.setdefault("memory_free", 4 << 30)
    fields.setdefault("system_cpu_load", 0.25)
    fields.setdefault("load_average", [1.5, 1.0, 0.5])
    return Agent.objects.create(name=name, **fields)


def staff(*perms: str) -> Client:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


# --- Notifications (tests/jobs/test_notifications.py, test_notification_sending.py) ---


def waiting_on_a_lock() -> bool:
    """Whether a session of this test database waits on a row lock (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
        return bool(cursor.fetchone()[0])


@pytest.fixture
def eager() -> Iterator[None]:
    """Tasks run in-process when sent (retries included, without their countdown)."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def rule(
    job: Job | None = None, app: App | None = None, **channel: Any
) -> NotificationRule:
    events = channel.pop("events")
    slow_factor = channel.pop("slow_factor", None)
    repeat = (
        {"repeat_every": channel.pop("repeat_every")}
        if "repeat_every" in channel
        else {}
    )
    if channel.get("secret"):
        channel["secret"] = secrets.encrypt(channel["secret"])
    made = NotificationChannel.objects.create(name=f"c{channel['kind']}", **channel)
    return NotificationRule.objects.create(
        channel=made, job=job, app=app, events=events, slow_factor=slow_factor, **repeat
    )


def run(
    job: Job,
    status: str,
    seconds: float = 1.0,
    capture: Callable[..., Any] | None = None,
) -> Execution:
    execution = Execution.objects.create(
        job=job,
        status=Execution.Status.RUNNING,
        started_at=timezone.now() - timedelta(seconds=seconds),
    )
    assert capture is not None
    with capture(execute=True):
        services.execution_finish(
            execution=execution,
            outcome=Outcome(status=status, exit_code=0 if status == "succeeded" else 2),
        )
    return execution


def channel_rule(
    name: str,
    *,
    job: Job,
    events: list[str],
    slow_factor: float | None = None,
    kind: str = "email",
    target: str = "ops@example.com",
) -> NotificationRule:
    channel = NotificationChannel.objects.create(name=name, kind=kind, target=target)
    return NotificationRule.objects.create(
        channel=channel, job=job, events=events, slow_factor=slow_factor
    )


def finished_run(
    job: Job,
    status: str,
    capture: Callable[..., Any],
    seconds: float = 1.0,
    reason: str = "",
) -> Execution:
    execution = Execution.objects.create(
        job=job,
        status=Execution.Status.RUNNING,
        started_at=timezone.now() - timedelta(seconds=seconds),
    )
    with capture(execute=True):
        services.execution_finish(
            execution=execution,
            outcome=Outcome(
                status=status,
                exit_code=0 if status == "succeeded" else 2,
                reason=reason,
            ),
        )
    return execution


def queued_then_channel_disabled(job: Job) -> NotificationDelivery:
    """A failure's delivery, queued; then the operator disables its channel."""
    rule = channel_rule("ops", job=job, events=["failure"])
    execution = Execution.objects.create(
        job=job, status="failed", finished_at=timezone.now()
    )
    with mock.patch("jobs.tasks.deliver_notification.delay"):
        [delivery] = notifications.notifications_queue(
            job=job, execution=execution, events=["failure"]
        )
    NotificationChannel.objects.filter(pk=rule.channel_id).update(enabled=False)
    return delivery


# --- Flood control (test_notifications.py, test_notification_reminders.py) ----------

T0 = timezone.now().replace(microsecond=0) - timedelta(days=1)


def at(minutes: float) -> Any:
    """Time frozen `minutes` after T0."""
    return time_machine.travel(T0 + timedelta(minutes=minutes), tick=False)


def received(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in receiver.requests]


def held() -> list[str]:
    return list(
        NotificationDelivery.objects.filter(status="held")
        .order_by("id")
        .values_list("event", flat=True)
    )


def stuck_slots(job: Job, schedule: Any, minutes: range) -> None:
    """Scheduled runs of these minutes after T0 that never started."""
    for minute in minutes:
        Execution.objects.create(
            job=job,
            schedule=schedule,
            scheduled_for=T0 + timedelta(minutes=minute),
            trigger="schedule",
        )
