"""The handlers, one per route and method."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from agents.models import Agent
from compat import edn
from compat.jobstreamer.protocol import (
    Problem,
    _body_map,
    _first,
    _no_content,
    _page,
    _route,
    _start,
    answer,
)
from compat.jobstreamer.shapes import (
    PARAMETER_TAGS,
    _agents_answer,
    _app,
    _job,
    _schedule_map,
    app_map,
    execution_map,
    job_map,
    job_summary,
    latest_executions,
    shell_command,
)
from compat.security import (
    ADD_APP,
    ADD_SCHEDULE,
    CHANGE_APP,
    CHANGE_SCHEDULE,
    DELETE_SCHEDULE,
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

_JOB_NAME = re.compile(r"^[\w\-]+\Z")
# POST .../executions is refused while the latest run is undispatched, queued,
# starting, started or stopping (JobStreamer's rule): pending or running here. A
# paused run shows as stopped, and does not hold a new one back.
BUSY = (Execution.Status.PENDING, Execution.Status.RUNNING)
# PUT .../execution/{id}/{command}: JobStreamer's verbs, plus pause and resume.
EXECUTION_COMMANDS = {
    "stop": "kill",
    "abandon": "kill",
    "pause": "pause",
    "resume": "resume",
}


def _apps_list(request: HttpRequest, user: Any) -> HttpResponse:
    apps = restrict(App.objects.order_by("name"), user, "")
    return answer(request, [app_map(app) for app in apps])


def _apps_create(request: HttpRequest, user: Any) -> HttpResponse:
    data = _body_map(request)
    name = _first(data, "application/name", "name")
    description = _first(data, "application/description", "description")
    classpath = _first(data, "application/classpaths", "classpath", "classpaths")
    # All three required, as bouncer's v/required (an empty string is missing).
    missing = [
        f"application/{key} must be present."
        for key, value in (
            ("name", name),
            ("description", description),
            ("classpaths", classpath),
        )
        if value is None
    ]
    if missing:
        raise Problem(400, *missing)
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
    latest = latest_executions(page)
    return answer(
        request,
        {
            "results": [job_summary(job, latest.get(job.pk)) for job in page],
            "hits": hits,
            "limit": limit,
            "offset": offset,
        },
    )


def _save_job(
    owner: App, name: str, definition: dict[str, Any], user: Any
) -> tuple[Job, bool]:
    stored = edn.plain_json(definition)
    command = shell_command(stored)
    kind, spec = (
        (Job.Kind.SHELL, {"command": command}) if command else (Job.Kind.BATCH, stored)
    )
    kept: dict[str, Any] = {"definition": stored}
    if found := edn.tags(definition):
        kept["types"] = found  # shown back typed (shapes.job_definition)
    legacy = {"jobstreamer": kept}
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
    data = _body_map(request, keywords=True)
    job, _ = _save_job(owner, _job_name(edn.plain(data)), data, user)
    return answer(request, job_map(job), 201)


def _job_get(request: HttpRequest, user: Any, app: str, name: str) -> HttpResponse:
    return answer(request, job_map(_job(app, name, user)))


def _job_put(request: HttpRequest, user: Any, app: str, name: str) -> HttpResponse:
    job = _job(app, name, user)
    data = _body_map(request, keywords=True)
    given = _first(edn.plain(data), "job/name", "job/id", "id", "name")
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
    body = _body_map(request, keywords=True)
    if PARAMETER_TAGS in body:
        raise Problem(400, f"{PARAMETER_TAGS} is reserved; use another name.")
    parameters = edn.plain_json(body)
    if found := edn.tags(body):
        parameters[PARAMETER_TAGS] = found  # shown back typed (shapes.run_parameters)
    if job.kind == Job.Kind.BATCH:
        raise Problem(400, NOT_RUNNABLE)
    latest = job.executions.order_by("-pk").first()
    if latest is not None and latest.status in BUSY:
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
