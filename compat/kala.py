"""Kala's JSON API under /api/v1/ (seed 003; compat-spec.md §2).

Kala jobs are shell jobs in KARMCHARI_COMPAT_APP; their Kala id is Job.uid. What Kala
keeps and Karmchari has no field for (the free-text name, the epsilon, the schedule
as sent beside the expression stored for it, a blank command) lives in
Job.legacy["kala"]. Schedules are read as Kala reads them (compat/kala_schedule.py).
Responses are Go's: compact JSON ending in a
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

from compat import kala_schedule
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
from jobs.schedules import IntervalSchedule
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
# Kala's ids are its map keys: only the exact spelling it gave out matches.
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A Go time.Time in JSON: RFC 3339, as time.Parse reads it.
_GO_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?"
    r"(?:Z|[+-](\d\d):(\d\d))",
    re.ASCII,
)
UINT64_MAX = 2**64 - 1
# Kala's command " " passed its Init (only "" is refused); run, it crashed Kala (no
# program to exec). A shell job needs a command, so such a job gets this one, which
# fails as an exec of nothing does; the Kala API still shows the command as sent.
BLANK_COMMAND = "exit 127"
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


# What Go's encoder escapes beyond JSON's minimum: HTML characters, and the line and
# paragraph separators (JavaScript cannot hold them raw in a string).
_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def go_json(data: Any, status: int = 200) -> HttpResponse:
    """json.NewEncoder: compact, HTML characters and U+2028/U+2029 escaped, a final
    newline."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES:
        body = body.replace(char, escaped)
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


def _schedule_text(job: Job, schedule: Schedule | None) -> str:
    """The schedule as the client sent it. Karmchari stores Kala's interval as the
    elapsed time it means (compat/kala_schedule.py); once the schedule is edited
    natively, the stored expression is what there is to show."""
    kept = job.legacy.get("kala", {})
    if schedule is None:
        # A child's schedule is kept as sent, never parsed (it never runs alone).
        return "" if "expression" in kept else str(kept.get("schedule", ""))
    if kept.get("expression") == schedule.expression:
        return str(kept.get("schedule", schedule.expression))
    return schedule.expression


def _command_text(job: Job) -> str:
    command = str(job.spec.get("command", ""))
    kept = job.legacy.get("kala", {}).get("command")
    return kept if isinstance(kept, str) and command == BLANK_COMMAND else command


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
        "command": _command_text(job),
        "owner": job.owner,
        "disabled": not job.enabled,
        "dependent_jobs": [str(c.uid) for c in children] or None,
        "parent_jobs": [str(p.uid) for p in parents] or None,
        "schedule": _schedule_text(job, schedule),
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
    """The job of this id, spelt exactly as Kala gave it out (lowercase, dashed):
    Kala's ids are map keys, so `{...}`, `urn:uuid:`, uppercase or undashed
    spellings of it are unknown ids."""
    if not _ID.fullmatch(job_id):
        return None
    return kala_jobs(user).filter(uid=uuid.UUID(job_id)).first()


# --- Decoding a job -------------------------------------------------------------------


# Go types of the fields Kala's Job struct decodes (and of its nested structs), as
# the checks below name them.
_JOB_FIELDS = {
    **dict.fromkeys(_STRINGS, "string"),
    "disabled": "bool",
    "retries": "uint",
    "next_run_at": "time",
}
_METADATA_FIELDS = {
    "success_count": "uint",
    "last_success": "time",
    "error_count": "uint",
    "last_error": "time",
    "last_attempted_run": "time",
}
_STAT_FIELDS = {
    "job_id": "string",
    "ran_at": "time",
    "number_of_retries": "uint",
    "success": "bool",
    "execution_duration": "int",
}
_TYPE_NAMES = {
    "string": "a string",
    "bool": "a boolean",
    "uint": "a non-negative integer",
    "int": "an integer",
    "time": "an RFC 3339 time",
}


def _go_time_ok(text: str) -> bool:
    """Go's time.Parse(time.RFC3339, text) would succeed."""
    match = _GO_TIME.fullmatch(text)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    offset_hour, offset_minute = (int(g or 0) for g in match.groups()[6:])
    return (
        1 <= month <= 12
        and 1 <= day <= kala_schedule.days_in_month(year, month)
        and hour < 24
        and minute < 60
        and second < 60
        and offset_hour < 24
        and offset_minute < 60
    )


