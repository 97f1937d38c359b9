"""The operator console: the dashboard (admin index), apps, jobs, schedules and
executions. Every change goes through jobs/services.py; this module validates and
presents."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Model, OuterRef, Q, QuerySet, Subquery
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timesince import timeuntil
from django.views.decorators.http import require_POST
from django_stubs_ext import StrOrPromise

from agents.models import Agent
from jobs import access, charts, schedules, services, stats, tokens
from jobs.authentication import admin_login_limited
from jobs.engine_admin import ExecutionControlAdminMixin
from jobs.models import (
    ApiToken,
    App,
    Execution,
    Job,
    JobSecret,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
    Schedule,
)
from jobs.permissions import can_manage_shell_jobs
from jobs.runners import SECRET_MASK, SpecError
from jobs.secrets import MAX_VALUE_BYTES
from karmchari_site.admin_ui import badge

admin.site.site_header = "Karmchari"
admin.site.site_title = "Karmchari"
admin.site.index_title = "Operator console"
# The admin index is the dashboard (figures from stats.stats_dashboard(), cached).
admin.site.index_template = "admin/jobs/dashboard.html"
# Guessing passwords at the admin's login form is limited as at the API's.
admin.site.login = admin_login_limited(admin.site.login)  # type: ignore[method-assign]

UPCOMING_ON_PAGE = 5
RECENT_ON_PAGE = 10


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    local = timezone.localtime(value)
    if value > timezone.now():
        return f"{local:%Y-%m-%d %H:%M:%S} (in {timeuntil(value)})"
    return f"{local:%Y-%m-%d %H:%M:%S}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h {minutes:02d}m {seconds:02d}s"
        if hours
        else f"{minutes}m {seconds:02d}s"
    )


def _change_link(name: str, pk: int, text: str) -> SafeString:
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{name}", args=[pk]), text)


M = TypeVar("M", bound=Model)


class AppScopedAdmin(admin.ModelAdmin[M]):
    """Per-app access in the console: the changelist, change pages, actions,
    autocomplete (which reads this queryset) and the choices of app and job fields
    show only what the user may see. Other rows answer as missing."""

    # The path from the model to its app, as access.restrict() takes it.
    app_path: str

    def app_condition(self, request: HttpRequest) -> Q:
        return access.condition(request.user, self.app_path)

    def get_queryset(self, request: HttpRequest) -> QuerySet[M]:
        return super().get_queryset(request).filter(self.app_condition(request))

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> Any:
        _offer_visible(db_field, request, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> Any:
        _offer_visible(db_field, request, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


def _offer_visible(db_field: Any, request: HttpRequest, kwargs: dict[str, Any]) -> None:
    """A related field's choices narrowed to the apps the user may see."""
    if "queryset" not in kwargs:
        choices = access.visible(db_field.related_model, request.user)
        if choices is not None:
            kwargs["queryset"] = choices


class AppListFilter(admin.RelatedFieldListFilter):
    """The app filter, offering only the apps the user may see."""

    def field_choices(
        self, field: Any, request: HttpRequest, model_admin: Any
    ) -> list[tuple[str, StrOrPromise]]:
        return [(str(app.pk), str(app)) for app in access.apps_for(request.user)]


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


# --- Schedules ------------------------------------------------------------------------


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
        times = schedules.preview(
            obj.kind, obj.expression, obj.timezone, timezone.now(), n
        )
    except (schedules.ScheduleError, ValueError) as exc:
        return f"Invalid: {exc}"
    if obj.end_at is not None:
        times = [t for t in times if t <= obj.end_at]
    if obj.repetitions_left is not None:
        times = times[: obj.repetitions_left]
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


# --- Jobs ---------------------------------------------------------------------------


class RecentExecutionsFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """Only the newest runs: one sliced query (jobs_execution_job_newest), evaluated
    once and reused by the formset."""

    def get_queryset(self) -> QuerySet[Execution]:
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset()[:RECENT_ON_PAGE]
        recent: QuerySet[Execution] = self._recent
        return recent


RECENT_FIELDS = [
    "run",
    "status_badge",
    "trigger",
    "attempt",
    "created",
    "started_at",
    "took",
    "worker",
    "exit_code",
]


