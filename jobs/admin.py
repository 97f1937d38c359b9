"""The operator console."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs import services
from jobs.models import App, Execution, Job, Schedule


@admin.register(App)
class AppAdmin(admin.ModelAdmin[App]):
    list_display = ["name", "description", "created"]
    search_fields = ["name", "description"]


class ScheduleInline(admin.TabularInline[Schedule, Job]):
    model = Schedule
    extra = 0
    fields = ["kind", "expression", "timezone", "enabled", "next_run_at"]
    readonly_fields = ["next_run_at"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    list_display = [
        "name",
        "app",
        "kind",
        "enabled",
        "queue",
        "success_count",
        "error_count",
        "last_attempted_at",
    ]
    list_filter = ["app", "kind", "enabled"]
    list_select_related = ["app"]
    search_fields = ["name", "description", "owner"]
    readonly_fields = [
        "success_count",
        "error_count",
        "last_success_at",
        "last_error_at",
        "last_attempted_at",
        "duration_total",
        "created",
        "updated",
    ]
    filter_horizontal = ["parents"]
    inlines = [ScheduleInline]
    actions = ["run_now", "enable", "disable"]

    @admin.action(description="Run selected jobs now", permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        started = 0
        for job in queryset.select_related("app"):
            try:
                services.job_trigger(job=job, trigger=Execution.Trigger.MANUAL)
                started += 1
            except services.Conflict as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"Started {started} job(s).", messages.SUCCESS)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.add_execution")

    @admin.action(description="Enable selected jobs", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            services.job_update(job=job, enabled=True)
        self.message_user(request, f"Enabled {len(queryset)} job(s).")

    @admin.action(description="Disable selected jobs", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            services.job_update(job=job, enabled=False)
        self.message_user(request, f"Disabled {len(queryset)} job(s).")


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin[Schedule]):
    list_display = ["job", "kind", "expression", "timezone", "enabled", "next_run_at"]
    list_filter = ["kind", "enabled", "timezone"]
    list_select_related = ["job__app"]
    search_fields = ["job__name", "expression"]
    raw_id_fields = ["job"]
    readonly_fields = ["next_run_at", "last_run_at", "created", "updated"]


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin[Execution]):
    list_display = [
        "id",
        "job",
        "status",
        "trigger",
        "worker",
        "exit_code",
        "created",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status", "trigger"]
    list_select_related = ["job__app"]
    search_fields = ["=id", "job__name", "external_id"]
    date_hierarchy = "created"
    # The table grows without bound: never COUNT(*) it for the paginator.
    show_full_result_count = False
    raw_id_fields = ["job", "schedule", "retry_of", "agent"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        queryset = super().get_queryset(request)
        return (
            queryset.defer("output", "error")
            if request.resolver_match
            and (request.resolver_match.url_name or "").endswith("changelist")
            else queryset
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: Execution | None = None
    ) -> bool:
        # History is read-only; runs are controlled through actions, not edits.
        return False
