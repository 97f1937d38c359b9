"""The apps room: apps, their jobs and who may see them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs import services
from jobs.admin.base import AppScopedAdmin
from jobs.models import App


@admin.register(App)
class AppAdmin(AppScopedAdmin[App]):
    app_path = ""
    list_display = ["name", "description", "job_count", "created"]
    search_fields = ["name", "description"]
    filter_horizontal = ["users", "groups"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[App]:
        return super().get_queryset(request).annotate(job_total=Count("jobs"))

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        if not change:
            services.app_grant_creator(app=form.instance, user=request.user)

    @admin.display(description="Jobs", ordering="job_total")
    def job_count(self, app: App) -> SafeString:
        total: int = getattr(app, "job_total", 0)
        url = reverse("admin:jobs_job_changelist") + f"?app__id__exact={app.pk}"
        return format_html('<a href="{}">{}</a>', url, total)
