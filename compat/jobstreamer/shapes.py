"""Lookups, and Karmchari's rows in JobStreamer's shapes (EDN maps)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from django.db.models import Count, F, Min, Q, Window
from django.db.models.functions import RowNumber

from agents import live
from agents.models import Agent
from compat import edn
from compat.edn import Keyword
from compat.jobstreamer.protocol import Problem, _first
from compat.security import (
    restrict,
)
from jobs.models import App, Execution, Job

# JSR-352 batch statuses, as JobStreamer names them, for Karmchari's statuses.
BATCH_STATUS = {
    Execution.Status.PENDING: "queued",
    Execution.Status.RUNNING: "started",
    Execution.Status.PAUSED: "stopped",
    Execution.Status.SUCCEEDED: "completed",
    Execution.Status.FAILED: "failed",
    Execution.Status.TIMED_OUT: "failed",
    Execution.Status.LOST: "failed",
    Execution.Status.KILLED: "stopped",
    Execution.Status.SKIPPED: "abandoned",
}
FAILURES = (
    Execution.Status.FAILED,
    Execution.Status.TIMED_OUT,
    Execution.Status.LOST,
    Execution.Status.KILLED,
)
# Where the parameters of a run hold keyword, #inst and #uuid values (edn.tags): kept
# in Execution.parameters beside them (a run has no other place), so that
# :job-execution/job-parameters shows them back as sent. A name no body may use.
PARAMETER_TAGS = "jobstreamer/edn-types"


def _app(name: str, user: Any) -> App:
    """The app, if the caller may see it (per-app access); else 404 as missing."""
    app = restrict(App.objects.all(), user, "").filter(name=name).first()
    if app is None:
        raise Problem(404)
    return app


def _job(app_name: str, name: str, user: Any) -> Job:
    jobs = Job.objects.select_related("app").prefetch_related("schedules")
    job = restrict(jobs, user, "app").filter(app__name=app_name, name=name).first()
    if job is None:
        raise Problem(404)
    return job


def app_map(app: App) -> dict[str, Any]:
    classpath = app.meta.get("classpath", [])
    return {
        "application/name": app.name,
        "application/description": app.description,
        "application/classpaths": classpath,
        # The seed README's spelling.
        "name": app.name,
        "description": app.description,
        "classpath": classpath,
    }


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}


def run_parameters(execution: Execution) -> Any:
    """A run's parameters as the client sent them: keywords, #inst and #uuid values
    typed again."""
    stored = execution.parameters or {}
    if not isinstance(stored, dict) or PARAMETER_TAGS not in stored:
        return stored
    rest = {key: value for key, value in stored.items() if key != PARAMETER_TAGS}
    return edn.retag(rest, stored[PARAMETER_TAGS])


def job_definition(job: Job) -> dict[str, Any]:
    """A job's stored JobStreamer definition as the client sent it: keywords, #inst
    and #uuid values typed again ({} for a job made otherwise)."""
    kept = job.legacy.get("jobstreamer", {})
    stored = kept.get("definition", {}) if isinstance(kept, dict) else {}
    if not isinstance(stored, dict):
        return {}
    return dict(edn.retag(stored, kept.get("types")))


def execution_map(execution: Execution) -> dict[str, Any]:
    """Needs `agent` selected (or costs a query)."""
    agent = execution.agent
    status = BATCH_STATUS[Execution.Status(execution.status)]
    if (
        execution.status == Execution.Status.RUNNING
        and execution.desired_state == Execution.DesiredState.KILL
    ):
        status = "stopping"
    return _without_none(
        {
            "db/id": execution.pk,
            "job-execution/execution-id": execution.pk,
            "job-execution/create-time": execution.created,
            "job-execution/start-time": execution.started_at,
            "job-execution/end-time": execution.finished_at,
            "job-execution/agent": (
                {"agent/name": agent.name, "agent/instance-id": agent.instance_id}
                if agent is not None
                else None
            ),
            "job-execution/batch-status": {
                "db/ident": Keyword(f"batch-status/{status}")
            },
            "job-execution/exit-status": execution.reason or None,
            "job-execution/job-parameters": edn.dumps(run_parameters(execution)),
        }
    )


def _schedule_map(job: Job) -> dict[str, Any] | None:
    schedule = min(job.schedules.all(), key=lambda s: s.pk, default=None)
    if schedule is None:
        return None
    return {
        "schedule/active?": schedule.enabled,
        "schedule/cron-notation": schedule.expression,
    }


def latest_executions(jobs: list[Job]) -> dict[int, Execution]:
    """Each job's latest execution (with its agent), in one query."""
    ranked = (
        Execution.objects.filter(job__in=jobs)
        .select_related("agent")
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("job_id")], order_by=F("pk").desc()
            )
        )
        .filter(rank=1)
    )
    return {execution.job_id: execution for execution in ranked}


def _next_execution(job: Job) -> dict[str, Any] | None:
    """When the job's schedules fire next. Needs `schedules` prefetched."""
    upcoming = [
        s.next_run_at for s in job.schedules.all() if s.enabled and s.next_run_at
    ]
    return {"job-execution/start-time": min(upcoming)} if upcoming else None


def job_summary(job: Job, latest: Execution | None) -> dict[str, Any]:
    """A job in lists: the README's keys, and the latest and next executions the
    original lists (its console shows them, and stops or restarts the latest from
    the list). Needs `schedules` prefetched."""
    return _without_none(
        {
            "job/id": job.name,
            "job/name": job.name,
            "job/restartable?": True,
            "job/schedule": _schedule_map(job),
            "job/latest-execution": execution_map(latest) if latest else None,
            "job/next-execution": _next_execution(job),
        }
    )


