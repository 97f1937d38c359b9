"""Apps: creating and changing them, and who may see them (per-app access)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from jobs import access
from jobs.models import App
from jobs.services.base import Gone
from jobs.stats import stats_forget


def app_create(
    *,
    name: str,
    description: str = "",
    meta: dict[str, Any] | None = None,
    users: Iterable[Any] | None = None,
    groups: Iterable[Any] | None = None,
    creator: Any = None,
    **fields: Any,
) -> App:
    """A new app, granted to `users` and `groups` (per-app access), and to its
    `creator` when per-app access would otherwise hide it from them."""
    with transaction.atomic():
        app = App.objects.create(
            name=name, description=description, meta=meta or {}, **fields
        )
        app_set_access(app=app, users=users, groups=groups)
        if creator is not None:
            app_grant_creator(app=app, user=creator)
    return app


def app_update(
    *,
    app: App,
    users: Iterable[Any] | None = None,
    groups: Iterable[Any] | None = None,
    **fields: Any,
) -> App:
    for name, value in fields.items():
        setattr(app, name, value)
    with transaction.atomic():
        # Its row, locked until this commits: an app deleted meanwhile is a 404 (a
        # save would find no row, and its grants no app).
        if not App.objects.select_for_update().filter(pk=app.pk).exists():
            raise Gone(f"App {app.name!r} was deleted meanwhile.")
        app.save(update_fields=list(fields))
        app_set_access(app=app, users=users, groups=groups)
        stats_forget(job_id=None)  # the apps' figures carry their names
    return app


def app_set_access(
    *, app: App, users: Iterable[Any] | None, groups: Iterable[Any] | None
) -> App:
    """Who sees the app with per-app access on; None leaves that side unchanged."""
    if users is not None:
        app.users.set(users)
    if groups is not None:
        app.groups.set(groups)
    return app


def app_grant_creator(*, app: App, user: Any) -> App:
    """Grants a new app to the user who made it, if per-app access would hide it
    from them (they could not see what they just made)."""
    if user is not None and user.is_authenticated and access.is_restricted(user):
        app.users.add(user)
    return app
