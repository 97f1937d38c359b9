"""The notifications room: channels, rules and the delivery log."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from jobs import access
from jobs.admin.base import AppScopedAdmin, LockingAdmin
from jobs.models import NotificationChannel, NotificationDelivery, NotificationRule
from jobs.models.notifications import MAX_SECRET_LENGTH
from jobs.secrets import encrypt
from jobs.services import notification_config
from jobs.services.base import Conflict, Gone
from karmchari_site.admin_ui import CappedPaginator


class NotificationRuleForm(forms.ModelForm[NotificationRule]):
    """`events` as checkboxes of the known events, not raw JSON."""

    events = forms.MultipleChoiceField(
        choices=NotificationRule.Event.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = NotificationRule
        fields = ["channel", "app", "job", "events", "slow_factor", "repeat_every"]
        error_messages = {
            "repeat_every": {
                # Django's "Enter a valid duration." does not say what one is.
                "invalid": "Enter a duration such as 01:00:00 (an hour), 00:15:00, "
                "1 00:00:00 (a day) or 3600 (seconds); 0 sends every failure.",
            }
        }


class NotificationChannelForm(forms.ModelForm[NotificationChannel]):
    """The secret is write-only: the page says whether one is set; a new one replaces
    it, "Remove the secret" clears it, neither keeps it. Stored encrypted."""

    new_secret = forms.CharField(
        label="New secret",
        required=False,
        max_length=MAX_SECRET_LENGTH,
        # Not the browser's saved login password, filled in unasked.
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "new-password"}
        ),
        help_text="Webhooks: the key of the X-Karmchari-Signature HMAC-SHA256 "
        "headers. Stored encrypted and never shown again; leave empty to keep the "
        "current one.",
    )
    clear_secret = forms.BooleanField(
        label="Remove the secret",
        required=False,
        help_text="Requests are then sent unsigned.",
    )

    class Meta:
        model = NotificationChannel
        fields = ["name", "kind", "target", "enabled"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        new, clear = cleaned.get("new_secret"), cleaned.get("clear_secret")
        kind = cleaned.get("kind")
        webhook = NotificationChannel.Kind.WEBHOOK
        if new and clear:
            self.add_error(
                "new_secret",
                "Enter a new secret or tick 'Remove the secret', not both.",
            )
        elif new and kind and kind != webhook:
            self.add_error(
                "new_secret",
                "Only webhook channels sign their requests: leave this empty.",
            )
        elif (
            kind
            and kind != webhook
            and "kind" in self.changed_data
            and self.instance.secret
            and not clear
        ):
            self.add_error(
                "clear_secret",
                "Only webhook channels sign their requests: tick this to remove the "
                "secret and change the kind.",
            )
        return cleaned

    def save(self, commit: bool = True) -> NotificationChannel:
        if self.cleaned_data.get("new_secret"):
            self.instance.secret = encrypt(self.cleaned_data["new_secret"])
        elif self.cleaned_data.get("clear_secret"):
            self.instance.secret = ""
        return super().save(commit)


@admin.register(NotificationChannel)
class NotificationChannelAdmin(LockingAdmin[NotificationChannel]):
    form = NotificationChannelForm
    list_display = ["name", "kind", "target", "signed", "enabled", "created"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "target"]
    fields = [
        "name",
        "kind",
        "target",
        "enabled",
        "secret_status",
        "new_secret",
        "clear_secret",
    ]
    readonly_fields = ["secret_status"]
    actions = ["send_test"]

    @admin.action(
        description="Send a test message to selected channels", permissions=["change"]
    )
    def send_test(
        self, request: HttpRequest, queryset: QuerySet[NotificationChannel]
    ) -> None:
        """Queue a test message per channel; the delivery log says how each went."""
        sent = 0
        for channel in queryset.order_by("name"):
            try:
                notification_config.notification_channel_test(
                    channel=channel, user=request.user
                )
            except (Conflict, Gone) as exc:  # disabled, or deleted since listed
                self.message_user(request, f"{exc} Left out.", messages.WARNING)
                continue
            sent += 1
        if sent:
            self.message_user(
                request,
                f"Queued a test message to {sent} channel(s): see Notification "
                "deliveries for how each went.",
            )

    @admin.display(boolean=True, description="Signed")
    def signed(self, channel: NotificationChannel) -> bool:
        return channel.has_secret

    @admin.display(description="Secret")
    def secret_status(self, channel: NotificationChannel) -> str:
        if channel.has_secret:
            return "Set (stored encrypted, never shown)"
        return "Not set"


@admin.register(NotificationRule)
class NotificationRuleAdmin(AppScopedAdmin[NotificationRule]):
    form = NotificationRuleForm
    list_display = ["channel", "app", "job", "events", "slow_factor", "repeat_every"]
    list_select_related = ["channel", "app", "job"]
    list_filter = ["channel"]
    raw_id_fields = ["job"]

    def app_condition(self, request: HttpRequest) -> Q:
        # A rule is for an app or for a job: the user sees those of their apps.
        return access.condition(request.user, "app") | access.condition(
            request.user, "job__app"
        )


class EventFilter(admin.SimpleListFilter):
    title = "event"
    parameter_name = "event"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(NotificationRule.Event.choices)

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[NotificationDelivery]
    ) -> QuerySet[NotificationDelivery]:
        value = self.value()
        return queryset.filter(event=value) if value else queryset


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(AppScopedAdmin[NotificationDelivery]):
    """The delivery log: read-only (with per-app access, of the user's jobs)."""

    app_path = "job__app"

    list_display = [
        "created",
        "channel",
        "job",
        "event",
        "status",
        "attempts",
        "response_code",
        "sent_at",
    ]
    # Fixed choices and ranges only: a filter listing the values found, or
    # date_hierarchy, is a DISTINCT over the whole log.
    list_filter = ["status", EventFilter, "channel", "created"]
    list_select_related = ["channel", "job"]
    show_full_result_count = False
    paginator = CappedPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: NotificationDelivery | None = None
    ) -> bool:
        return False
