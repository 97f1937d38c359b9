"""The REST API's notification channels, rules and delivery log (the views are in
jobs/notification_views.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from rest_framework import serializers

from jobs.models import (
    App,
    Job,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
)
from jobs.models.notifications import MAX_REPEAT_EVERY, MAX_SECRET_LENGTH
from jobs.serializers import AppField, JobField

Event = NotificationRule.Event
WEBHOOK = NotificationChannel.Kind.WEBHOOK
_REPEAT_EVERY_RANGE = (
    "Enter a duration from 0 (send every failure) to 30 days, e.g. 01:00:00 for an "
    "hour."
)
_SIGNED_ONLY = "Only webhook channels sign their requests"


class NotificationChannelSerializer(serializers.ModelSerializer[NotificationChannel]):
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=MAX_SECRET_LENGTH,
        help_text="Webhooks: the key of the X-Karmchari-Signature HMAC-SHA256 "
        "headers. Write-only (stored encrypted, never shown; `has_secret` says "
        'whether one is set): a string sets or replaces it, "" or null removes it, '
        "leaving it out keeps it.",
    )
    has_secret = serializers.BooleanField(
        read_only=True, help_text="Whether webhook requests are signed."
    )

    class Meta:
        model = NotificationChannel
        fields = [
            "id",
            "name",
            "kind",
            "target",
            "secret",
            "has_secret",
            "enabled",
            "created",
        ]
        read_only_fields = ["created"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        channel = self.instance
        if "secret" in attrs and attrs["secret"] is None:
            attrs["secret"] = ""
        kind = attrs.get("kind", channel.kind if channel else None)
        if attrs.get("secret") and kind != WEBHOOK:
            raise serializers.ValidationError(
                {"secret": f"{_SIGNED_ONLY}: leave it out for a {kind} channel."}
            )
        if (
            channel is not None
            and channel.secret
            and kind != WEBHOOK
            and kind != channel.kind
            and attrs.get("secret") != ""
        ):
            raise serializers.ValidationError(
                {
                    "secret": f"{_SIGNED_ONLY}: send null to remove this channel's "
                    f"secret as you make it a {kind} channel."
                }
            )
        if channel is None or "kind" in attrs or "target" in attrs:
            # The model's own check (as in the admin). Targets stored before it
            # existed are kept as they are until changed.
            probe = NotificationChannel(
                kind=kind or "",
                target=attrs.get("target", channel.target if channel else ""),
            )
            try:
                probe.clean()
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.message_dict) from None
        return attrs


class NotificationRuleSerializer(serializers.ModelSerializer[NotificationRule]):
    channel = serializers.PrimaryKeyRelatedField(
        queryset=NotificationChannel.objects.all(),
        help_text="Id of the channel the events go to.",
    )
    channel_name = serializers.CharField(source="channel.name", read_only=True)
    app = AppField(
        slug_field="name",
        queryset=App.objects.all(),
        required=False,
        allow_null=True,
        help_text="Name of the app whose jobs' runs this rule is for (or `job`).",
    )
    job = JobField(
        queryset=Job.objects.all(),
        required=False,
        allow_null=True,
        help_text="Id of the job whose runs this rule is for (or `app`); a job's own "
        "rules replace its app's.",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Event.choices),
        allow_empty=False,
        max_length=20,
        help_text="Any of " + ", ".join(Event.values) + ".",
    )
    repeat_every = serializers.DurationField(
        required=False,
        validators=[
            MinValueValidator(timedelta(0), message=_REPEAT_EVERY_RANGE),
            MaxValueValidator(MAX_REPEAT_EVERY, message=_REPEAT_EVERY_RANGE),
        ],
        error_messages={
            "invalid": "Enter a duration such as 01:00:00 (an hour), 00:15:00, "
            "1 00:00:00 (a day), 3600 (seconds) or PT1H; 0 sends every failure."
        },
        help_text="Flood control: while the job keeps failing (or running late), "
        "one reminder at most this often; 0 sends every failure. From 0 to 30 days "
        "(default 01:00:00).",
    )

    class Meta:
        model = NotificationRule
        fields = [
            "id",
            "channel",
            "channel_name",
            "app",
            "job",
            "events",
            "slow_factor",
            "repeat_every",
        ]

    def validate_events(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))  # each once, in the order sent

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        rule = self.instance
        app_set = (
            attrs["app"] is not None if "app" in attrs else bool(rule and rule.app_id)
        )
        job_set = (
            attrs["job"] is not None if "job" in attrs else bool(rule and rule.job_id)
        )
        if app_set == job_set:
            raise serializers.ValidationError(
                "A rule is for an app or for a job: send `app` (a name) or `job` (an "
                "id), and the other null."
                if app_set
                else "A rule is for an app or for a job: send `app` (a name) or `job` "
                "(an id)."
            )
        return attrs


class NotificationDeliverySerializer(serializers.ModelSerializer[NotificationDelivery]):
    channel_name = serializers.CharField(source="channel.name", read_only=True)
    job_name = serializers.CharField(
        source="job.name", read_only=True, allow_null=True, default=None
    )
    app = serializers.CharField(
        source="job.app.name", read_only=True, allow_null=True, default=None
    )
    payload = serializers.JSONField(
        read_only=True, help_text="What was sent (a webhook's JSON body)."
    )

    class Meta:
        model = NotificationDelivery
        fields = [
            "id",
            "channel",
            "channel_name",
            "job",
            "job_name",
            "app",
            "execution",
            "event",
            "status",
            "attempts",
            "response_code",
            "error",
            "created",
            "sent_at",
            "payload",
        ]
        read_only_fields = fields
