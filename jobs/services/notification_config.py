"""Notification channels and rules, written (the REST API calls these; the admin
saves its forms as Django does), and a channel's test message.

A channel's secret goes in as typed and is stored encrypted (jobs/secrets.py); it
never comes back out of here. What is sent, and when, is jobs/notifications.py's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Model
from django.utils import timezone
from django.utils.text import capfirst

from jobs.models import (
    App,
    Job,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
)
from jobs.notifications import deliveries_send
from jobs.secrets import encrypt
from jobs.services.base import Conflict, Gone, actor_name


def _sealed(secret: str) -> str:
    """The stored form of a secret as typed: its token, or "" for none."""
    return encrypt(secret) if secret else ""


def _still_there(obj: Model | None) -> None:
    """Lock `obj`'s row until the transaction ends; Gone if another request deleted
    it meanwhile (a save would insert it again, or fail on a missing reference)."""
    if obj is None:
        return
    manager = type(obj)._base_manager
    if not manager.select_for_update().filter(pk=obj.pk).exists():
        # Named without a query: str() of a rule reads its channel, maybe gone too.
        name = getattr(obj, "name", None)
        label = repr(name) if isinstance(name, str) else f"#{obj.pk}"
        raise Gone(
            f"{capfirst(str(obj._meta.verbose_name))} {label} was deleted meanwhile; "
            "nothing was saved."
        )


# --- Channels ------------------------------------------------------------------------


def notification_channel_create(
    *,
    name: str,
    kind: str,
    target: str,
    enabled: bool = True,
    secret: str = "",
) -> NotificationChannel:
    return NotificationChannel.objects.create(
        name=name, kind=kind, target=target, enabled=enabled, secret=_sealed(secret)
    )


def notification_channel_update(
    *, channel: NotificationChannel, secret: str | None = None, **fields: Any
) -> NotificationChannel:
    """Change the fields given; `secret` None keeps the stored one, "" removes it,
    anything else replaces it. Gone if the channel was deleted meanwhile."""
    for name, value in fields.items():
        setattr(channel, name, value)
    changed = list(fields)
    if secret is not None:
        channel.secret = _sealed(secret)
        changed.append("secret")
    with transaction.atomic():
        _still_there(channel)
        if changed:
            channel.save(update_fields=changed)
    return channel


def notification_channel_test(
    *, channel: NotificationChannel, user: Any = None
) -> NotificationDelivery:
    """Queue a test message to the channel (event "test", of no job), sent by the
    jobs.deliver_notification task after commit like any other: its delivery row
    says how it went. Conflict for a disabled channel, which sends nothing."""
    if not channel.enabled:
        raise Conflict(
            f"Notification channel {channel.name!r} is disabled: enable it to send a "
            "test message."
        )
    now = timezone.now()
    payload = {
        "event": NotificationDelivery.TEST_EVENT,
        "test": True,
        "channel": channel.name,
        # The message texts name an app and a job (jobs.notification_sending).
        "app": "(test)",
        "job": channel.name,
        "job_id": None,
        "sent_at": now.isoformat(),
        "execution": {
            "reason": f"A test message from Karmchari, sent by {actor_name(user)}: "
            "this channel works."
        },
    }
    with transaction.atomic():
        _still_there(channel)
        delivery = NotificationDelivery.objects.create(
            channel=channel, event=NotificationDelivery.TEST_EVENT, payload=payload
        )
        transaction.on_commit(lambda: deliveries_send([delivery.pk]))
    return delivery


# --- Rules ---------------------------------------------------------------------------


def notification_rule_create(
    *,
    channel: NotificationChannel,
    events: list[str],
    app: App | None = None,
    job: Job | None = None,
    slow_factor: float | None = None,
    repeat_every: timedelta | None = None,
) -> NotificationRule:
    """A rule for an app or for a job (the caller checked which, and the events).
    Gone if the channel, app or job was deleted meanwhile."""
    rule = NotificationRule(
        channel=channel, app=app, job=job, events=events, slow_factor=slow_factor
    )
    if repeat_every is not None:
        rule.repeat_every = repeat_every
    with transaction.atomic():
        _still_there(channel)
        _still_there(app)
        _still_there(job)
        rule.save(force_insert=True)
    return rule


def notification_rule_update(
    *, rule: NotificationRule, **fields: Any
) -> NotificationRule:
    """Change the fields given. Gone if the rule, or the channel, app or job it is
    given, was deleted meanwhile."""
    for name, value in fields.items():
        setattr(rule, name, value)
    with transaction.atomic():
        _still_there(rule)
        for name in ("channel", "app", "job"):
            if name in fields:
                _still_there(fields[name])
        if fields:
            rule.save(update_fields=list(fields))
    return rule
