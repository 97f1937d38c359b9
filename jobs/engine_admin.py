"""Operator console for the execution engine: control buttons, bulk actions, the
audit trail and the live log on the execution page. Mixed into ExecutionAdmin."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from jobs import services
from jobs.models import Execution, ExecutionEvent

CONTROL_VERBS = ("pause", "resume", "kill")


class ExecutionEventInline(admin.TabularInline[ExecutionEvent, Execution]):
    model = ExecutionEvent
    extra = 0
    can_delete = False
    fields = ["created", "action", "actor", "detail"]
    readonly_fields = ["created", "action", "actor", "detail"]
    verbose_name = "control event"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ExecutionControlAdminMixin(admin.ModelAdmin[Execution]):
    change_form_template = "admin/jobs/execution/change_form.html"
    inlines = [ExecutionEventInline]
    actions = ["pause_selected", "resume_selected", "kill_selected", "retry_selected"]

    def get_urls(self) -> list[URLPattern]:
        urls: list[URLPattern] = super().get_urls()
        control = path(
            "<int:object_id>/control/<str:verb>/",
            self.admin_site.admin_view(require_POST(self.control_view)),
            name="jobs_execution_control",
        )
        return [control, *urls]

    def has_control_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.change_execution")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.add_execution")

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kw: Any
    ) -> HttpResponse:
        context["can_control"] = self.has_control_permission(request)
        context["can_retry"] = self.has_retry_permission(request)
        # The live tail keeps about as much as a run's stored output.
        context["log_keep"] = settings.KARMCHARI_OUTPUT_LIMIT
        return super().render_change_form(request, context, *args, **kw)

    def control_view(
        self, request: HttpRequest, object_id: int, verb: str
    ) -> HttpResponse:
        allowed = (
            self.has_retry_permission(request)
            if verb == "retry"
            else verb in CONTROL_VERBS and self.has_control_permission(request)
        )
        if not allowed:
            raise PermissionDenied
        # The admin's queryset: with per-app access, only the user's executions.
        execution = get_object_or_404(self.get_queryset(request), pk=object_id)
        page = reverse("admin:jobs_execution_change", args=[execution.pk])
        try:
            if verb == "retry":
                retry = services.execution_retry(execution=execution, user=request.user)
                self._message(request, f"Retrying as #{retry.pk}.", messages.SUCCESS)
                page = reverse("admin:jobs_execution_change", args=[retry.pk])
            else:
                services.execution_control(
                    execution=execution, action=verb, user=request.user
                )
                self._message(
                    request, f"Asked #{execution.pk} to {verb}.", messages.SUCCESS
                )
        except services.ServiceError as exc:
            self._message(request, str(exc), messages.WARNING)
        return HttpResponseRedirect(page)

    def _message(self, request: HttpRequest, text: str, level: int) -> None:
        self.message_user(request, text, level)

    def _control_many(
        self, request: HttpRequest, queryset: QuerySet[Execution], verb: str
    ) -> None:
        done = 0
        for execution in queryset.select_related("job"):
            try:
                services.execution_control(
                    execution=execution, action=verb, user=request.user
                )
                done += 1
            except services.ServiceError as exc:
                self._message(request, f"#{execution.pk}: {exc}", messages.WARNING)
        self._message(request, f"Asked {done} execution(s) to {verb}.", messages.INFO)

    @admin.action(description="Pause selected executions", permissions=["control"])
    def pause_selected(
        self, request: HttpRequest, queryset: QuerySet[Execution]
    ) -> None:
        self._control_many(request, queryset, "pause")

    @admin.action(description="Resume selected executions", permissions=["control"])
    def resume_selected(
        self, request: HttpRequest, queryset: QuerySet[Execution]
    ) -> None:
        self._control_many(request, queryset, "resume")

    @admin.action(description="Kill selected executions", permissions=["control"])
    def kill_selected(
        self, request: HttpRequest, queryset: QuerySet[Execution]
    ) -> None:
        self._control_many(request, queryset, "kill")

    @admin.action(description="Retry selected executions", permissions=["retry"])
    def retry_selected(
        self, request: HttpRequest, queryset: QuerySet[Execution]
    ) -> None:
        done = 0
        for execution in queryset.select_related("job"):
            try:
                services.execution_retry(execution=execution, user=request.user)
                done += 1
            except services.ServiceError as exc:
                self._message(request, f"#{execution.pk}: {exc}", messages.WARNING)
        self._message(request, f"Retried {done} execution(s).", messages.INFO)
