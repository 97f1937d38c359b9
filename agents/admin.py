from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from agents import live, services
from agents.models import Agent
from agents.stats import Point, Sample
from karmchari_site.admin_ui import badge as state_badge


def _sample(agent: Agent) -> Sample | None:
    """The live sample the changelist fetched for the page (one MGET), else fetch."""
    if "_live" not in agent.__dict__:
        agent.__dict__["_live"] = live.read_one(agent.instance_id)
    sample: Sample | None = agent.__dict__["_live"]
    return sample


def liveness(agent: Agent) -> str:
    if agent.status == Agent.Status.OFFLINE:
        return "offline"
    sample = _sample(agent)
    seen_at = datetime.fromtimestamp(sample.at, tz=UTC) if sample else None
    if not agent.is_fresh(now=timezone.now(), seen_at=seen_at):
        return "stale"
    return "draining" if agent.status == Agent.Status.DRAINING else "alive"


def history_svg(
    points: Sequence[Point], *, memory_total: int | None, width: int = 600
) -> SafeString:
    """An inline SVG chart of system CPU load and memory use, 0 to 100%."""
    height = 120
    if len(points) < 2:
        return format_html("<p>{}</p>", "Not enough samples yet.")
    start, end = points[0].at, points[-1].at
    span = max(end - start, 1e-9)

    def polyline(values: list[float | None], colour: str) -> str:
        coords = " ".join(
            f"{(p.at - start) / span * width:.1f},"
            f"{height - max(0.0, min(1.0, v)) * height:.1f}"
            for p, v in zip(points, values, strict=True)
            if v is not None
        )
        return (
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
            f'points="{coords}"/>'
        )

    cpu = [p.system_cpu_load for p in points]
    memory: list[float | None] = [
        1 - p.memory_free / memory_total if memory_total else None for p in points
    ]
    # Only numbers and constants go into the markup: safe to mark as such.
    body = (
        # The admin's CSS variables, so the chart follows its light and dark themes.
        f'<rect width="{width}" height="{height}" '
        'style="fill:var(--darkened-bg);stroke:var(--hairline-color)"/>'
        + polyline(cpu, "#1565c0")
        + polyline(memory, "#ef6c00")
    )
    minutes = (end - start) / 60
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="k-chart" width="{}" '
        'height="{}" viewBox="0 0 {} {}" role="img" aria-label="Agent load">{}</svg>'
        '<p class="k-legend"><span style="color:#1565c0">&#9632; system CPU</span> '
        '<span style="color:#ef6c00">&#9632; memory used</span> '
        "(0-100%, last {} min)</p>",
        width,
        height,
        width,
        height,
        mark_safe(body),  # noqa: S308
        f"{minutes:.0f}",
    )


class AgentChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        samples = live.read_many(agent.instance_id for agent in self.result_list)
        for agent in self.result_list:
            agent.__dict__["_live"] = samples.get(str(agent.instance_id))


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin[Agent]):
    list_display = [
        "name",
        "badge",
        "host",
        "cpu_cores",
        "load",
        "memory",
        "running_count",
        "last_heartbeat",
    ]
    list_filter = ["status"]
    search_fields = ["name", "host", "instance_id"]
    readonly_fields = [
        "badge",
        "load",
        "memory",
        "stats_chart",
        "running_executions",
        *[field.name for field in Agent._meta.fields],
    ]
    fieldsets = [
        (None, {"fields": ["badge", "load", "memory", "stats_chart"]}),
        ("Current executions", {"fields": ["running_executions"]}),
        (
            "Worker",
            {
                "fields": [
                    "name",
                    "instance_id",
                    "status",
                    "queues",
                    "pid",
                    "version",
                    "started_at",
                    "last_heartbeat",
                ]
            },
        ),
        (
            "Host",
            {
                "fields": [
                    "host",
                    "port",
                    "os_name",
                    "os_version",
                    "cpu_arch",
                    "cpu_cores",
                    "memory_total",
                    "swap_total",
                ]
            },
        ),
        (
            "Last saved sample",
            {
                "classes": ["collapse"],
                "fields": [
                    "memory_free",
                    "swap_free",
                    "process_cpu_load",
                    "system_cpu_load",
                    "cpu_time",
                    "load_average",
                    "running",
                ],
            },
        ),
    ]
    actions = ["drain", "resume"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AgentChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # Workers register themselves.

    def has_delete_permission(
        self, request: HttpRequest, obj: Agent | None = None
    ) -> bool:
        # Only an offline agent's row (the bulk action asks this of each row too).
        # An agent is recovered from by going offline: deleting the row of one that
        # is not would leave what it runs `running` for ever if its worker is dead,
        # since no sweep would ever find it.
        if obj is not None and obj.status != Agent.Status.OFFLINE:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(
        self, request: HttpRequest, obj: Agent, form: Any, change: bool
    ) -> None:
        # Nothing is editable, and a full save() would overwrite a fresh heartbeat.
        pass

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, context)

    @admin.display(description="State", ordering="status")
    def badge(self, agent: Agent) -> SafeString:
        return state_badge(liveness(agent))

    @admin.display(description="Load")
    def load(self, agent: Agent) -> str:
        sample = _sample(agent)
        system = sample.system_cpu_load if sample else agent.system_cpu_load
        averages = sample.load_average if sample else agent.load_average
        parts = []
        if system is not None:
            parts.append(f"{system:.0%} CPU")
        if averages:
            parts.append(f"load {averages[0]:.2f}")
        return ", ".join(parts) or "-"

    @admin.display(description="Memory free")
    def memory(self, agent: Agent) -> str:
        sample = _sample(agent)
        free = sample.memory_free if sample else agent.memory_free
        if free is None or not agent.memory_total:
            return "-"
        return (
            f"{filesizeformat(free)} of {filesizeformat(agent.memory_total)}"
            f" ({free / agent.memory_total:.0%})"
        )

    def _running(self, agent: Agent) -> list[int]:
        if agent.status == Agent.Status.OFFLINE:
            return []
        sample = _sample(agent)
        return list(sample.running if sample else agent.running or [])

    @admin.display(description="Running")
    def running_count(self, agent: Agent) -> int:
        return len(self._running(agent))

    @admin.display(description="Running executions")
    def running_executions(self, agent: Agent) -> str:
        ids = self._running(agent)
        if not ids:
            return "-"
        # By URL name, so agents need not import jobs.
        return format_html_join(
            ", ",
            '<a href="{}">#{}</a>',
            ((reverse("admin:jobs_execution_change", args=[i]), i) for i in ids),
        )

    @admin.display(description="Last hour")
    def stats_chart(self, agent: Agent) -> str:
        return history_svg(
            live.read_history(agent.instance_id), memory_total=agent.memory_total
        )

    def _control(
        self, request: HttpRequest, agents: QuerySet[Agent] | list[Agent], verb: str
    ) -> None:
        service = services.agent_drain if verb == "drain" else services.agent_resume
        done = 0
        for agent in agents:
            try:
                service(agent=agent)
                done += 1
            except services.AgentError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if done:
            self.message_user(
                request,
                f"{'Draining' if verb == 'drain' else 'Resumed'} {done} agent(s).",
                messages.SUCCESS,
            )

    @admin.action(description="Drain selected agents", permissions=["change"])
    def drain(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._control(request, queryset, "drain")

    @admin.action(description="Resume selected agents", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._control(request, queryset, "resume")

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                f"<path:object_id>/{verb}/",
                self.admin_site.admin_view(self.control_view),
                {"verb": verb},
                name=f"agents_agent_{verb}",
            )
            for verb in ("drain", "resume")
        ] + super().get_urls()

    def control_view(
        self, request: HttpRequest, object_id: str, verb: str
    ) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        agent = self.get_object(request, object_id)
        if agent is None:
            return redirect("admin:agents_agent_changelist")
        if not self.has_change_permission(request, agent):
            raise PermissionDenied
        self._control(request, [agent], verb)
        return redirect("admin:agents_agent_change", agent.pk)