def job_map(job: Job) -> dict[str, Any]:
    """A job in full: its definition with stats, schedule, next and latest runs."""
    counts = job.executions.aggregate(
        total=Count("pk", filter=~Q(status=Execution.Status.SKIPPED)),
        success=Count("pk", filter=Q(status=Execution.Status.SUCCEEDED)),
        failure=Count("pk", filter=Q(status__in=FAILURES)),
    )
    runs = job.timed_runs
    average: int | Fraction = 0
    if runs:
        average = Fraction(round(job.duration_total * 1000), runs)
        if average.denominator == 1:  # Clojure's (/ 78000 39) is 2000, no ratio
            average = average.numerator
    upcoming = job.schedules.filter(enabled=True).aggregate(next=Min("next_run_at"))
    latest = job.executions.select_related("agent").order_by("-pk").first()
    extra = (
        {"job/command": job.spec.get("command")} if job.kind == Job.Kind.SHELL else {}
    )
    definition = job_definition(job)
    return _without_none(
        {
            **definition,
            **extra,
            # The definition as sent, as an EDN string (the original's pr-str of
            # it): its console reads the job's structure from here. Not nested in
            # itself when a client sends back a job map it read.
            "job/edn-notation": edn.dumps(
                {k: v for k, v in definition.items() if k != "job/edn-notation"}
                or {"job/name": job.name}
            ),
            "db/id": job.pk,
            "job/id": job.name,
            "job/name": job.name,
            "job/restartable?": True,
            "job/stats": {
                "total": counts["total"],
                "success": counts["success"],
                "failure": counts["failure"],
                "average": average,
            },
            "job/schedule": _schedule_map(job),
            "job/next-execution": (
                {"job-execution/start-time": upcoming["next"]}
                if upcoming["next"] is not None
                else None
            ),
            "job/latest-execution": execution_map(latest) if latest else None,
        }
    )


def _command_in(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for key in ("command", "script", "batchlet/command", "batchlet/script"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def shell_command(definition: dict[str, Any]) -> str | None:
    """The shell command a definition runs, or None when any step is not a shell
    step: a top-level command, or every step's batchlet (or its properties) naming
    one; several steps run in order, each only if the last succeeded."""
    top = _command_in({k.removeprefix("job/"): v for k, v in definition.items()})
    if top:
        return top
    steps = _first(definition, "job/steps", "steps")
    if not isinstance(steps, list) or not steps:
        return None
    commands = []
    for step in steps:
        if not isinstance(step, dict):
            return None
        batchlet = _first(step, "step/batchlet", "batchlet")
        command = _command_in(batchlet) or (
            _command_in(_first(batchlet, "properties", "batchlet/properties"))
            if isinstance(batchlet, dict)
            else None
        )
        if command is None:
            return None
        commands.append(command)
    if len(commands) == 1:
        return commands[0]
    return " && ".join(f"( {command} )" for command in commands)


def agent_map(agent: Agent, sample: Any, running: list[Execution]) -> dict[str, Any]:
    memory_free = sample.memory_free if sample else agent.memory_free
    swap_free = sample.swap_free if sample else agent.swap_free
    process_load = sample.process_cpu_load if sample else agent.process_cpu_load
    cpu_time = sample.cpu_time if sample else agent.cpu_time
    system_load = sample.system_cpu_load if sample else agent.system_cpu_load
    load_average = (sample.load_average if sample else agent.load_average) or []
    return _without_none(
        {
            "agent/name": agent.name,
            "agent/port": agent.port,
            "agent/jobs": {"running": len(running)},
            "command": Keyword(
                "ready" if agent.status == Agent.Status.ONLINE else "block"
            ),
            "agent/instance-id": agent.instance_id,
            "agent/cpu-arch": agent.cpu_arch,
            "agent/cpu-core": agent.cpu_cores,
            "agent/os-name": agent.os_name,
            "agent/stats": {
                "memory": {
                    "physical": {"free": memory_free, "total": agent.memory_total},
                    "swap": {"free": swap_free, "total": agent.swap_total},
                },
                "cpu": {
                    "process": {
                        "load": process_load,
                        "time": round(cpu_time * 1e9) if cpu_time is not None else None,
                    },
                    "system": {
                        "load": system_load,
                        "load-average": load_average[0] if load_average else None,
                    },
                },
            },
            "agent/os-version": agent.os_version,
            "agent/host": agent.host,
            "agent/status": Keyword(agent.status),
            "agent/executions": [execution_map(e) for e in running],
        }
    )


def _agents_answer(agents: list[Agent], user: Any) -> list[dict[str, Any]]:
    """Agents serve every app; the runs listed are those the caller may see."""
    samples = live.read_many([a.instance_id for a in agents])
    running: dict[int, list[Execution]] = {a.pk: [] for a in agents}
    executions = restrict(Execution.objects.select_related("agent"), user, "job__app")
    for execution in executions.filter(
        agent__in=agents,
        status__in=(Execution.Status.RUNNING, Execution.Status.PAUSED),
    ):
        assert execution.agent_id is not None
        running[execution.agent_id].append(execution)
    return [
        agent_map(a, samples.get(str(a.instance_id)), running[a.pk]) for a in agents
    ]
