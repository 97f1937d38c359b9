"""The operator console."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html_join

from jobs import schedules, services
from jobs.engine_admin import ExecutionControlAdminMixin
from jobs.models import App, Execution, Job, Schedule


@admin.register(App)
class AppAdmin(admin.ModelAdmin[App]):
    list_display = ["name", "description", "created"]
    search_fields = ["name", "description"]


class ScheduleForm(forms.ModelForm[Schedule]):
    """Refuses an expression the scheduler could not fire, saying what is wrong."""

    class Meta:
        model = Schedule
        fields = [
            "job",
            "kind",
            "expression",
            "timezone",
            "enabled",
            "epsilon",
            "misfire_policy",
            "jitter",
            "jitter_hashed",
            "start_at",
            "end_at",
            "repetitions_left",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind, expression = data.get("kind"), data.get("expression")
        tz = data.get("timezone") or "UTC"
        if kind and expression:
            try:
                schedules.parse(kind, expression, tz)
            except schedules.ScheduleError as exc:
                field = "timezone" if "time zone" in str(exc) else "expression"
                self.add_error(field, str(exc))
        return data


def _save_schedule_form(form: forms.ModelForm[Schedule]) -> None:
    services.schedule_save(
        schedule=form.instance,
        changed=set(form.changed_data) if form.instance.pk else None,
        was_enabled=bool(form.initial.get("enabled", True)),
    )


class ScheduleInline(admin.TabularInline[Schedule, Job]):
    model = Schedule
    form = ScheduleForm
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

    def save_formset(
        self, request: HttpRequest, form: Any, formset: Any, change: bool
    ) -> None:
        if formset.model is not Schedule:
            super().save_formset(request, form, formset, change)
            return
        # Schedules save through the service so next_run_at is always computed.
        formset.save(commit=False)
        for schedule in formset.deleted_objects:
            services.schedule_delete(schedule=schedule)
        for inline_form in formset.forms:
            if inline_form in formset.deleted_forms or not inline_form.has_changed():
                continue
            inline_form.instance.job = form.instance
            _save_schedule_form(inline_form)

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
    form = ScheduleForm
    list_display = ["job", "kind", "expression", "timezone", "enabled", "next_run_at"]
    list_filter = ["kind", "enabled", "timezone"]
    list_select_related = ["job__app"]
    search_fields = ["job__name", "expression"]
    raw_id_fields = ["job"]
    readonly_fields = [
        "description",
        "upcoming",
        "next_run_at",
        "last_run_at",
        "created",
        "updated",
    ]
    actions = ["enable", "disable"]

    @admin.display(description="Meaning")
    def description(self, obj: Schedule) -> str:
        try:
            return schedules.describe(obj.kind, obj.expression, obj.timezone)
        except schedules.ScheduleError as exc:
            return f"Invalid: {exc}"

    @admin.display(description="Next 5 fire times")
    def upcoming(self, obj: Schedule) -> str:
        if not obj.pk:
            return "-"
        try:
            zone = ZoneInfo(obj.timezone)
            times = schedules.preview(
                obj.kind, obj.expression, obj.timezone, timezone.now(), 5
            )
        except (schedules.ScheduleError, ValueError) as exc:
            return f"Invalid: {exc}"
        return (
            format_html_join(
                "", "<div>{}</div>", ((t.astimezone(zone).isoformat(),) for t in times)
            )
            or "None: the schedule has ended."
        )

    def save_model(
        self, request: HttpRequest, obj: Schedule, form: Any, change: bool
    ) -> None:
        _save_schedule_form(form)

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
        services.schedule_delete(schedule=obj)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset.select_related("job__app"):
            services.schedule_update(schedule=schedule, enabled=True)
        self.message_user(request, f"Enabled {len(queryset)} schedule(s).")

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset.select_related("job__app"):
            services.schedule_update(schedule=schedule, enabled=False)
        self.message_user(request, f"Disabled {len(queryset)} schedule(s).")


@admin.register(Execution)
class ExecutionAdmin(ExecutionControlAdminMixin, admin.ModelAdmin[Execution]):
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
