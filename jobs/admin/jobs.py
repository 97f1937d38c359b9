"""The jobs room: the job list and page, its secrets, recent runs and run now."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from jobs import access, charts, services, stats
from jobs.admin.base import (
    AppListFilter,
    AppScopedAdmin,
    LockingInlineFormSet,
    _change_link,
    _seconds,
    _when,
)
from jobs.admin.schedules import ScheduleInline, _save_schedule_form, schedule_meaning
from jobs.models import Execution, Job, JobSecret, Schedule
from jobs.permissions import SHELL_DENIED, can_manage_shell_jobs, may_change_jobs
from jobs.runners import SECRET_MASK, SpecError
from jobs.secrets import MAX_VALUE_BYTES, SecretError, clean_secrets, spec_split_secrets
from karmchari_site.admin_ui import badge

RECENT_ON_PAGE = 10


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
        if data.get("DELETE") or self.has_error("new_value"):
            return data
        value = data.get("new_value")
        # The mask, like a blank, keeps the stored value (_secret_changes).
        if not value or value == SECRET_MASK:
            if self.instance.pk is None:
                why = "A new secret needs a value."
                if value:
                    why += f" {SECRET_MASK!r} only keeps a stored one."
                self.add_error("new_value", why)
            elif data.get("name", self.instance.name) != self.instance.name:
                self.add_error("new_value", "Give the value again to rename a secret.")
        return data

    def clean_new_value(self) -> str:
        value: str = self.cleaned_data["new_value"]
        if value:
            # As the service will: the field counts characters, not bytes. Under a
            # stand-in name: the name has its own field and validator.
            try:
                clean_secrets({"VALUE": value})
            except SecretError as exc:
                raise forms.ValidationError(list(exc.errors.values())) from None
        return value


class JobSecretInline(admin.TabularInline[JobSecret, Job]):
    """Names and masked values; changes go through services.job_update. Editing a
    job's secrets is editing the job: the job's permissions decide."""

    model = JobSecret
    form = JobSecretForm
    formset = LockingInlineFormSet
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

    # The other side of `parents`: the jobs that run after each success of this one.
    children = forms.ModelMultipleChoiceField(
        queryset=Job.objects.all(),
        required=False,
        widget=FilteredSelectMultiple("children", is_stacked=False),
        help_text="Jobs that run after each success of this one.",
    )

    class Meta:
        model = Job
        # The admin narrows this to what JobAdmin.get_fieldsets() lays out.
        fields = "__all__"  # noqa: DJ007

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in JOB_STATS_FIELDS:  # written by services only
            self.fields.pop(name, None)
        children: Any = self.fields["children"]
        if self.children_choices is not None:
            children.queryset = self.children_choices
        parents: Any = self.fields.get("parents")
        if self.instance.pk is not None:
            # Not offered as its own parent or child (refused anyway).
            children.queryset = children.queryset.exclude(pk=self.instance.pk)
            self.initial.setdefault(
                "children",
                list(
                    children.queryset.filter(parents=self.instance).values_list(
                        "pk", flat=True
                    )
                ),
            )
            if parents is not None:
                parents.queryset = parents.queryset.exclude(pk=self.instance.pk)

    # Set by JobAdmin.get_form from the requesting user: who they are, whether they
    # may manage shell jobs, and the jobs they may see (None: all).
    user: Any = None
    may_manage_shell = True
    children_choices: QuerySet[Job] | None = None

    def clean_ping_grace(self) -> timedelta | None:
        value: timedelta | None = self.cleaned_data.get("ping_grace")
        try:
            services.schedule_check_delay(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return value

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
            else:
                self._check_spec_secrets(data["kind"], data["spec"])
        self._check_links(data)
        return data

    def _check_spec_secrets(self, kind: str, spec: dict[str, Any]) -> None:
        """The secret-looking values saving moves out of the spec, checked as
        job_secrets_set will check them: its SecretError would be a 500."""
        _, secrets = spec_split_secrets(kind=kind, spec=spec)
        try:
            clean_secrets(secrets)
        except SecretError as exc:
            self.add_error("spec", str(exc))
            return
        masked = {name for name, value in secrets.items() if value == SECRET_MASK}
        if masked and self.instance.pk is not None:
            masked -= set(
                self.instance.secrets.filter(name__in=masked).values_list(
                    "name", flat=True
                )
            )
        if masked:
            self.add_error(
                "spec",
                f"{', '.join(sorted(masked))}: {SECRET_MASK!r} keeps a stored value, "
                "but none is stored: give the real value.",
            )

    def _check_links(self, data: dict[str, Any]) -> None:
        """No dependency cycle, counting the links in apps hidden from the user that
        saving keeps (save_related), as the API does."""
        job = self.instance if self.instance.pk else None

        def kept(side: str) -> list[Job]:
            return access.keep_hidden_links(self.user, job, data[side], side)

        parents = kept("parents") if data.get("parents") is not None else None
        if parents is not None:
            why = services.job_parents_cycle(job=job, parents=parents)
            if why:
                self.add_error("parents", why)
        if data.get("children") is not None:
            why = services.job_children_cycle(
                job=job,
                parents=parents if parents is not None else [],
                children=kept("children"),
            )
            if why:
                self.add_error("children", why)


def _job_links(jobs: QuerySet[Job]) -> SafeString:
    """Links to the jobs' pages; narrowed to what the user may see by
    JobAdmin.get_object, all of them elsewhere."""
    return format_html_join(
        ", ",
        '<a href="{}">{} / {}</a>',
        (
            (reverse("admin:jobs_job_change", args=[job.pk]), job.app.name, job.name)
            for job in jobs.select_related("app").order_by("app__name", "name")
        ),
    )


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
    ("Dependencies", ["parents", "parents_links", "children", "children_links"]),
    ("Statistics", ["stats_panel", "created", "updated"]),
]
# Shown inside the stats panel instead of one by one.
JOB_STATS_FIELDS = list(Job.COUNTER_FIELDS)


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
        "parents_links",
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
            # For the links to parents and children (which get no request): those
            # this user may see, as lazy querysets.
            for side in ("parents", "children"):
                visible = access.restrict(getattr(job, side).all(), request.user, "app")
                setattr(job, f"visible_{side}", visible)
        return job

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> Any:
        available = [
            name
            for name in self.get_fields(request, obj)
            if name not in JOB_STATS_FIELDS
        ]
        if obj is None:
            hidden: tuple[str, ...] = ("stats_panel", "parents_links", "children_links")
        elif self.has_change_permission(request, obj):
            hidden = ("parents_links",)  # the parents' widget shows them
        else:
            # Read-only page: "children" is a form field, not one of the model's, and
            # Django would list every parent, hidden apps' too; the links show both.
            hidden = ("parents", "children")
        available = [n for n in available if n not in hidden]
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

    @admin.display(description="Parents' pages")
    def parents_links(self, job: Job) -> SafeString | str:
        if not job.pk:
            return "-"
        parents = getattr(job, "visible_parents", job.parents.all())
        return _job_links(parents) or "None: this job waits for no other."

    @admin.display(description="Children's pages")
    def children_links(self, job: Job) -> SafeString | str:
        if not job.pk:
            return "-"
        children = getattr(job, "visible_children", job.children.all())
        return _job_links(children) or "None: no job waits for this one."

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
        form.user = request.user  # type: ignore[attr-defined]
        form.may_manage_shell = can_manage_shell_jobs(request.user)  # type: ignore[attr-defined]
        form.children_choices = access.visible(Job, request.user)  # type: ignore[attr-defined]
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
            # Its row is locked since save_form (LockingAdmin): it is there.
            services.job_update(job=Job.objects.get(pk=obj.pk), **fields)

    # Deletes go through the service (Kala's rule: children left with no other
    # parent go too, and running executions are stopped); the confirmation page
    # lists those children.

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        return super().get_deleted_objects(
            services.jobs_doomed(jobs=list(objs), user=request.user), request
        )

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        services.job_delete(job=obj, user=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        services.jobs_delete(jobs=list(queryset), user=request.user)

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        links: dict[str, Callable[..., Job]] = {
            "parents": services.job_set_parents,
            "children": services.job_set_children,
        }
        for side, set_links in links.items():
            if side in form.cleaned_data:
                chosen = access.keep_hidden_links(
                    request.user,
                    form.instance if change else None,
                    form.cleaned_data[side],
                    side,
                )
                set_links(job=form.instance, **{side: chosen})
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
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected jobs", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(
        self, request: HttpRequest, queryset: QuerySet[Job], enabled: bool
    ) -> None:
        done = 0
        for job in queryset:
            if not may_change_jobs(request.user, [job]):
                self.message_user(
                    request, f"{job}: {SHELL_DENIED} Left as it was.", messages.WARNING
                )
                continue
            try:
                services.job_update(job=job, enabled=enabled)
            except services.Gone as exc:  # deleted since the list was read
                self.message_user(request, f"{exc} Left out.", messages.WARNING)
                continue
            done += 1
        verb = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{verb} {done} job(s).")
