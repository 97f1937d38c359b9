from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.permissions import DjangoModelPermissions
from rest_framework.request import Request


class ModelPermissions(DjangoModelPermissions):
    """Django model permissions, reads included, with per-action overrides.

    A viewset may set `action_permissions = {"run": ["jobs.add_execution"]}` for verbs
    whose permission is not the model's add/change/delete. Such a verb also needs
    the model's view permission: it acts on a row the caller must be able to read,
    and answers with it.
    """

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request: Request, view: Any) -> bool:
        required = getattr(view, "action_permissions", {}).get(
            getattr(view, "action", None)
        )
        if required is None:
            return super().has_permission(request, view)
        user = request.user
        if not (user and user.is_authenticated):
            return False
        model = self._queryset(view).model
        reading = self.get_required_permissions("GET", model)
        return bool(user.has_perms([*required, *reading]))


SHELL_PERMISSION = "jobs.manage_shell_job"


SHELL_DENIED = (
    "Creating or editing shell jobs needs the 'jobs.manage_shell_job' permission."
)


def can_manage_shell_jobs(user: Any) -> bool:
    """Creating or editing a shell job (which runs any command on the workers)."""
    return bool(user and user.is_authenticated and user.has_perm(SHELL_PERMISSION))


def may_change_jobs(user: Any, jobs: Iterable[Any]) -> bool:
    """Whether `user` may change these jobs at all (enable, disable, link them as
    children): not a shell job among them without jobs.manage_shell_job."""
    return can_manage_shell_jobs(user) or all(job.kind != "shell" for job in jobs)
