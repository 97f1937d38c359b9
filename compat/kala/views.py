"""The handlers, one per route and method, and create: a decoded Kala job made a
Karmchari job."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Max, Min, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.csrf import csrf_exempt

from compat.kala.decoding import decode
from compat.kala.protocol import (
    INIT_ERROR,
    KalaDenied,
    KalaError,
    empty,
    go_json,
    go_time,
    plain,
)
from compat.kala.schedule import epsilon, parse_schedule
from compat.kala.shapes import (
    BLANK_COMMAND,
    RETRIES_LIMIT,
    find,
    job_json,
    kala_jobs,
    runs,
    stat,
)
from compat.security import (
    ADD_SCHEDULE,
    DENIED,
    REALM,
    authorize,
    may,
    may_manage_shell,
    may_see,
)
from jobs import schedules, services
from jobs.models import App, Execution, Job, Schedule, slug_validator
from jobs.permissions import SHELL_DENIED, may_change_jobs
from jobs.runners import SpecError
from jobs.schedules import IntervalSchedule
from karmchari_site.text import reads_raw_body

logger = logging.getLogger(__name__)

# Stats kept per job in a job object, and answered by /job/stats/{id}/.
JOB_STATS_LIMIT = 100
STATS_LIMIT = 1000
SCHEDULE_DENIED = (
    "Creating a job with a schedule needs the 'jobs.add_schedule' permission."
)


def _free_name(app: App, wanted: str) -> str:
    try:
        slug_validator(wanted)
        valid = len(wanted) <= 200
    except ValidationError:
        valid = False
    if valid and not Job.objects.filter(app=app, name=wanted).exists():
        return wanted
    base = slugify(wanted)[:150] or "kala-job"
    return f"{base}-{uuid.uuid4().hex[:8]}"


def create(fields: dict[str, Any], user: Any) -> Job:
    name = fields.get("name") or ""
    command = fields.get("command") or ""
    if not name or not command:
        raise KalaError(f"{INIT_ERROR}: name and command are required")
    if not may_manage_shell(user):
        raise KalaDenied(SHELL_DENIED)
    parent_ids = fields.get("parent_jobs") or []
    parents: list[Job] = []
    for parent_id in parent_ids:
        parent = find(parent_id, user)
        if parent is None:
            raise KalaError(f"{INIT_ERROR}: parent job {parent_id!r} not found")
        parents.append(parent)
    expression = fields.get("schedule") or ""
    epsilon_text = fields.get("epsilon") or ""
    schedule: dict[str, Any] | None = None
    legacy: dict[str, Any] = {"name": name, "epsilon": epsilon_text}
    if expression:
        # Shown back as sent; a child's is never parsed (it never runs alone).
        legacy["schedule"] = expression
    if expression and not parents:
        if not may(user, ADD_SCHEDULE):
            raise KalaDenied(SCHEDULE_DENIED)
        now = timezone.now()
        legacy["expression"] = parse_schedule(expression, now)
        schedule = {
            "kind": Schedule.Kind.INTERVAL,
            "expression": legacy["expression"],
            "timezone": "UTC",
            "epsilon": epsilon(epsilon_text, now) if epsilon_text else None,
        }
    if not command.strip():
        legacy["command"] = command
    app = services.app_get_or_create(
        name=settings.KARMCHARI_COMPAT_APP,
        description="Karmchari and Kala jobs.",
        creator=user,
    )
    if not may_see(user, app):
        raise KalaDenied
    # Any Go uint (decode refused the rest); beyond what Karmchari makes, kept as
    # sent (a decimal string: JSON numbers beyond 64 bits are not safe everywhere).
    retries = fields.get("retries") or 0
    if retries > RETRIES_LIMIT:
        legacy["retries"] = str(retries)
    try:
        return services.job_create_scheduled(
            app=app,
            name=_free_name(app, name),
            kind=Job.Kind.SHELL,
            spec={"command": command if command.strip() else BLANK_COMMAND},
            schedule=schedule,
            run_now=not expression and not parents,
            enabled=not fields.get("disabled"),
            owner=fields.get("owner") or "",
            max_retries=min(retries, RETRIES_LIMIT),
            # Kala retries back to back.
            retry_backoff=0,
            parents=parents,
            legacy={"kala": legacy},
            description="Created through the Kala API.",
        )
    except (SpecError, schedules.ScheduleError, services.ServiceError) as exc:
        raise KalaError(f"{INIT_ERROR}: {exc}") from None


View = Callable[..., HttpResponse]


def _route(**methods: View) -> View:
    allowed = ", ".join(sorted(methods))

    @csrf_exempt
    @reads_raw_body
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        handler = methods.get(request.method or "")
        if handler is None:
            response = empty(405)
            response["Allow"] = allowed
            return response
        verdict = authorize(request, "kala")
        if not verdict.allowed:
            response = plain(verdict.message + "\n", verdict.status)
            if verdict.status == 401:
                response["WWW-Authenticate"] = REALM
            return response
        return handler(request, verdict.user, **kwargs)

    return view


def _list(request: HttpRequest, user: Any) -> HttpResponse:
    jobs = sorted(kala_jobs(user), key=lambda job: str(job.uid))
    history = runs([job.pk for job in jobs], JOB_STATS_LIMIT)
    return go_json(
        {"jobs": {str(job.uid): job_json(job, history[job.pk]) for job in jobs}}
    )


def _create(request: HttpRequest, user: Any) -> HttpResponse:
    try:
        job = create(decode(request.body), user)
    except KalaError as exc:
        return plain(f"{exc}\n", 400)
    except KalaDenied as exc:
        return plain(f"{str(exc) or DENIED}\n", 403)
    return go_json({"id": str(job.uid)}, status=201)


def _detail(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    job = find(job_id, user)
    if job is None:
        return empty(404)
    return go_json({"job": job_json(job, runs([job.pk], JOB_STATS_LIMIT)[job.pk])})


def _delete(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    job = find(job_id, user)
    if job is None:
        return empty(404)
    services.job_delete(job=job, user=user)
    return empty(204)


def _job_stats(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    job = find(job_id, user)
    if job is None:
        return empty(404)
    history = runs([job.pk], STATS_LIMIT)[job.pk]
    return go_json({"job_stats": [stat(job, e) for e in history] or None})


def _start(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    job = find(job_id, user)
    if job is None:
        return empty(404)
    if job.enabled:  # Kala answers 204 for a disabled job and runs nothing
        services.job_trigger(job=job, trigger=Execution.Trigger.COMPAT)
        _restart_schedule(job, timezone.now())
    return empty(204)


def _restart_schedule(job: Job, now: datetime) -> None:
    """Kala waits one interval from the last attempted run (compat-spec §2.4): after
    a manual start, the schedule Kala's create made is re-anchored at this run
    (`R<runs left - 1>/<now + interval>/<interval>`), keeping the runs it had left.
    Not before its first slot (Kala waits for the start), nor for a schedule edited
    natively since (its grid is the operator's)."""
    kept = job.legacy.get("kala", {})
    schedule = min(job.schedules.all(), key=lambda s: s.pk, default=None)
    if (
        schedule is None
        or not schedule.enabled
        or schedule.next_run_at is None
        or kept.get("expression") != schedule.expression
    ):
        return
    parsed = schedules.parse(schedule.kind, schedule.expression, schedule.timezone)
    second = parsed.occurrence(1) if isinstance(parsed, IntervalSchedule) else None
    if not isinstance(parsed, IntervalSchedule) or second is None:
        return
    if parsed.start > now:
        return
    # Kala's intervals are stored as elapsed time: slot k is start + k * interval.
    interval = second - parsed.start
    upcoming = (schedule.next_run_at - parsed.start) // interval
    repeat = "R"
    if parsed.repetitions is not None:
        repeat = f"R{max(parsed.repetitions - upcoming, 0)}"
    expression = f"{repeat}/{go_time(now + interval)}/{parsed.period}"
    services.schedule_update(schedule=schedule, expression=expression)
    # So the Kala API still shows the schedule as the client sent it.
    legacy = {**job.legacy, "kala": {**kept, "expression": expression}}
    services.job_update(job=job, legacy=legacy)


def _set_enabled(user: Any, job_id: str, enabled: bool) -> HttpResponse:
    job = find(job_id, user)
    if job is None:
        return empty(404)
    if user is not None and not may_change_jobs(user, [job]):
        return plain(f"{SHELL_DENIED}\n", 403)
    services.job_update(job=job, enabled=enabled)
    return empty(204)


def _enable(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    return _set_enabled(user, job_id, True)


def _disable(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    return _set_enabled(user, job_id, False)


def _app_stats(request: HttpRequest, user: Any) -> HttpResponse:
    jobs = kala_jobs(user)
    totals = jobs.aggregate(
        success=Sum("success_count"),
        errors=Sum("error_count"),
        last=Max("last_attempted_at"),
    )
    count = jobs.count()
    active = jobs.filter(enabled=True).count()
    upcoming = Schedule.objects.filter(
        Q(job__in=jobs.filter(enabled=True)), enabled=True
    ).aggregate(next=Min("next_run_at"))["next"]
    now = timezone.now()
    figures = {
        "active_jobs": active,
        "disabled_jobs": count - active,
        "jobs": count,
        "error_count": totals["errors"] or 0,
        "success_count": totals["success"] or 0,
        "next_run_at": go_time(upcoming),
        "last_attempted_run": go_time(totals["last"]),
        "created": go_time(now),
    }
    readme = {
        "ActiveJobs": figures["active_jobs"],
        "DisabledJobs": figures["disabled_jobs"],
        "Jobs": figures["jobs"],
        "ErrorCount": figures["error_count"],
        "SuccessCount": figures["success_count"],
        "NextRunAt": figures["next_run_at"],
        "LastAttemptedRun": figures["last_attempted_run"],
        "CreatedAt": figures["created"],
    }
    return go_json({"Stats": {**figures, **readme}})


jobs_view = _route(GET=_list, POST=_create)
job_view = _route(GET=_detail, DELETE=_delete)
job_stats_view = _route(GET=_job_stats)
start_view = _route(POST=_start)
enable_view = _route(POST=_enable)
disable_view = _route(POST=_disable)
stats_view = _route(GET=_app_stats)
