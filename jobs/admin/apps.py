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

    def get_exclude(self, request: HttpRequest, obj: App | None = None) -> Any:
        # Who may see an app is its change permission's to set, as in the API: a
        # user who may only add apps does not grant them (their own app is granted
        # to them by app_grant_creator).
        if request.user.has_perm("jobs.change_app"):
            return super().get_exclude(request, obj)
        return [*(super().get_exclude(request, obj) or []), "users", "groups"]

    def save_model(
        self, request: HttpRequest, obj: App, form: Any, change: bool
    ) -> None:
        # Through the services, who may see the app included: renaming one changes
        # the figures that carry its name.
        data = form.cleaned_data
        grants = {side: data[side] for side in ("users", "groups") if side in data}
        if change:
            fields = {
                name: data[name] for name in form.changed_data if name not in grants
            }
            services.app_update(app=obj, **grants, **fields)
            return
        fields = {
            field.name: data[field.name]
            for field in App._meta.concrete_fields
            if field.name in data
        }
        obj.pk = services.app_create(**fields, **grants, creator=request.user).pk

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        # Users and groups were saved with the app (save_model).
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    @admin.display(description="Jobs", ordering="job_total")
    def job_count(self, app: App) -> SafeString:
        total: int = getattr(app, "job_total", 0)
        url = reverse("admin:jobs_job_changelist") + f"?app__id__exact={app.pk}"
        return format_html('<a href="{}">{}</a>', url, total)