def _go_type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "time":
        return isinstance(value, str) and _go_time_ok(value)
    # A JSON number with a fraction or an exponent is no Go integer: json gives a
    # float for those.
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    number: int = value
    if kind == "uint":
        return 0 <= number <= UINT64_MAX
    return kala_schedule.INT64_MIN <= number <= kala_schedule.INT64_MAX


def _check_struct(data: dict[str, Any], types: dict[str, str], where: str) -> None:
    """Go's decoder into a struct: null leaves a field's zero value, unknown keys
    are ignored, a value of the wrong JSON type is an error."""
    for key, value in data.items():
        kind = types.get(str(key).lower())
        if kind is not None and value is not None and not _go_type_ok(value, kind):
            raise KalaError(
                f"json: field {where + str(key).lower()!r} must be {_TYPE_NAMES[kind]}"
            )


def decode(body: bytes) -> dict[str, Any]:
    """Go's json.Unmarshal into Kala's Job: keys case-insensitive, unknown keys
    ignored, wrong JSON types refused (nested ones too), null leaves the zero
    value. UTF-8 only: a byte order mark is an invalid character, as in Go."""
    if len(body) > MAX_BODY:
        raise KalaError("http: request body too large")
    try:
        # From a str, json refuses a leading BOM (from bytes it would skip it).
        data = json.loads((body or b"null").decode())
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
    _check_struct(fields, _JOB_FIELDS, "")
    for key in ("parent_jobs", "dependent_jobs"):
        items = fields.get(key)
        if items is not None and (
            not isinstance(items, list) or not all(isinstance(i, str) for i in items)
        ):
            raise KalaError(f"json: field {key!r} must be a list of strings")
    metadata = fields.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise KalaError("json: field 'metadata' must be an object")
        _check_struct(metadata, _METADATA_FIELDS, "metadata.")
    stats = fields.get("stats")
    if stats is not None:
        if not isinstance(stats, list):
            raise KalaError("json: field 'stats' must be a list of stats")
        for index, stat in enumerate(stats):
            if stat is None:
                continue
            if not isinstance(stat, dict):
                raise KalaError(f"json: field 'stats[{index}]' must be an object")
            _check_struct(stat, _STAT_FIELDS, f"stats[{index}].")
    return fields


def _epsilon(text: str, now: datetime) -> timedelta:
    """Parsed as Kala parses an interval (`PT10X` is zero, accepted)."""
    try:
        return kala_schedule.duration(text, now)
    except kala_schedule.KalaScheduleError as exc:
        raise KalaError(f"{INIT_ERROR}: bad epsilon {text!r}: {exc}") from None


def _parse_schedule(expression: str, now: datetime) -> str:
    """Kala's reading of the schedule (compat/kala_schedule.py), then its checks of
    the start: a full date-time (no date alone), not in the past. Answers the
    Karmchari interval expression that fires on Kala's cadence."""
    try:
        parsed = kala_schedule.parse(expression, now)
    except kala_schedule.KalaScheduleError as exc:
        raise KalaError(f"{INIT_ERROR}: {exc}") from None
    if not _START.fullmatch(parsed.start):
        raise KalaError(
            f"{INIT_ERROR}: bad start {parsed.start!r} (RFC 3339, e.g. "
            "2030-06-04T19:25:16Z)"
        )
    try:
        start = schedules.start(parsed.expression, "UTC")
    except schedules.ScheduleError as exc:
        raise KalaError(f"{INIT_ERROR}: {exc}") from None
    if start <= now:
        raise KalaError(f"{INIT_ERROR}: Schedule time has passed.")
    return parsed.expression


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
    legacy: dict[str, Any] = {"name": name, "epsilon": epsilon_text}
    if expression:
        # Shown back as sent; a child's is never parsed (it never runs alone).
        legacy["schedule"] = expression
    if expression and not parents:
        if not may(user, ADD_SCHEDULE):
            raise KalaDenied(SCHEDULE_DENIED)
        now = timezone.now()
        legacy["expression"] = _parse_schedule(expression, now)
        schedule = {
            "kind": Schedule.Kind.INTERVAL,
            "expression": legacy["expression"],
            "timezone": "UTC",
            "epsilon": _epsilon(epsilon_text, now) if epsilon_text else None,
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
    retries = fields.get("retries") or 0
    if retries > 32767:
        raise KalaError(f"{INIT_ERROR}: retries must be at most 32767")
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
            max_retries=retries,
            # Kala retries back to back.
            retry_backoff=0,
            parents=parents,
            legacy={"kala": legacy},
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
        _restart_schedule(job, timezone.now())
    return _empty(204)


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