class RecentExecutionInline(admin.TabularInline[Execution, Job]):
    model = Execution
    formset = RecentExecutionsFormSet
    verbose_name = "recent execution"
    verbose_name_plural = f"Recent executions (newest {RECENT_ON_PAGE})"
    fields = [*RECENT_FIELDS]
    readonly_fields = RECENT_FIELDS
    extra = 0
    max_num = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return (
            super()
            .get_queryset(request)
            .defer("output", "error", "parameters")
            .order_by("-created", "-id")
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Run")
    def run(self, obj: Execution) -> SafeString:
        return _change_link("jobs_execution_change", obj.pk, f"#{obj.pk}")

    @admin.display(description="Status")
    def status_badge(self, obj: Execution) -> SafeString:
        return badge(obj.status)

    @admin.display(description="Duration")
    def took(self, obj: Execution) -> str:
        return _seconds(obj.duration)


class JobSecretForm(forms.ModelForm[JobSecret]):
    """A secret's name, and a value that is never rendered back: left blank, the
    stored value stays."""

    new_value = forms.CharField(
        label="Value",
        required=False,
        strip=False,
        max_length=MAX_VALUE_BYTES,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "new-password"}
        ),
        help_text="Never shown. Leave blank to keep the stored value.",
    )

    class Meta:
        model = JobSecret
        fields = ["name"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("new_value") and not data.get("DELETE"):
            if self.instance.pk is None:
                self.add_error("new_value", "A new secret needs a value.")
            elif data.get("name", self.instance.name) != self.instance.name:
                self.add_error("new_value", "Give the value again to rename a secret.")
        return data


class JobSecretInline(admin.TabularInline[JobSecret, Job]):
    """Names and masked values; changes go through services.job_update. Editing a
    job's secrets is editing the job: the job's permissions decide."""

    model = JobSecret
    form = JobSecretForm
    extra = 0
    fields = ["name", "new_value", "updated"]
    readonly_fields = ["updated"]
    verbose_name = "secret"
    verbose_name_plural = (
        "Secrets (shell jobs: environment variables; http jobs: ${NAME} in url, "
        "headers and body)"
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobSecret]:
        return super().get_queryset(request).defer("value")

    @admin.display(description="Value")
    def new_value(self, obj: JobSecret) -> str:
        """The value column for who may only view the job (editors get the form's
        password field). Read-only, the admin looks a field's name up on the inline
        before the model; without this it found nothing and printed "None", as if
        no value were stored."""
        return SECRET_MASK

    def _job_admin(self) -> admin.ModelAdmin[Job]:
        return self.admin_site.get_model_admin(Job)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._job_admin().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return self._job_admin().has_add_permission(request)
        return self._job_admin().has_change_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_add_permission(request, obj)


def _secret_changes(formset: Any) -> dict[str, str | None]:
    """What a JobSecretInline formset asks for, as job_update's `secrets`."""
    changes: dict[str, str | None] = {}
    for form in formset.deleted_forms:
        if form.instance.pk is not None:
            changes[form.instance.name] = None
    for form in formset.forms:
        if form in formset.deleted_forms or not form.has_changed():
            continue
        name = form.cleaned_data["name"]
        if form.instance.pk is not None and form.instance.name != name:
            changes.setdefault(form.instance.name, None)  # renamed: the old one goes
        changes[name] = form.cleaned_data["new_value"] or SECRET_MASK
    return changes


class JobForm(forms.ModelForm[Job]):
    """Checks the spec the way its runner will read it, and dependency cycles.

    Secret-looking env values and http headers in the spec move to the job's secrets
    when it is saved (services.job_insert and job_update)."""

    class Meta:
        model = Job
        # The admin narrows this to what JobAdmin.get_fieldsets() lays out.
        fields = "__all__"  # noqa: DJ007

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in JOB_STATS_FIELDS:  # written by services only
            self.fields.pop(name, None)
        parents: Any = self.fields.get("parents")
        if parents is not None and self.instance.pk is not None:
            # Not offered as its own parent (saving it would be refused anyway).
            parents.queryset = parents.queryset.exclude(pk=self.instance.pk)

    # Set by JobAdmin.get_form from the requesting user.
    may_manage_shell = True

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("kind") == Job.Kind.SHELL and not self.may_manage_shell:
            self.add_error(
                "kind",
                "Creating or editing shell jobs needs the 'jobs.manage_shell_job' "
                "permission.",
            )
        if "spec" in data and "kind" in data:
            try:
                data["spec"] = services.job_clean_spec(
                    kind=data["kind"], spec=data["spec"]
                )
            except SpecError as exc:
                self.add_error("spec", "; ".join(exc.errors.values()))
        if data.get("parents") is not None:
            why = services.job_parents_cycle(
                job=self.instance if self.instance.pk else None,
                parents=list(data["parents"]),
            )
            if why:
                self.add_error("parents", why)
        return data


class LastStatusFilter(admin.SimpleListFilter):
    """By the status of each job's newest execution (the last_status annotation)."""

    title = "last status"
    parameter_name = "last_status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*Execution.Status.choices, ("never", "Never run")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "never":
            return queryset.filter(last_status__isnull=True)
        if value in Execution.Status.values:
            return queryset.filter(last_status=value)
        return queryset


# Fields the job page groups; fields not named here (new ones) land in "More".
JOB_FIELDSETS: list[tuple[str | None, list[str]]] = [
    (None, ["app", "name", "description", "kind", "spec", "enabled"]),
    (
        "Running",
        [
            "queue",
            "timeout",
            "max_retries",
            "retry_backoff",
            "overlap_policy",
            "max_concurrent",
            "owner",
            "tags",
        ],
    ),
    ("Dependencies", ["parents", "children_links"]),
    ("Statistics", ["stats_panel", "created", "updated"]),
]
# Shown inside the stats panel instead of one by one.
JOB_STATS_FIELDS = [
    "success_count",
    "error_count",
    "last_success_at",
    "last_error_at",
    "last_attempted_at",
    "duration_total",
]


@admin.register(Job)
class JobAdmin(AppScopedAdmin[Job]):
    app_path = "app"
    form = JobForm
    change_form_template = "admin/jobs/job/change_form.html"
    list_display = [
        "name",
        "app",
        "kind",
        "enabled",
        "schedule_summary",
        "last_status_badge",
        "next_run",
    ]
    list_filter = [("app", AppListFilter), "kind", "enabled", LastStatusFilter]
    list_select_related = ["app"]
    search_fields = ["name", "description", "owner", "app__name"]
    readonly_fields = [
        *JOB_STATS_FIELDS,
        "created",
        "updated",
        "children_links",
        "stats_panel",
    ]
    filter_horizontal = ["parents"]
    inlines = [ScheduleInline, JobSecretInline, RecentExecutionInline]
    actions = ["run_now", "enable", "disable"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        newest = Execution.objects.filter(job=OuterRef("pk")).order_by(
            "-created", "-id"
        )
        queryset = (
            super()
            .get_queryset(request)
            # One correlated subquery per row, each a single probe of
            # jobs_execution_job_newest: the changelist stays one query.
            .annotate(
                last_status=Subquery(newest.values("status")[:1]),
                last_execution_id=Subquery(newest.values("pk")[:1]),
            )
        )
        match = request.resolver_match
        if match and (match.url_name or "").endswith("changelist"):
            queryset = queryset.prefetch_related("schedules")
        return queryset

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Job | None:
        job = super().get_object(request, object_id, from_field)
        if job is not None:
            # For the read-only "children" field (which gets no request): the
            # children this user may see, as a lazy queryset.
            visible = access.restrict(job.children.all(), request.user, "app")
            setattr(job, "visible_children", visible)  # noqa: B010
        return job

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> Any:
        available = [
            name
            for name in self.get_fields(request, obj)
            if name not in JOB_STATS_FIELDS
        ]
        if obj is None:
            available = [
                n for n in available if n not in ("stats_panel", "children_links")
            ]
        placed: set[str] = set()
        fieldsets: list[tuple[str | None, dict[str, Any]]] = []
        for title, names in JOB_FIELDSETS:
            present = [name for name in names if name in available]
            placed.update(present)
            if present:
                fieldsets.append((title, {"fields": present}))
        rest = [name for name in available if name not in placed]
        if rest:
            fieldsets.append(("More", {"fields": rest, "classes": ["collapse"]}))
        return fieldsets

    # --- changelist columns (no query per row: annotations and one prefetch) ---

    def _schedules(self, job: Job) -> list[Schedule]:
        return [s for s in job.schedules.all() if s.enabled]

    @admin.display(description="Schedule")
    def schedule_summary(self, job: Job) -> str:
        enabled = self._schedules(job)
        if not enabled:
            return "-"
        first = schedule_meaning(enabled[0])
        return first + (f" (+{len(enabled) - 1} more)" if len(enabled) > 1 else "")

    @admin.display(description="Last run", ordering="last_status")
    def last_status_badge(self, job: Job) -> SafeString | str:
        status: str | None = getattr(job, "last_status", None)
        execution_id: int | None = getattr(job, "last_execution_id", None)
        if status is None or execution_id is None:
            return badge("never", "never run")
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:jobs_execution_change", args=[execution_id]),
            badge(status),
        )

    @admin.display(description="Next run")
    def next_run(self, job: Job) -> str:
        if not job.enabled:
            return "- (disabled)"
        times = [s.next_run_at for s in self._schedules(job) if s.next_run_at]
        return _when(min(times)) if times else "-"

    # --- change page ---

    @admin.display(description="Children")
    def children_links(self, job: Job) -> SafeString | str:
        if not job.pk:
            return "-"
        # Narrowed to what the user may see by get_object; all of them elsewhere.
        children = getattr(job, "visible_children", job.children.all())
        children = children.select_related("app").order_by("app__name", "name")
        return (
            format_html_join(
                ", ",
                '<a href="{}">{} / {}</a>',
                (
                    (
                        reverse("admin:jobs_job_change", args=[child.pk]),
                        child.app.name,
                        child.name,
                    )
                    for child in children
                ),
            )
            or "None: no job waits for this one."
        )

    @admin.display(description="Runs")
    def stats_panel(self, job: Job) -> SafeString | str:
        if not job.pk:
            return "-"
        figures = stats.stats_job(job=job)
        counts = [
            (badge(status), count)
            for status, count in figures["executions"].items()
            if count
        ]
        runs = reverse("admin:jobs_execution_changelist") + f"?job__id__exact={job.pk}"
        return format_html(
            '<div id="k-job-stats">'
            "<p>{} succeeded, {} failed; average duration {}.</p>"
            "<p>Last success: {}. Last failure: {}. Last attempt: {}.</p>"
            '<p>{} <a href="{}">all runs</a></p>'
            "{}</div>",
            figures["success_count"],
            figures["error_count"],
            _seconds(figures["average_duration"]),
            _when(figures["last_success_at"]),
            _when(figures["last_error_at"]),
            _when(figures["last_attempted_at"]),
            format_html_join(" ", "{} {}", counts) or "No runs yet.",
            runs,
            charts.hourly_svg(
                stats.stats_hourly(job_id=job.pk),
                width=600,
                height=130,
                label="This job's executions per hour",
            ),
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A shell job runs any command on the workers: editing one takes its own
        # permission (the admin then shows it read-only).
        shell = obj is not None and obj.kind == Job.Kind.SHELL
        if shell and not can_manage_shell_jobs(request.user):
            return False
        return super().has_change_permission(request, obj)

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        # A fresh class per request (modelform_factory), so this is per user.
        form.may_manage_shell = can_manage_shell_jobs(request.user)  # type: ignore[attr-defined]
        return form

    def save_model(
        self, request: HttpRequest, obj: Job, form: Any, change: bool
    ) -> None:
        if not change:
            # Parents and secrets follow in save_related.
            services.job_insert(job=obj)
            return
        # Through the service, from the stored row: enabling a job settles the slots
        # its schedules missed, and the beat hears of it.
        fields = {
            name: getattr(obj, name)
            for name in form.changed_data
            if name != "parents" and name in {f.name for f in Job._meta.concrete_fields}
        }
        if fields:
            services.job_update(job=Job.objects.get(pk=obj.pk), **fields)

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        if "parents" in form.cleaned_data:
            parents = access.keep_hidden_parents(
                request.user,
                form.instance if change else None,
                form.cleaned_data["parents"],
            )
            services.job_set_parents(job=form.instance, parents=parents)
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(
        self, request: HttpRequest, form: Any, formset: Any, change: bool
    ) -> None:
        if formset.model is JobSecret:
            formset.save(commit=False)  # for the change message; writes nothing
            changes = _secret_changes(formset)
            if changes:
                services.job_update(job=form.instance, secrets=changes)
            return
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

    # --- run now: an action on the list and a button on the page ---

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.add_execution")

    def get_urls(self) -> list[URLPattern]:
        run = path(
            "<int:object_id>/run/",
            self.admin_site.admin_view(require_POST(self.run_view)),
            name="jobs_job_run",
        )
        return [run, *super().get_urls()]

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kw: Any
    ) -> HttpResponse:
        context["can_run"] = self.has_run_permission(request)
        return super().render_change_form(request, context, *args, **kw)

    def run_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if not self.has_run_permission(request):
            raise PermissionDenied
        job = get_object_or_404(
            access.restrict(Job.objects.select_related("app"), request.user, "app"),
            pk=object_id,
        )
        try:
            execution = services.job_trigger(job=job, trigger=Execution.Trigger.MANUAL)
        except services.ServiceError as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))
        self.message_user(
            request, f"Started {job.name} as #{execution.pk}.", messages.SUCCESS
        )
        return HttpResponseRedirect(
            reverse("admin:jobs_execution_change", args=[execution.pk])
        )

    @admin.action(description="Run selected jobs now", permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        started = 0
        for job in queryset.select_related("app"):
            try:
                services.job_trigger(job=job, trigger=Execution.Trigger.MANUAL)
                started += 1
            except services.ServiceError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"Started {started} job(s).", messages.SUCCESS)

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


