"""Per-app access: which apps a user sees and acts on.

With KARMCHARI_PER_APP_ACCESS off (the default), model permissions alone decide, over
every app. On, a user sees only the apps granted to them (App.users) or to one of
their groups (App.groups), unless a superuser or holding jobs.access_all_apps.

The API, the admin and the compatibility routes all narrow their querysets here, so
the rule has one place. Rows of other apps are filtered out, never refused: they
answer as missing (404, "does not exist"), so their existence does not leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from django.conf import settings
from django.db.models import Model, Q, QuerySet

from jobs.models import App, Execution, Job, Schedule

M = TypeVar("M", bound=Model)

ACCESS_ALL_APPS = "jobs.access_all_apps"

# The path from each model to its app, as restrict() takes it.
APP_PATHS: dict[type[Model], str] = {
    App: "",
    Job: "app",
    Schedule: "job__app",
    Execution: "job__app",
}


def is_restricted(user: Any) -> bool:
    """Whether per-app access narrows what `user` sees. None and anonymous users
    are restricted (to nothing) while it is on. has_perm caches the user's
    permissions on the object: the first call of a request costs the queries."""
    if not settings.KARMCHARI_PER_APP_ACCESS:
        return False
    return user is None or not user.has_perm(ACCESS_ALL_APPS)


def _granted(user: Any) -> QuerySet[App, Any]:
    """Ids of the apps granted to the user or to their groups, as a subquery (its
    duplicates, one per matching grant, do not matter inside IN)."""
    if user is None or not user.is_authenticated:
        return App.objects.none().values("pk")
    return App.objects.filter(Q(users=user) | Q(groups__in=user.groups.all())).values(
        "pk"
    )


def condition(user: Any, path: str) -> Q:
    """A filter for rows whose app, at `path` ("" for App itself, "job__app" for an
    execution), the user may see; Q() (everything) when they see every app."""
    if not is_restricted(user):
        return Q()
    return Q(**{f"{path}__in" if path else "pk__in": _granted(user)})


def restrict(queryset: QuerySet[M], user: Any, path: str) -> QuerySet[M]:
    """`queryset` narrowed to the apps the user may see (unchanged when they see
    every app), e.g. restrict(Execution.objects.all(), user, "job__app")."""
    if not is_restricted(user):
        return queryset
    return queryset.filter(condition(user, path))


def apps_for(user: Any) -> QuerySet[App]:
    """The apps the user sees and acts on."""
    return restrict(App.objects.all(), user, "")


def scope(user: Any) -> QuerySet[App] | None:
    """The apps to compute figures over for this user, or None for every app (the
    cached figures)."""
    return apps_for(user) if is_restricted(user) else None


def visible(model: type[M], user: Any) -> QuerySet[M] | None:
    """All rows of `model` the user may see, for a form's choices; None when the
    user sees every app or the model belongs to none."""
    path = APP_PATHS.get(model)
    if path is None or not is_restricted(user):
        return None
    return restrict(model._default_manager.all(), user, path)


def may_see(user: Any, app: App | None) -> bool:
    if not is_restricted(user):
        return True
    return app is not None and apps_for(user).filter(pk=app.pk).exists()


def keep_hidden_links(
    user: Any, job: Job | None, chosen: Iterable[Job], side: str
) -> list[Job]:
    """`chosen` plus the job's current `side` ("parents" or "children") in apps
    hidden from the user, so that editing a job's dependencies never drops one the
    editor cannot see."""
    linked = list(chosen)
    if job is None or job.pk is None or not is_restricted(user):
        return linked
    return [*linked, *getattr(job, side).exclude(condition(user, "app"))]
