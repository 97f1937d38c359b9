"""The schedules room: the schedule form, its live preview, and the inline on the
job page."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from jobs import schedules, services
from jobs.admin.base import AppScopedAdmin, LockingInlineFormSet
from jobs.models import Job, Schedule

UPCOMING_ON_PAGE = 5


class ScheduleForm(forms.ModelForm[Schedule]):
    """Refuses what the API refuses (services.schedule_check): an expression the
    scheduler could not fire, delays over the limit, a schedule that never fires."""

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
        help_texts = {
            "expression": "cron (<code>*/5 * * * *</code>), Quartz "
            "(<code>0 0 12 ? * MON-FRI</code>), ISO 8601 repeating interval "
            "(<code>R5/2026-01-01T00:00:00Z/PT10M</code>) or, for one-shot, a date "
            "and time (<code>2026-01-01T09:00:00</code>).",
            "timezone": "IANA name, e.g. <code>Europe/Berlin</code>; cron slots "
            "follow its daylight-saving changes.",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data  # the schedule as a whole once each field reads
        # As the API takes them: a new schedule whole, a stored one's changes.
        fields = (
            data
            if self.instance.pk is None
            else {name: data[name] for name in self.changed_data if name in data}
        )
        try:
            services.schedule_check(schedule=self.instance, fields=fields)
        except services.ScheduleInvalid as exc:
            for name, why in exc.errors.items():
                # The inline on the job page has no epsilon, start_at or end_at.
                self.add_error(name if name in self.fields else None, why)
        return data


def _save_schedule_form(form: forms.ModelForm[Schedule]) -> None:
    services.schedule_save(
        schedule=form.instance,
        changed=set(form.changed_data) if form.instance.pk else None,
        was_enabled=bool(form.initial.get("enabled", True)),
    )


def schedule_meaning(obj: Schedule) -> str:
    if not obj.expression:
        return "-"
    try:
        return schedules.describe(obj.kind, obj.expression, obj.timezone)
    except schedules.ScheduleError as exc:
        return f"Invalid: {exc}"


def schedule_upcoming(obj: Schedule, n: int = UPCOMING_ON_PAGE) -> SafeString | str:
    """The next `n` fire times in the schedule's own time zone (pure maths)."""
    if not obj.pk:
        return "-"
    if not obj.enabled:
        return "Disabled."
    try:
        zone = ZoneInfo(obj.timezone)
        times = services.schedule_upcoming(obj, after=timezone.now(), n=n)
    except (schedules.ScheduleError, ValueError) as exc:
        return f"Invalid: {exc}"
    return (
        format_html_join(
            "",
            '<div class="k-fire">{}</div>',
            ((f"{t.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}",) for t in times),
        )
        or "None: the schedule has ended."
    )


class ScheduleInline(admin.TabularInline[Schedule, Job]):
    model = Schedule
    form = ScheduleForm
    formset = LockingInlineFormSet
    extra = 0
    fields = ["kind", "expression", "timezone", "enabled", "meaning", "upcoming"]
    readonly_fields = ["meaning", "upcoming"]
    show_change_link = True

    @admin.display(description="Meaning")
    def meaning(self, obj: Schedule) -> str:
        return schedule_meaning(obj)

    @admin.display(description=f"Next {UPCOMING_ON_PAGE} fire times")
    def upcoming(self, obj: Schedule) -> SafeString | str:
        return schedule_upcoming(obj)


@admin.register(Schedule)
class ScheduleAdmin(AppScopedAdmin[Schedule]):
    app_path = "job__app"
    form = ScheduleForm
    change_form_template = "admin/jobs/schedule/change_form.html"
    list_display = [
        "job",
        "kind",
        "expression",
        "meaning",
        "timezone",
        "enabled",
        "next_run_at",
    ]
    list_filter = ["kind", "enabled", "timezone"]
    list_select_related = ["job__app"]
    search_fields = ["job__name", "expression"]
    raw_id_fields = ["job"]
    readonly_fields = [
        "meaning",
        "upcoming",
        "next_run_at",
        "last_run_at",
        "created",
        "updated",
    ]
    actions = ["enable", "disable"]

    @admin.display(description="Meaning")
    def meaning(self, obj: Schedule) -> str:
        return schedule_meaning(obj)

    @admin.display(description=f"Next {UPCOMING_ON_PAGE} fire times")
    def upcoming(self, obj: Schedule) -> SafeString | str:
        return schedule_upcoming(obj)

    def get_urls(self) -> list[URLPattern]:
        preview = path(
            "preview/",
            self.admin_site.admin_view(self.preview_view),
            name="jobs_schedule_preview",
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """What an expression means and when it fires next, while the form is typed
        in (pure schedule maths; nothing is saved)."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        kind = request.GET.get("kind") or Schedule.Kind.CRON
        expression = request.GET.get("expression", "").strip()
        tz = request.GET.get("timezone") or "UTC"
        if not expression:
            return JsonResponse({"error": "Enter an expression."})
        try:
            zone = ZoneInfo(schedules.parse(kind, expression, tz).tz)
            times = schedules.preview(
                kind, expression, tz, timezone.now(), UPCOMING_ON_PAGE
            )
            meaning = schedules.describe(kind, expression, tz)
        except (schedules.ScheduleError, ValueError) as exc:
            return JsonResponse({"error": str(exc)})
        return JsonResponse(
            {
                "description": meaning,
                "fires": [f"{t.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}" for t in times],
            }
        )

    def save_model(
        self, request: HttpRequest, obj: Schedule, form: Any, change: bool
    ) -> None:
        _save_schedule_form(form)

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
        services.schedule_delete(schedule=obj)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[Schedule]
    ) -> None:
        for schedule in queryset:
            services.schedule_delete(schedule=schedule)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(
        self, request: HttpRequest, queryset: QuerySet[Schedule], enabled: bool
    ) -> None:
        done = 0
        for schedule in queryset.select_related("job__app"):
            try:
                services.schedule_update(schedule=schedule, enabled=enabled)
            except services.Gone as exc:  # deleted since the list was read
                self.message_user(request, f"{exc} Left out.", messages.WARNING)
                continue
            done += 1
        verb = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{verb} {done} schedule(s).")
