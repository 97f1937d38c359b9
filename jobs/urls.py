from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from jobs import engine_views, notification_views, views


class Router(DefaultRouter):
    """No format suffixes: `/api/apps/report.json` is the app "report.json", not
    "report" as JSON (names may hold dots). Ask for a format with Accept."""

    include_format_suffixes = False


router = Router()
router.register("apps", views.AppViewSet)
router.register("jobs", views.JobViewSet)
router.register("executions", views.ExecutionViewSet)
router.register("schedules", views.ScheduleViewSet)
router.register("notification-channels", notification_views.NotificationChannelViewSet)
router.register("notification-rules", notification_views.NotificationRuleViewSet)
router.register(
    "notification-deliveries", notification_views.NotificationDeliveryViewSet
)

urlpatterns = [
    path("stats/", engine_views.StatsView.as_view(), name="stats"),
    *router.urls,
]
