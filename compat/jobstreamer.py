"""The JobStreamer control bus API (seed 004; compat-spec.md §3).

Apps, jobs, Quartz cron schedules, executions, agents and app stats, in EDN by default
and in JSON when the client accepts only that (liberator's content negotiation). A
POSTed job definition is kept in Job.legacy["jobstreamer"]; a definition whose steps
all carry a shell command becomes a shell job (its steps joined with &&), any other
becomes a "batch" job: stored and shown, refused when run.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Count, Min, Q
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from agents import live
from agents.models import Agent
from compat import edn
from compat.edn import Keyword
from compat.security import (
    ADD_APP,
    ADD_SCHEDULE,
    CHANGE_APP,
    CHANGE_SCHEDULE,
    DELETE_SCHEDULE,
    REALM,
    authorize,
    may,
    may_manage_shell,
    may_see,
    restrict,
)
from jobs import schedules, services
from jobs.models import App, Execution, Job, slug_validator, validate_not_reserved
from jobs.permissions import SHELL_DENIED
from jobs.runners import SpecError
from jobs.runners.batch import NOT_RUNNABLE
from karmchari_site.text import unstorable_path

logger = logging.getLogger(__name__)

EDN = "application/edn"
JSON = "application/json"
MAX_BODY = 1 << 20
PAGE = 20
_JOB_NAME = re.compile(r"^[\w\-]+\Z")
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
# PUT .../execution/{id}/{command}: JobStreamer's verbs, plus pause and resume.
EXECUTION_COMMANDS = {
    "stop": "kill",
    "abandon": "kill",
    "pause": "pause",
    "resume": "resume",
}


class Problem(Exception):
    """An answer other than success: status and messages."""

    def __init__(self, status: int, *messages: str) -> None:
        super().__init__("; ".join(messages))
        self.status = status
        self.messages = list(messages)


# --- Negotiation, bodies, answers -------------------------------------------------


def negotiate(request: HttpRequest) -> str | None:
    """EDN unless the client prefers JSON; None when it accepts neither (406)."""
    header = request.headers.get("Accept", "").strip()
    if not header:
        return EDN
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, media.lower()))
    for _, _, media in sorted(ranked):
        if media == JSON:
            return JSON
        if media in (EDN, "*/*", "application/*"):
            return EDN
    return None


def answer(request: HttpRequest, data: Any, status: int = 200) -> HttpResponse:
    media = negotiate(request) or EDN
    body = edn.dumps(data) if media == EDN else edn.to_json(data)
    return HttpResponse(body, status=status, content_type=f"{media};charset=UTF-8")


def _text(body: str, status: int) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain;charset=UTF-8")


def _no_content() -> HttpResponse:
    response = HttpResponse(b"", status=204)
    del response["Content-Type"]
    return response


def read_body(request: HttpRequest) -> Any:
    """The EDN or JSON body; None for none, or for another media type (ignored, as
    JobStreamer does)."""
    media = (request.content_type or "").lower()
    if media not in (EDN, JSON):
        return None
    if len(request.body) > MAX_BODY:
        raise Problem(400, "The body is larger than 1 MiB.")
    if not request.body.strip():
        return None
    try:
        body = edn.loads(request.body) if media == EDN else json.loads(request.body)
    except edn.EdnError as exc:
        raise Problem(400, f"IOException: cannot read the EDN body: {exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Problem(400, f"IOException: cannot read the JSON body: {exc}") from None
    if found := unstorable_path(body):
        raise Problem(400, f"IOException: cannot read the body: {found[1]}")
    if why := edn.unstorable(body):
        raise Problem(400, f"IOException: cannot read the body: {why}")
    return body


def _body_map(request: HttpRequest) -> dict[str, Any]:
    body = read_body(request)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise Problem(400, "The body must be a map.")
    return body


def _first(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if data.get(key) not in (None, ""):
            return data[key]
    return None


def _page(request: HttpRequest) -> tuple[int, int]:
    """limit (default 20) and offset; JobStreamer's offset is 1-based (0 and 1 both
    start at the first item)."""
    try:
        limit = int(request.GET.get("limit", PAGE))
        offset = int(request.GET.get("offset", 1))
    except ValueError:
        raise Problem(400, "limit and offset must be whole numbers.") from None
    if limit < 0 or offset < 0:
        raise Problem(400, "limit and offset must not be negative.")
    return min(limit, 1000), offset


def _start(offset: int, hits: int) -> int:
    """Where a page starts: an offset past the end gives an empty page, and never
    reaches the database (SQLite and PostgreSQL refuse an OFFSET beyond 64 bits)."""
    return min(max(offset - 1, 0), hits)


View = Callable[..., HttpResponse]
CORS_METHODS = "POST,GET,PUT,DELETE,OPTIONS"  # as the original (compat-spec §3.1)


def _preflight() -> HttpResponse:
    """The original's answer to any OPTIONS while CORS is on: 200, before
    authentication (a browser sends no credentials with a preflight)."""
    response = HttpResponse(b"", status=200)
    del response["Content-Type"]
    response["Access-Control-Allow-Methods"] = CORS_METHODS
    response["Access-Control-Allow-Headers"] = "Content-Type, Accept, Authorization"
    response["Access-Control-Max-Age"] = "600"
    return response


def _with_cors(response: HttpResponse, origin: str) -> HttpResponse:
    """Every answer, errors included, names the allowed origin (browsers hide any
    answer that does not). Credentials may go with a named origin, never with *."""
    response["Access-Control-Allow-Origin"] = origin
    if origin != "*":
        response["Access-Control-Allow-Credentials"] = "true"
    return response


def _route(**methods: View) -> View:
    serve = _serve(**methods)

    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        origin = settings.KARMCHARI_JOBSTREAMER_CORS_ORIGIN
        if not origin:
            return serve(request, **kwargs)
        if request.method == "OPTIONS":
            return _with_cors(_preflight(), origin)
        return _with_cors(serve(request, **kwargs), origin)

    return view


def _serve(**methods: View) -> View:
    allowed = ", ".join(sorted(methods))

    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        handler = methods.get(request.method or "")
        if handler is None:
            response = _text("Method not allowed.", 405)
            response["Allow"] = allowed
            return response
        if negotiate(request) is None:
            return _text("No acceptable resource available.", 406)
        verdict = authorize(request, "jobstreamer")
        if not verdict.allowed:
            response = _text(
                "Unauthorized" if verdict.status == 401 else "Permission denied",
                verdict.status,
            )
            if verdict.status == 401:
                response["WWW-Authenticate"] = REALM
            return response
        try:
            return handler(request, verdict.user, **kwargs)
        except Problem as problem:
            if problem.status == 404:
                return _text("Resource not found.", 404)
            if problem.status == 403:
                return _text("Permission denied", 403)
            return answer(request, {"messages": problem.messages}, problem.status)

    return view


# --- Lookups and shapes -------------------------------------------------------------


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
            "job-execution/job-parameters": edn.dumps(execution.parameters or {}),
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


def job_summary(job: Job) -> dict[str, Any]:
    """A job in lists. Needs `schedules` prefetched."""
    return _without_none(
        {
            "job/id": job.name,
            "job/name": job.name,
            "job/restartable?": True,
            "job/schedule": _schedule_map(job),
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
    average = Fraction(round(job.duration_total * 1000), runs) if runs else 0
    upcoming = job.schedules.filter(enabled=True).aggregate(next=Min("next_run_at"))
    latest = job.executions.select_related("agent").order_by("-pk").first()
    definition = job.legacy.get("jobstreamer", {}).get("definition", {})
    extra = (
        {"job/command": job.spec.get("command")} if job.kind == Job.Kind.SHELL else {}
    )
    return _without_none(
        {
            **(definition if isinstance(definition, dict) else {}),
            **extra,
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


# --- Handlers -----------------------------------------------------------------------


def _apps_list(request: HttpRequest, user: Any) -> HttpResponse:
    apps = restrict(App.objects.order_by("name"), user, "")
    return answer(request, [app_map(app) for app in apps])


def _apps_create(request: HttpRequest, user: Any) -> HttpResponse:
    data = _body_map(request)
    name = _first(data, "application/name", "name") or "default"
    description = _first(data, "application/description", "description") or ""
    classpath = _first(data, "application/classpaths", "classpath", "classpaths") or []
    if not isinstance(name, str) or not isinstance(description, str):
        raise Problem(400, "name and description must be strings.")
    if not isinstance(classpath, list) or not all(
        isinstance(c, str) for c in classpath
    ):
        raise Problem(400, "classpath must be a vector of strings.")
    try:
        slug_validator(name)
        validate_not_reserved(name)
    except ValidationError as exc:
        raise Problem(400, *exc.messages) from None
    meta = {"classpath": classpath}
    app = App.objects.filter(name=name).first()
    if app is None:
        if not may(user, ADD_APP):
            raise Problem(403)
        app = services.app_create(
            name=name, description=description, meta=meta, creator=user
        )
    elif not may_see(user, app) or not may(user, CHANGE_APP):
        # Or the name is taken by an app hidden from the caller (per-app access).
        raise Problem(403)
    else:
        app = services.app_update(
            app=app, description=description, meta={**app.meta, **meta}
        )
    return answer(request, app_map(app), 201)


def _jobs_list(request: HttpRequest, user: Any, app: str) -> HttpResponse:
    owner = _app(app, user)
    limit, offset = _page(request)
    jobs = owner.jobs.prefetch_related("schedules").order_by("name")
    query = request.GET.get("q", "").strip()
    if query:
        jobs = jobs.filter(name__icontains=query)
    hits = jobs.count()
    start = _start(offset, hits)
    page = list(jobs[start : start + limit])
    return answer(
        request,
        {
            "results": [job_summary(job) for job in page],
            "hits": hits,
            "limit": limit,
            "offset": offset,
        },
    )


def _save_job(
    owner: App, name: str, definition: dict[str, Any], user: Any
) -> tuple[Job, bool]:
    stored = edn.plain_json(definition)
    command = shell_command(definition)
    kind, spec = (
        (Job.Kind.SHELL, {"command": command}) if command else (Job.Kind.BATCH, stored)
    )
    legacy = {"jobstreamer": {"definition": stored}}
    existing = owner.jobs.filter(name=name).first()
    shell = kind == Job.Kind.SHELL or (existing and existing.kind == Job.Kind.SHELL)
    if shell and not may_manage_shell(user):
        raise Problem(403, SHELL_DENIED)
    try:
        if existing is not None:
            merged = {**existing.legacy, **legacy}
            return (
                services.job_update(job=existing, kind=kind, spec=spec, legacy=merged),
                False,
            )
        job = services.job_create(
            app=owner,
            name=name,
            kind=kind,
            spec=spec,
            legacy=legacy,
            description="Created through the JobStreamer API.",
        )
    except SpecError as exc:
        raise Problem(400, *exc.errors.values()) from None
    return job, True


def _job_name(data: dict[str, Any], fallback: str | None = None) -> str:
    name = _first(data, "job/name", "job/id", "id", "name") or fallback
    if not isinstance(name, str) or not name:
        raise Problem(400, "job/name is required.")
    if not _JOB_NAME.match(name):
        raise Problem(400, "job/name must be letters, digits, '_' or '-'.")
    longest = Job._meta.get_field("name").max_length or 0
    if len(name) > longest:
        raise Problem(400, f"job/name is longer than {longest} characters.")
    try:
        slug_validator(name)
    except ValidationError as exc:
        raise Problem(400, *exc.messages) from None
    return name


def _jobs_create(request: HttpRequest, user: Any, app: str) -> HttpResponse:
    owner = _app(app, user)
    data = _body_map(request)
    job, _ = _save_job(owner, _job_name(data), data, user)
    return answer(request, job_map(job), 201)


def _job_get(request: HttpRequest, user: Any, app: str, name: str) -> HttpResponse:
    return answer(request, job_map(_job(app, name, user)))


def _job_put(request: HttpRequest, user: Any, app: str, name: str) -> HttpResponse:
    job = _job(app, name, user)
    data = _body_map(request)
    given = _first(data, "job/name", "job/id", "id", "name")
    if given is not None and given != name:
        raise Problem(400, "Renaming a job is not supported; job/name must match.")
    job, _ = _save_job(job.app, name, data, user)
    return answer(request, job_map(job))


def _job_delete(request: HttpRequest, user: Any, app: str, name: str) -> HttpResponse:
    services.job_delete(job=_job(app, name, user), user=user)
    return _no_content()


def _schedule_set(request: HttpRequest, user: Any, app: str, name: str) -> HttpResponse:
    job = _job(app, name, user)
    # Re-timing the job's schedule changes it; the first one is added.
    if not may(user, CHANGE_SCHEDULE if job.schedules.all() else ADD_SCHEDULE):
        raise Problem(403)
    data = _body_map(request)
    notation = _first(data, "schedule/cron-notation", "cron-notation")
    if not isinstance(notation, str) or not notation.strip():
        raise Problem(400, "schedule/cron-notation is required.")
    try:
        schedules.parse("cron", notation, "UTC")
    except schedules.ScheduleError as exc:
        raise Problem(400, str(exc)) from None
    services.job_schedule_set(job=job, kind="cron", expression=notation)
    job = _job(app, name, user)
    status = 201 if request.method == "POST" else 200
    return answer(request, _schedule_map(job), status)


def _schedule_delete(
    request: HttpRequest, user: Any, app: str, name: str
) -> HttpResponse:
    job = _job(app, name, user)
    if not may(user, DELETE_SCHEDULE):
        raise Problem(403)
    services.job_schedules_delete(job=job)
    return _no_content()


def _schedule_command(
    request: HttpRequest, user: Any, app: str, name: str, command: str
) -> HttpResponse:
    job = _job(app, name, user)
    if not job.schedules.exists():
        raise Problem(404)
    if not may(user, CHANGE_SCHEDULE):
        raise Problem(403)
    services.job_schedules_enable(job=job, enabled=command == "resume")
    return _no_content()


def _executions_list(
    request: HttpRequest, user: Any, app: str, name: str
) -> HttpResponse:
    job = _job(app, name, user)
    limit, offset = _page(request)
    executions = job.executions.select_related("agent").order_by("-pk")
    hits = executions.count()
    start = _start(offset, hits)
    page = list(executions[start : start + limit])
    return answer(
        request,
        {
            "results": [execution_map(e) for e in page],
            "hits": hits,
            "limit": limit,
            "offset": offset,
        },
    )


def _executions_create(
    request: HttpRequest, user: Any, app: str, name: str
) -> HttpResponse:
    job = _job(app, name, user)
    parameters = edn.plain_json(_body_map(request))
    if job.kind == Job.Kind.BATCH:
        raise Problem(400, NOT_RUNNABLE)
    if job.executions.active().exists():
        raise Problem(409, f"Job {name} is already running or queued.")
    try:
        execution = services.job_trigger(
            job=job, trigger=Execution.Trigger.COMPAT, parameters=parameters
        )
    except services.Conflict as exc:
        raise Problem(409, str(exc)) from None
    return answer(request, execution_map(execution), 201)


def _execution(job: Job, execution_id: str) -> Execution:
    execution = (
        job.executions.select_related("agent", "job").filter(pk=execution_id).first()
    )
    if execution is None:
        raise Problem(404)
    return execution


def _execution_get(
    request: HttpRequest, user: Any, app: str, name: str, execution_id: str
) -> HttpResponse:
    return answer(
        request, execution_map(_execution(_job(app, name, user), execution_id))
    )


def _execution_command(
    request: HttpRequest,
    user: Any,
    app: str,
    name: str,
    execution_id: str,
    command: str,
) -> HttpResponse:
    execution = _execution(_job(app, name, user), execution_id)
    try:
        if command == "restart":
            execution = services.execution_retry(execution=execution, user=user)
        elif command in EXECUTION_COMMANDS:
            execution = services.execution_control(
                execution=execution, action=EXECUTION_COMMANDS[command], user=user
            )
        else:
            raise Problem(404)
    except services.ServiceError as exc:
        raise Problem(409, str(exc)) from None
    return answer(request, execution_map(execution))


def _agents(request: HttpRequest, user: Any) -> HttpResponse:
    agents = list(Agent.objects.order_by("name"))
    return answer(request, _agents_answer(agents, user))


def _agent(request: HttpRequest, user: Any, instance_id: str) -> HttpResponse:
    try:
        key = uuid.UUID(instance_id)
    except ValueError:
        raise Problem(404) from None
    agent = Agent.objects.filter(instance_id=key).first()
    if agent is None:
        raise Problem(404)
    return answer(request, _agents_answer([agent], user)[0])


def _stats(request: HttpRequest, user: Any, app: str) -> HttpResponse:
    owner = _app(app, user)
    online = Agent.objects.filter(status=Agent.Status.ONLINE).count()
    return answer(request, {"agents": online, "jobs": owner.jobs.count()})


apps_view = _route(GET=_apps_list, POST=_apps_create)
jobs_view = _route(GET=_jobs_list, POST=_jobs_create)
job_view = _route(GET=_job_get, PUT=_job_put, DELETE=_job_delete)
schedule_view = _route(POST=_schedule_set, PUT=_schedule_set, DELETE=_schedule_delete)
schedule_command_view = _route(PUT=_schedule_command)
executions_view = _route(GET=_executions_list, POST=_executions_create)
execution_view = _route(GET=_execution_get)
execution_command_view = _route(PUT=_execution_command)
agents_view = _route(GET=_agents)
agent_view = _route(GET=_agent)
stats_view = _route(GET=_stats)
