"""Who may call a compatibility API.

By default the compat routes need the same credentials as the native API (token,
session or HTTP basic, so `curl -u user:password` works) and Django model
permissions. KARMCHARI_COMPAT_OPEN lists the APIs served to anonymous legacy clients
on a trusted network; compat/checks.py warns while any is open. Writes that /api/
guards with a permission of their own (an app, a schedule) check it in the route
that makes them (`may`).

Per-app access (KARMCHARI_PER_APP_ACCESS, jobs/access.py) applies to authenticated
callers as in the native API: they see and act only on jobs of their apps, and the
rest answers as the original answers for a missing job. An anonymous caller of an
open API is trusted by configuration and sees every app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework.settings import api_settings

from jobs import access
from jobs.models import App
from jobs.permissions import can_manage_shell_jobs

M = TypeVar("M", bound=Model)

# Reading needs to see jobs and runs; anything else is running and editing them.
READ_PERMISSIONS = ("jobs.view_job", "jobs.view_execution")
WRITE_PERMISSIONS = (
    "jobs.add_job",
    "jobs.change_job",
    "jobs.delete_job",
    "jobs.add_execution",
    "jobs.change_execution",
)
# Writes beyond a job operator's, checked by the routes that make them, as /api/
# checks them: a JobStreamer app, and a schedule (JobStreamer's schedule routes, a
# Kala job created with one).
ADD_APP = "jobs.add_app"
CHANGE_APP = "jobs.change_app"
ADD_SCHEDULE = "jobs.add_schedule"
CHANGE_SCHEDULE = "jobs.change_schedule"
DELETE_SCHEDULE = "jobs.delete_schedule"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
DENIED = "You do not have permission to perform this action."
REALM = 'Basic realm="Karmchari"'


@dataclass(frozen=True)
class Verdict:
    """Either a user (None when anonymous on an open API) or a refusal."""

    user: Any = None
    status: int = 200
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


def is_open(api: str) -> bool:
    return api in settings.KARMCHARI_COMPAT_OPEN


def _authenticate(request: HttpRequest) -> Any:
    """The user from the native API's authenticators (may raise APIException)."""
    classes = cast(
        "list[type[BaseAuthentication]]", api_settings.DEFAULT_AUTHENTICATION_CLASSES
    )
    authenticators = [cls() for cls in classes]
    user = Request(request, authenticators=authenticators).user
    return user if user is not None and user.is_authenticated else None


def authorize(request: HttpRequest, api: str) -> Verdict:
    if is_open(api):
        try:
            return Verdict(user=_authenticate(request))
        except exceptions.APIException:
            return Verdict()
    try:
        user = _authenticate(request)
    except exceptions.AuthenticationFailed as exc:
        return Verdict(status=401, message=str(exc.detail))
    except exceptions.APIException as exc:  # e.g. CSRF refused for a session
        return Verdict(status=403, message=str(exc.detail))
    if user is None:
        return Verdict(
            status=401, message="Authentication credentials were not provided."
        )
    needed = READ_PERMISSIONS if request.method in SAFE_METHODS else WRITE_PERMISSIONS
    if not user.has_perms(needed):
        return Verdict(status=403, message=DENIED)
    return Verdict(user=user)


def may(user: Any, permission: str) -> bool:
    """Whether the caller has this model permission (anonymous on an open API is
    trusted by configuration)."""
    return user is None or bool(user.has_perm(permission))


def restrict(queryset: QuerySet[M], user: Any, path: str) -> QuerySet[M]:
    """What the caller of a compat route may see: per-app access for a user, all of
    it for None (anonymous on an open API)."""
    return queryset if user is None else access.restrict(queryset, user, path)


def may_manage_shell(user: Any) -> bool:
    """Shell jobs run any command on the workers: the native API's rule, for the
    compat routes that create them (anonymous on an open API is trusted)."""
    return user is None or can_manage_shell_jobs(user)


def may_see(user: Any, app: App | None) -> bool:
    return user is None or access.may_see(user, app)
