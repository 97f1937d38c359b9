"""The original Karmchari's API (seeds 000/001; compat-spec.md §1).

`POST /registerJob` (type), `POST /jobState` (id, command), `GET /jobState?id=`, with
the original's plain-text bodies, byte for byte and without a trailing newline.

A registered job is an execution of the app's job for that type (`karmchari-upload`,
`karmchari-export`, `karmchari-teams` in KARMCHARI_COMPAT_APP), created external by
default, tagged with a 32-character md5 id. An operator may turn such a job into a
shell job: /registerJob then starts a real process on a worker, and /jobState pauses,
resumes and kills it through the control bus.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from compat.security import DENIED, REALM, authorize, may_see, restrict
from jobs import services
from jobs.models import Execution, Job

logger = logging.getLogger(__name__)

TYPES = ("upload", "export", "teams")
COMMANDS = ("start", "pause", "kill")
JOB_PREFIX = "karmchari-"
# Karmchari's states are the last command given; ours is the desired state.
_STATE = {
    Execution.DesiredState.RUN: "start",
    Execution.DesiredState.PAUSE: "pause",
    Execution.DesiredState.KILL: "kill",
}


def text(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


def _not_allowed(allowed: str) -> HttpResponse:
    # Go's mux: 405, empty body, no Content-Type.
    response = HttpResponse(b"", status=405)
    del response["Content-Type"]
    response["Allow"] = allowed
    return response


def form_value(request: HttpRequest, key: str) -> str:
    """Go's r.FormValue: the first value, form body before query string."""
    values = [*request.POST.getlist(key), *request.GET.getlist(key)]
    return values[0] if values else ""


# A '%' not followed by two hex digits: Go's url.QueryUnescape refuses it.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def go_query(raw: str) -> dict[str, list[str]]:
    """Go's url.ParseQuery, as r.URL.Query() uses it: a pair whose key or value has
    a malformed percent-escape (`id=%zz`) is dropped, the other pairs are kept.
    (Django's QueryDict keeps `%zz` as the literal value instead.)"""
    values: dict[str, list[str]] = {}
    for pair in raw.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if _BAD_ESCAPE.search(key) or _BAD_ESCAPE.search(value):
            continue
        values.setdefault(unquote_plus(key), []).append(unquote_plus(value))
    return values


def new_id() -> str:
    """Opaque, 32 lowercase hex characters, like md5(time.Now().String())."""
    seed = f"{time.time_ns()} {uuid.uuid4()}"
    return hashlib.md5(seed.encode(), usedforsecurity=False).hexdigest()


def _guarded(
    view: Callable[[HttpRequest, Any], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Authorised per KARMCHARI_COMPAT_OPEN (the routes are CSRF-exempt: old clients
    send no token; a session-authenticated write is still CSRF-checked by DRF)."""

    def wrapped(request: HttpRequest) -> HttpResponse:
        verdict = authorize(request, "karmchari")
        if not verdict.allowed:
            response = text(verdict.message, status=verdict.status)
            if verdict.status == 401:
                response["WWW-Authenticate"] = REALM
            return response
        return view(request, verdict.user)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _execution(external_id: str, user: Any) -> Execution | None:
    """The run of this id, if the caller may see its app (per-app access)."""
    if not external_id:
        return None
    executions = restrict(Execution.objects.select_related("job"), user, "job__app")
    return executions.filter(external_id=external_id).order_by("-pk").first()


@csrf_exempt
def register_job(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _not_allowed("POST")
    return _register(request)


@_guarded
def _register(request: HttpRequest, user: Any) -> HttpResponse:
    kind = form_value(request, "type")
    if not kind:
        return text("Type is required", 400)
    if kind not in TYPES:
        return text("Type is invalid", 400)
    app = services.app_get_or_create(
        name=settings.KARMCHARI_COMPAT_APP,
        description="Karmchari and Kala jobs.",
        creator=user,
    )
    if not may_see(user, app):
        return text(DENIED, 403)
    job = services.job_get_or_create(
        app=app,
        name=f"{JOB_PREFIX}{kind}",
        kind=Job.Kind.EXTERNAL,
        spec={},
        description=f"Karmchari jobs of type {kind!r} (POST /registerJob).",
    )
    external_id = new_id()
    try:
        services.job_trigger_tagged(job=job, external_id=external_id)
    except services.ServiceError as exc:
        logger.warning("registerJob type=%s: %s", kind, exc)
        return text("Failed to write job", 500)
    return text(f"Created! id = {external_id}")


@csrf_exempt
def job_state(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _update(request)
    if request.method == "GET":
        return _read(request)
    return _not_allowed("GET, POST")


@_guarded
def _update(request: HttpRequest, user: Any) -> HttpResponse:
    external_id = form_value(request, "id")
    if not external_id:
        return text("ID is required", 400)
    command = form_value(request, "command")
    if not command:
        return text("Command is required", 400)
    if command not in COMMANDS:
        # The original stored the bogus state anyway; we leave it unchanged.
        return text("Command is invalid", 400)
    execution = _execution(external_id, user)
    if execution is None:
        # The original made a phantom record here; we do not.
        return text("Job not available", 400)
    try:
        apply_command(execution=execution, command=command, user=user)
    except services.ServiceError as exc:
        return text(str(exc), 409)
    return text(f"{external_id} -- {command}")


def apply_command(*, execution: Execution, command: str, user: Any) -> None:
    """start/pause/kill as control-bus actions; repeating the current state is a
    no-op, as in the original."""
    desired = execution.desired_state
    if _STATE[Execution.DesiredState(desired)] == command:
        return
    if command == "start":
        if desired == Execution.DesiredState.KILL:
            raise services.Conflict(
                "Job was killed; register a new job to start again."
            )
        services.execution_control(execution=execution, action="resume", user=user)
        return
    services.execution_control(execution=execution, action=command, user=user)


@_guarded
def _read(request: HttpRequest, user: Any) -> HttpResponse:
    # Only the query string, parsed as Go parses it (compat-spec §1.2).
    values = go_query(request.META.get("QUERY_STRING", "")).get("id")
    if not values:
        return text("ID is required", 400)
    external_id = values[0]
    execution = _execution(external_id, user)
    if execution is None:
        return text("Job not available", 400)
    state = _STATE[Execution.DesiredState(execution.desired_state)]
    return text(f"{external_id} -- {state}")
