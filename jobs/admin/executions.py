"""The executions room: the capped list and the run page (controls in
jobs/engine_admin.py)."""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from agents.models import Agent
from jobs.admin.base import AppScopedAdmin, _change_link, _seconds
from jobs.engine_admin import ExecutionControlAdminMixin
from jobs.models import Execution, Job
from jobs.stats import stats_forget
from karmchari_site.admin_ui import CappedPaginator, badge


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
    list_select_related = ["job__app"]
    search_fields = ["=id", "job__name", "=external_id"]
    search_help_text = "An execution's id, its job's name, or an external run's id."
    # Not date_hierarchy: its links are a DISTINCT over every row of the table.
    list_filter = ["status", "trigger", "created"]
    # The table grows without bound: never COUNT(*) it for the paginator.
    show_full_result_count = False
    paginator = CappedPaginator

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Execution], search_term: str
    ) -> tuple[QuerySet[Execution], bool]:
        """As search_fields say, but each part through an index: an id by its key,
        a job's name through the jobs table (then jobs_execution_job_newest), an
        external id exactly. The admin's own search casts the id to text and ORs
        it with the join: a scan of the whole table."""
        term = search_term.strip()
        if not term:
            return queryset, False
        # The jobs first, as a list: with a subquery in the OR, PostgreSQL scans.
        names = Job.objects.filter(name__icontains=term).order_by()
        jobs = list(names.values_list("pk")[:1000])
        found = Q(job_id__in=[pk for (pk,) in jobs]) | Q(external_id=term)
        if term.isdigit() and len(term) < 19:
            found |= Q(pk=int(term))
        return queryset.filter(found), False

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

    # Deleting runs changes their jobs' figures and the dashboard's.

    def delete_model(self, request: HttpRequest, obj: Execution) -> None:
        super().delete_model(request, obj)
        stats_forget(job_id=obj.job_id)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[Execution]
    ) -> None:
        job_ids = set(queryset.order_by().values_list("job_id", flat=True).distinct())
        super().delete_queryset(request, queryset)
        for job_id in job_ids:
            stats_forget(job_id=job_id)

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
                " → ",  # the separator is escaped: a character, not an entity
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
