"""Kala's JSON API under /api/v1/ (seed 003; compat-spec.md §2).

Kala jobs are shell jobs in KARMCHARI_COMPAT_APP; their Kala id is Job.uid. What Kala
keeps and Karmchari has no field for (the free-text name, an epsilon without a
schedule) lives in Job.legacy["kala"]. Responses are Go's: compact JSON ending in a
newline, Go time strings (zero time for "never"), the original's field order, plus the
seed README's spellings wherever an object can carry both.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import isodate
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import F, Max, Min, Prefetch, Q, QuerySet, Sum, Window
from django.db.models.functions import RowNumber
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.csrf import csrf_exempt

from compat.security import (
    ADD_SCHEDULE,
    DENIED,
    REALM,
    authorize,
    may,
    may_manage_shell,
    may_see,
    restrict,
)
from jobs import schedules, services
from jobs.models import App, Execution, Job, Schedule, slug_validator
from jobs.permissions import SHELL_DENIED, may_change_jobs
from jobs.runners import SpecError
from karmchari_site.text import unstorable_path

logger = logging.getLogger(__name__)

GO_ZERO = "0001-01-01T00:00:00Z"
CONTENT_TYPE = "application/json;charset=UTF-8"
MAX_BODY = 1 << 20
INIT_ERROR = "Error occured when initializing the job"  # sic: Kala's spelling
# Stats kept per job in a job object, and answered by /job/stats/{id}/.
JOB_STATS_LIMIT = 100
STATS_LIMIT = 1000
_START = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)?", re.ASCII
)
_STRINGS = ("name", "id", "command", "owner", "schedule", "epsilon")
_RAN = [
    s for s in Execution.FINAL_STATUSES if s != Execution.Status.SKIPPED
]  # skipped slots are not runs: no null stats


SCHEDULE_DENIED = (
    "Creating a job with a schedule needs the 'jobs.add_schedule' permission."
)


class KalaError(Exception):
    """A bad request: 400 with this text/plain body."""


class KalaDenied(Exception):
    """Per-app access hides the Kala app from the caller: 403, as the route answers
    a caller without the permission."""


# --- Encoding ---------------------------------------------------------------------


def go_time(value: datetime | None) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros trimmed, in UTC."""
    if value is None:
        return GO_ZERO
    moment = value.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def go_json(data: Any, status: int = 200) -> HttpResponse:
    """json.NewEncoder: compact, HTML characters escaped, a final newline."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    body = body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return HttpResponse(body + "\n", status=status, content_type=CONTENT_TYPE)


def _plain(body: str, status: int) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


def _empty(status: int) -> HttpResponse:
    response = HttpResponse(b"", status=status)
    del response["Content-Type"]
    return response


def _epsilon_text(job: Job, schedule: Schedule | None) -> str:
    kept = job.legacy.get("kala", {}).get("epsilon")
    if isinstance(kept, str):
        return kept
    if schedule is not None and schedule.epsilon is not None:
        return str(isodate.duration_isoformat(schedule.epsilon))
    return ""


def _stat(job: Job, execution: Execution) -> dict[str, Any]:
    ran_at = go_time(execution.started_at or execution.created)
    retries = execution.attempt - 1
    success = execution.status == Execution.Status.SUCCEEDED
    nanos = round((execution.duration or 0.0) * 1e9)
    uid = str(job.uid)
    return {
        "job_id": uid,
        "ran_at": ran_at,
        "number_of_retries": retries,
        "success": success,
        "execution_duration": nanos,
        # The seed README's spelling.
        "JobId": uid,
        "RanAt": ran_at,
        "NumberOfRetries": retries,
        "Success": success,
        "ExecutionDuration": nanos,
    }


def runs(job_ids: list[int], limit: int) -> dict[int, list[Execution]]:
    """Each job's latest `limit` finished runs, oldest first, in one query. A run is
    its last attempt (an execution nobody retried); attempt - 1 is its retries."""
    if not job_ids:
        return {}
    ranked = (
        Execution.objects.filter(job_id__in=job_ids, status__in=_RAN)
        .filter(retries__isnull=True)
        .only(
            "job_id",
            "attempt",
            "status",
            "created",
            "started_at",
            "finished_at",
            "paused_seconds",
        )
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("job_id")], order_by=F("pk").desc()
            )
        )
        .filter(rank__lte=limit)
        .order_by("pk")
    )
    found: dict[int, list[Execution]] = {job_id: [] for job_id in job_ids}
    for execution in ranked:
        found[execution.job_id].append(execution)
    return found


def job_json(job: Job, history: list[Execution]) -> dict[str, Any]:
    """A job as Kala shows it. Needs `schedules`, `parents` and `children`
    prefetched, or costs three queries."""
    schedule = min(job.schedules.all(), key=lambda s: s.pk, default=None)
    next_run = (
        schedule.next_run_at if schedule is not None and schedule.enabled else None
    )
    metadata = {
        "success_count": job.success_count,
        "last_success": go_time(job.last_success_at),
        "error_count": job.error_count,
        "last_error": go_time(job.last_error_at),
        "last_attempted_run": go_time(job.last_attempted_at),
    }
    children = sorted(job.children.all(), key=lambda j: j.pk)
    parents = sorted(job.parents.all(), key=lambda j: j.pk)
    return {
        "name": job.legacy.get("kala", {}).get("name", job.name),
        "id": str(job.uid),
        "command": str(job.spec.get("command", "")),
        "owner": job.owner,
        "disabled": not job.enabled,
        "dependent_jobs": [str(c.uid) for c in children] or None,
        "parent_jobs": [str(p.uid) for p in parents] or None,
        "schedule": schedule.expression
        if schedule is not None
        else str(job.legacy.get("kala", {}).get("schedule", "")),
        "retries": job.max_retries,
        "epsilon": _epsilon_text(job, schedule),
        # Flat, as the seed README shows them; nested below, as Kala sends them.
        **metadata,
        "next_run_at": go_time(next_run),
        "metadata": metadata,
        "stats": [_stat(job, e) for e in history] or None,
    }


def kala_jobs(user: Any) -> QuerySet[Job]:
    """Kala's jobs, and their parents and children, as far as the caller may see
    them (per-app access)."""
    related = restrict(Job.objects.all(), user, "app")
    jobs = Job.objects.filter(
        app__name=settings.KARMCHARI_COMPAT_APP, kind=Job.Kind.SHELL
    ).prefetch_related(
        "schedules",
        Prefetch("parents", queryset=related),
        Prefetch("children", queryset=related),
    )
    return restrict(jobs, user, "app")


def _find(job_id: str, user: Any) -> Job | None:
    try:
        uid = uuid.UUID(job_id)
    except ValueError:
        return None
    return kala_jobs(user).filter(uid=uid).first()


# --- Decoding a job -------------------------------------------------------------------


def decode(body: bytes) -> dict[str, Any]:
    """Go's json.Unmarshal into Kala's Job: keys case-insensitive, unknown keys
    ignored, wrong JSON types refused, null leaves the zero value."""
    if len(body) > MAX_BODY:
        raise KalaError("http: request body too large")
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise KalaError(f"invalid JSON: {exc}") from None
    if found := unstorable_path(data):
        raise KalaError(f"invalid JSON: {found[1]}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KalaError(
            f"json: cannot unmarshal {type(data).__name__} into Go value of type "
            "job.Job"
        )
    fields = {str(key).lower(): value for key, value in data.items()}
    for key in _STRINGS:
        if fields.get(key) is not None and not isinstance(fields[key], str):
            raise KalaError(f"json: field {key!r} must be a string")
    disabled = fields.get("disabled")
    if disabled is not None and not isinstance(disabled, bool):
        raise KalaError("json: field 'disabled' must be a boolean")
    retries = fields.get("retries")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
    ):
        raise KalaError("json: field 'retries' must be a non-negative integer")
    for key in ("parent_jobs", "dependent_jobs"):
        items = fields.get(key)
        if items is not None and (
            not isinstance(items, list) or not all(isinstance(i, str) for i in items)
        ):
            raise KalaError(f"json: field {key!r} must be a list of strings")
    for key in ("metadata",):
        if fields.get(key) is not None and not isinstance(fields[key], dict):
            raise KalaError(f"json: field {key!r} must be an object")
    return fields


def _duration(text: str, what: str) -> timedelta:
    try:
        value = isodate.parse_duration(text)
        if isinstance(value, isodate.Duration):
            value = value.totimedelta(start=timezone.now())
    # Years past 9999 (P99999Y), or more days than a timedelta holds.
    except (isodate.ISO8601Error, ValueError, TypeError, OverflowError):
        raise KalaError(f"{INIT_ERROR}: bad {what} {text!r}") from None
    if not isinstance(value, timedelta):
        raise KalaError(f"{INIT_ERROR}: bad {what} {text!r}")
    if value < timedelta(0):
        raise KalaError(f"{INIT_ERROR}: {what} {text!r} is negative")
    return value


def _check_schedule(expression: str, now: datetime) -> None:
    """Kala's own checks, before Karmchari's parser (which is more lenient): three
    parts, R first, a full date-time start (no date alone), not in the past."""
    parts = expression.split("/")
    if len(parts) != 3:
        raise KalaError(f"{INIT_ERROR}: schedule must be R[n]/<start>/<interval>")
    if not parts[0].startswith("R"):
        raise KalaError(f"{INIT_ERROR}: the repeat part must start with R")
    if not _START.fullmatch(parts[1]):
        raise KalaError(
            f"{INIT_ERROR}: bad start {parts[1]!r} (RFC 3339, e.g. "
            "2030-06-04T19:25:16Z)"
        )
    try:
        start = schedules.start(expression, "UTC")
    except schedules.ScheduleError as exc:
        raise KalaError(f"{INIT_ERROR}: {exc}") from None
    if start <= now:
        raise KalaError(f"{INIT_ERROR}: Schedule time has passed.")


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
        parent = _find(parent_id, user)
        if parent is None:
            raise KalaError(f"{INIT_ERROR}: parent job {parent_id!r} not found")
        parents.append(parent)
    expression = fields.get("schedule") or ""
    epsilon_text = fields.get("epsilon") or ""
    schedule: dict[str, Any] | None = None
    if expression and not parents:
        # A child's schedule is ignored: it runs after its parents, never alone.
        if not may(user, ADD_SCHEDULE):
            raise KalaDenied(SCHEDULE_DENIED)
        _check_schedule(expression, timezone.now())
        schedule = {
            "kind": Schedule.Kind.INTERVAL,
            "expression": expression,
            "timezone": "UTC",
            "epsilon": _duration(epsilon_text, "epsilon") if epsilon_text else None,
        }
    app = services.app_get_or_create(
        name=settings.KARMCHARI_COMPAT_APP,
        description="Karmchari and Kala jobs.",
        creator=user,
    )
    if not may_see(user, app):
        raise KalaDenied
    legacy = {"kala": {"name": name, "epsilon": epsilon_text}}
    if parents and expression:
        # Kala keeps a child's schedule as sent (never parsed) and shows it back.
        legacy["kala"]["schedule"] = expression
    retries = fields.get("retries") or 0
    if retries > 32767:
        raise KalaError(f"{INIT_ERROR}: retries must be at most 32767")
    try:
        return services.job_create_scheduled(
            app=app,
            name=_free_name(app, name),
            kind=Job.Kind.SHELL,
            spec={"command": command},
            schedule=schedule,
            run_now=not expression and not parents,
            enabled=not fields.get("disabled"),
            owner=fields.get("owner") or "",
            max_retries=retries,
            # Kala retries back to back.
            retry_backoff=0,
            parents=parents,
            legacy=legacy,
            description="Created through the Kala API.",
        )
    except (SpecError, schedules.ScheduleError, services.ServiceError) as exc:
        raise KalaError(f"{INIT_ERROR}: {exc}") from None


# --- Views ------------------------------------------------------------------------


View = Callable[..., HttpResponse]


def _route(**methods: View) -> View:
    allowed = ", ".join(sorted(methods))

    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        handler = methods.get(request.method or "")
        if handler is None:
            response = _empty(405)
            response["Allow"] = allowed
            return response
        verdict = authorize(request, "kala")
        if not verdict.allowed:
            response = _plain(verdict.message + "\n", verdict.status)
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
        return _plain(f"{exc}\n", 400)
    except KalaDenied as exc:
        return _plain(f"{str(exc) or DENIED}\n", 403)
    return go_json({"id": str(job.uid)}, status=201)


def _detail(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    job = _find(job_id, user)
    if job is None:
        return _empty(404)
    return go_json({"job": job_json(job, runs([job.pk], JOB_STATS_LIMIT)[job.pk])})


def _delete(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    job = _find(job_id, user)
    if job is None:
        return _empty(404)
    services.job_delete(job=job, user=user)
    return _empty(204)


def _job_stats(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    job = _find(job_id, user)
    if job is None:
        return _empty(404)
    history = runs([job.pk], STATS_LIMIT)[job.pk]
    return go_json({"job_stats": [_stat(job, e) for e in history] or None})


def _start(request: HttpRequest, user: Any, job_id: str) -> HttpResponse:
    job = _find(job_id, user)
    if job is None:
        return _empty(404)
    if job.enabled:  # Kala answers 204 for a disabled job and runs nothing
        services.job_trigger(job=job, trigger=Execution.Trigger.COMPAT)
    return _empty(204)


def _set_enabled(user: Any, job_id: str, enabled: bool) -> HttpResponse:
    job = _find(job_id, user)
    if job is None:
        return _empty(404)
    if user is not None and not may_change_jobs(user, [job]):
        return _plain(f"{SHELL_DENIED}\n", 403)
    services.job_update(job=job, enabled=enabled)
    return _empty(204)


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