# --- Executions ----------------------------------------------------------------------


class CappedPaginator(Paginator):  # type: ignore[type-arg]
    """Counts at most CAP + 1 rows (a LIMITed subquery), never the whole table:
    the execution list shows "more than CAP" instead of an exact total."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        rows: QuerySet[Any] = self.object_list  # type: ignore[assignment]
        return rows[: self.CAP + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > self.CAP


@admin.register(Execution)
class ExecutionAdmin(AppScopedAdmin[Execution], ExecutionControlAdminMixin):
    app_path = "job__app"
    list_display = [
        "id",
        "job_link",
        "status_badge",
        "trigger",
        "attempt",
        "worker",
        "exit_code",
        "created",
        "took",
    ]
    list_display_links = ["id"]
    # Both filters have an index that also serves the default ordering:
    # jobs_execution_status and jobs_execution_trigger.
    list_filter = ["status", "trigger"]
    list_select_related = ["job__app"]
    search_fields = ["=id", "job__name", "external_id"]
    date_hierarchy = "created"
    # The table grows without bound: never COUNT(*) it for the paginator.
    show_full_result_count = False
    paginator = CappedPaginator
    raw_id_fields = ["job", "schedule", "retry_of", "agent"]
    readonly_fields = [
        "status_badge",
        "took",
        "attempt_chain",
        "job_link",
        "agent_link",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "job",
                    "status_badge",
                    "desired_state",
                    "trigger",
                    "attempt_chain",
                    "took",
                    "exit_code",
                    "reason",
                ]
            },
        ),
        (
            "Where and when",
            {
                "fields": [
                    "agent_link",
                    "worker",
                    "pid",
                    "schedule",
                    "scheduled_for",
                    "created",
                    "dispatched_at",
                    "started_at",
                    "finished_at",
                    "paused_seconds",
                ]
            },
        ),
        (
            "Input and errors",
            {"fields": ["parameters", "external_id", "error"], "classes": ["collapse"]},
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match and (match.url_name or "").endswith("changelist"):
            return queryset.defer("output", "error", "parameters")
        return queryset.select_related("job__app", "agent", "schedule", "retry_of")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: Execution | None = None
    ) -> bool:
        # History is read-only; runs are controlled through actions, not edits.
        return False

    @admin.display(description="Job", ordering="job__name")
    def job_link(self, obj: Execution) -> SafeString:
        return _change_link(
            "jobs_job_change", obj.job_id, f"{obj.job.app.name} / {obj.job.name}"
        )

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Execution) -> SafeString:
        return badge(obj.status)

    @admin.display(description="Agent")
    def agent_link(self, obj: Execution) -> SafeString | str:
        """The agent that ran it: the link when recorded, else the worker's row by
        its Celery hostname (one query, on the detail page only)."""
        agent = obj.agent or (
            Agent.objects.filter(name=obj.worker).first() if obj.worker else None
        )
        if agent is None:
            return obj.worker or "-"
        return _change_link("agents_agent_change", agent.pk, agent.name)

    @admin.display(description="Duration")
    def took(self, obj: Execution) -> str:
        if obj.started_at is not None and obj.finished_at is None:
            running = (timezone.now() - obj.started_at).total_seconds()
            return f"{_seconds(max(0.0, running - obj.paused_seconds))} so far"
        return _seconds(obj.duration)

    @admin.display(description="Attempts")
    def attempt_chain(self, obj: Execution) -> SafeString:
        """The retries of one run, first attempt to last; a query per attempt, and
        attempts are bounded by the job's max_retries."""
        chain = _attempts(obj)
        return format_html(
            '<span class="k-chain">{}</span>',
            format_html_join(
                " &rarr; ",
                '<a href="{}" class="{}">#{} {}</a>',
                (
                    (
                        reverse("admin:jobs_execution_change", args=[e.pk]),
                        "k-current" if e.pk == obj.pk else "",
                        e.pk,
                        badge(e.status),
                    )
                    for e in chain
                ),
            ),
        )


