"""The REST API's notifications: channels (with a test message), rules and the
delivery log. Writes go through jobs.services.notification_config.

Per-app access (jobs/access.py): channels belong to no app, so model permissions
alone decide who sees them; rules and deliveries are those of the apps (and their
jobs) the caller may see, others answer 404 as missing ones.
"""

from __future__ import annotations

import logging
from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from jobs import access
from jobs.filters import InstantFilter, StrictBooleanFilter
from jobs.models import (
    Job,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
)
from jobs.notification_serializers import (
    NotificationChannelSerializer,
    NotificationDeliverySerializer,
    NotificationRuleSerializer,
)
from jobs.services import notification_config as services
from jobs.views import ExecutionPagination

logger = logging.getLogger(__name__)


def _jobs(request: Any) -> QuerySet[Job]:
    # A job of a hidden app is refused as a missing one (400), as jobs.filters does.
    return access.restrict(Job.objects.all(), getattr(request, "user", None), "app")


def _rules_condition(user: Any) -> Q:
    """Rules the user may see: for an app of theirs, or a job in one."""
    return access.condition(user, "app") | access.condition(user, "job__app")


# --- Channels ------------------------------------------------------------------------


class NotificationChannelFilter(django_filters.FilterSet):
    enabled = StrictBooleanFilter()

    class Meta:
        model = NotificationChannel
        fields = ["kind", "enabled"]


class NotificationChannelViewSet(viewsets.ModelViewSet[NotificationChannel]):
    queryset = NotificationChannel.objects.all()
    serializer_class = NotificationChannelSerializer
    filterset_class = NotificationChannelFilter
    search_fields = ["name", "target"]
    ordering_fields = ["name", "created", "id"]
    ordering = ["name"]
    # Sending a message is changing what the channel does: the change permission.
    action_permissions = {"test": ["jobs.change_notificationchannel"]}

    def perform_create(self, serializer: BaseSerializer[NotificationChannel]) -> None:
        serializer.instance = services.notification_channel_create(
            **serializer.validated_data
        )

    def perform_update(self, serializer: BaseSerializer[NotificationChannel]) -> None:
        assert serializer.instance is not None
        serializer.instance = services.notification_channel_update(
            channel=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance: NotificationChannel) -> None:
        # Deleting a channel deletes its rules: with per-app access, not those of
        # apps the caller cannot see.
        user = self.request.user
        if access.is_restricted(user):
            hidden = instance.rules.exclude(_rules_condition(user))
            if hidden.exists():
                raise PermissionDenied(
                    f"Notification channel {instance.name!r} also serves rules of "
                    "apps you cannot see: only a user who sees every app may delete "
                    "it."
                )
        instance.delete()

    @extend_schema(request=None, responses={202: NotificationDeliverySerializer})
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Send the channel a test message (event `test`), whatever its rules say.
        Answers at once with its delivery, pending: sent by a worker like any other
        notification, so read /api/notification-deliveries/{id}/ to see how it went.
        409 for a disabled channel."""
        delivery = services.notification_channel_test(
            channel=self.get_object(), user=request.user
        )
        return Response(
            NotificationDeliverySerializer(delivery).data,
            status=status.HTTP_202_ACCEPTED,
        )


# --- Rules ---------------------------------------------------------------------------


class NotificationRuleFilter(django_filters.FilterSet):
    channel = django_filters.ModelChoiceFilter(
        queryset=NotificationChannel.objects.all()
    )
    app = django_filters.CharFilter(field_name="app__name")
    job = django_filters.ModelChoiceFilter(queryset=_jobs)

    class Meta:
        model = NotificationRule
        fields = ["channel", "app", "job"]


class NotificationRuleViewSet(viewsets.ModelViewSet[NotificationRule]):
    queryset = NotificationRule.objects.select_related("channel", "app", "job")
    serializer_class = NotificationRuleSerializer
    filterset_class = NotificationRuleFilter
    search_fields = ["channel__name", "app__name", "job__name"]
    ordering_fields = ["id"]
    ordering = ["id"]

    def get_queryset(self) -> QuerySet[NotificationRule]:
        return (
            super()
            .get_queryset()
            .filter(_rules_condition(self.request.user))
            .order_by("id")
        )

    def perform_create(self, serializer: BaseSerializer[NotificationRule]) -> None:
        serializer.instance = services.notification_rule_create(
            **serializer.validated_data
        )

    def perform_update(self, serializer: BaseSerializer[NotificationRule]) -> None:
        assert serializer.instance is not None
        serializer.instance = services.notification_rule_update(
            rule=serializer.instance, **serializer.validated_data
        )


# --- The delivery log ----------------------------------------------------------------


class NotificationDeliveryFilter(django_filters.FilterSet):
    channel = django_filters.ModelChoiceFilter(
        queryset=NotificationChannel.objects.all()
    )
    job = django_filters.ModelChoiceFilter(queryset=_jobs)
    status = django_filters.MultipleChoiceFilter(
        choices=NotificationDelivery.Status.choices
    )
    event = django_filters.MultipleChoiceFilter(
        choices=[
            *NotificationRule.Event.choices,
            (NotificationDelivery.TEST_EVENT, "Test message"),
        ]
    )
    created_after = InstantFilter(field_name="created", lookup_expr="gte")
    created_before = InstantFilter(field_name="created", lookup_expr="lt")

    class Meta:
        model = NotificationDelivery
        fields = ["channel", "job", "status", "event"]


class NotificationDeliveryViewSet(viewsets.ReadOnlyModelViewSet[NotificationDelivery]):
    queryset = NotificationDelivery.objects.select_related("channel", "job__app")
    serializer_class = NotificationDeliverySerializer
    filterset_class = NotificationDeliveryFilter
    # Newest first, as executions: a cursor keeps pages stable while new deliveries
    # arrive, and never counts the whole log.
    pagination_class = ExecutionPagination
    filter_backends = [DjangoFilterBackend]

    def get_queryset(self) -> QuerySet[NotificationDelivery]:
        user = self.request.user
        queryset = super().get_queryset()
        if access.is_restricted(user):
            # A job's deliveries in the caller's apps; test messages belong to no
            # app. Those of a deleted job (job null) are nobody's but the unrestricted.
            queryset = queryset.filter(
                access.condition(user, "job__app")
                | Q(job__isnull=True, event=NotificationDelivery.TEST_EVENT)
            )
        return queryset
