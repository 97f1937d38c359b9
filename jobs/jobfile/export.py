"""Exporting apps, jobs and schedules as a jobs-as-code document."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import yaml
from django.db.models import Prefetch

from jobs.jobfile.reading import (
    APP_FIELDS,
    FORMAT_VERSION,
    JOB_FIELDS,
    SCHEDULE_FIELDS,
    JobfileError,
)
from jobs.models import App, Job, JobSecret, Schedule
from jobs.runners import SECRET_MASK


def _default(model: type[Any], name: str) -> Any:
    return model._meta.get_field(name).get_default()


def _plain(name: str, value: Any) -> Any:
    """A model value as the file writes it."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _job_ref(job: Job, *, app_name: str | None) -> str:
    return job.name if job.app.name == app_name else f"{job.app.name}/{job.name}"


def _schedule_doc(schedule: Schedule) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name in SCHEDULE_FIELDS:
        value = getattr(schedule, name)
        if name in ("kind", "expression") or value != _default(Schedule, name):
            doc[name] = _plain(name, value)
    return doc


def _job_doc(job: Job) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name in JOB_FIELDS:
        value = getattr(job, name)
        if name == "spec":
            doc[name] = value
            secrets = sorted(secret.name for secret in job.secrets.all())
            if secrets:
                doc["secrets"] = dict.fromkeys(secrets, SECRET_MASK)
        elif value != _default(Job, name):
            doc[name] = _plain(name, value)
    parents = sorted(_job_ref(p, app_name=job.app.name) for p in job.parents.all())
    if parents:
        doc["parents"] = parents
    doc["schedules"] = [
        _schedule_doc(s) for s in sorted(job.schedules.all(), key=lambda s: s.pk)
    ]
    if not doc["schedules"]:
        del doc["schedules"]
    return doc


def jobfile_export(*, apps: Iterable[str] = ()) -> str:
    """YAML of the given apps (all when empty): apps, their jobs and schedules, and
    the names of their secrets (masked). JobfileError naming an app that does not
    exist (a typo would otherwise export nothing, quietly)."""
    queryset = App.objects.order_by("name").prefetch_related(
        "jobs__schedules",
        "jobs__parents__app",
        Prefetch("jobs__secrets", queryset=JobSecret.objects.only("job_id", "name")),
    )
    names = list(apps)
    if names:
        queryset = queryset.filter(name__in=names)
    found = list(queryset)
    missing = sorted(set(names) - {app.name for app in found})
    if missing:
        raise JobfileError([f"no app named {name!r}" for name in missing])
    document: dict[str, Any] = {"version": FORMAT_VERSION, "apps": {}}
    for app in found:
        app_doc: dict[str, Any] = {}
        for name in APP_FIELDS:
            value = getattr(app, name)
            if value != _default(App, name):
                app_doc[name] = value
        app_doc["jobs"] = {
            job.name: _job_doc(job)
            for job in sorted(app.jobs.all(), key=lambda j: j.name)
        }
        document["apps"][app.name] = app_doc
    return yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