def _attempts(execution: Execution, limit: int = 50) -> Sequence[Execution]:
    fields = ("id", "status", "attempt", "retry_of_id", "job_id")
    chain = [execution]
    seen = {execution.pk}
    while chain[0].retry_of_id and len(chain) < limit:
        previous = (
            Execution.objects.only(*fields).filter(pk=chain[0].retry_of_id).first()
        )
        if previous is None or previous.pk in seen:
            break
        seen.add(previous.pk)
        chain.insert(0, previous)
    while len(chain) < limit:
        following = (
            Execution.objects.only(*fields)
            .filter(retry_of_id=chain[-1].pk)
            .order_by("created", "id")
            .first()
        )
        if following is None or following.pk in seen:
            break
        seen.add(following.pk)
        chain.append(following)
    return chain


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    """Tokens are made here with a name; the key is shown once, in a message."""

    list_display = ["name", "user", "prefix", "created", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    raw_id_fields = ["user"]
    fields = ["user", "name", "prefix", "created", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: ApiToken | None = None
    ) -> list[str]:
        base = list(self.readonly_fields)
        return base if obj is None else ["user", "name", *base]

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: Any, change: bool
    ) -> None:
        if change:
            return  # nothing of a token is editable once made
        token, key = tokens.token_create(user=obj.user, name=obj.name)
        obj.pk = token.pk
        self.message_user(
            request,
            f"Token {token.name!r} made. Its key, shown only now: {key}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            tokens.token_revoke(token=token)
        self.message_user(request, f"Revoked {len(queryset)} token(s).")


# --- Notifications -------------------------------------------------------------------


class NotificationRuleForm(forms.ModelForm[NotificationRule]):
    """`events` as checkboxes of the known events, not raw JSON."""

    events = forms.MultipleChoiceField(
        choices=NotificationRule.Event.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = NotificationRule
        fields = ["channel", "app", "job", "events", "slow_factor"]


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin[NotificationChannel]):
    list_display = ["name", "kind", "target", "enabled", "created"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "target"]


@admin.register(NotificationRule)
class NotificationRuleAdmin(AppScopedAdmin[NotificationRule]):
    form = NotificationRuleForm
    list_display = ["channel", "app", "job", "events", "slow_factor"]
    list_select_related = ["channel", "app", "job"]
    list_filter = ["channel"]
    raw_id_fields = ["job"]

    def app_condition(self, request: HttpRequest) -> Q:
        # A rule is for an app or for a job: the user sees those of their apps.
        return access.condition(request.user, "app") | access.condition(
            request.user, "job__app"
        )


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
    list_filter = ["status", "event", "channel"]
    list_select_related = ["channel", "job"]
    date_hierarchy = "created"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: NotificationDelivery | None = None
    ) -> bool:
        return False
