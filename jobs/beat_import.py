"""Import django-celery-beat's PeriodicTask rows as Karmchari task jobs.

Each periodic task becomes a job of kind `task` (its Celery task name, args, kwargs
and queue) in one app, with one schedule: crontab -> cron in the crontab's time zone,
interval -> an ISO 8601 repeating interval, clocked -> a one-shot time. Solar
schedules (sunrise at a place) have no equivalent and are reported, not imported.

The result is a jobs-as-code document (see jobs.jobfile), so importing shows the same
diff, is idempotent, and can be written to YAML instead of applied. django-celery-beat
is imported only here, when the importer runs: Karmchari does not need it otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dj_database_url
from django.apps import apps
from django.conf import settings
from django.db import connections
from django.test.utils import override_settings
from django.utils import timezone

from jobs import schedules
from jobs.models import Job

BEAT_APP = "django_celery_beat"
# Interval schedules are anchored here unless the task has a start_time, so importing
# twice yields the same expression.
_ANCHOR = "2000-01-01T00:00:00Z"
_UNITS = (("H", 3600), ("M", 60), ("S", 1))


class BeatImportError(RuntimeError):
    """django-celery-beat cannot be read (not installed, no tables, bad URL)."""


@dataclass
class BeatImport:
    document: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    # Job name -> PeriodicTask primary key, to disable the source rows afterwards.
    sources: dict[str, int] = field(default_factory=dict)


@contextmanager
def beat_models(*, database_url: str | None = None) -> Iterator[str]:
    """Make django-celery-beat's models usable for the duration; yields the database
    alias to read them from (the default one, or `database_url`)."""
    try:
        import django_celery_beat  # noqa: F401
    except ImportError:
        raise BeatImportError(
            "django-celery-beat is not installed: pip install django-celery-beat"
        ) from None
    alias = "default"
    if database_url:
        alias = "celery_beat_import"
        config: dict[str, Any] = dict(dj_database_url.parse(database_url))
        connections.settings[alias] = connections.configure_settings({alias: config})[
            alias
        ]
    try:
        if apps.is_installed(BEAT_APP):
            yield alias
        else:
            with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, BEAT_APP]):
                yield alias
    finally:
        if database_url:
            connections[alias].close()
            del connections.settings[alias]


def _job_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-._")[:190] or "task"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _period(seconds: int) -> str:
    for unit, size in _UNITS:
        if seconds % size == 0:
            return f"PT{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole second divides by 1")


_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


def _schedule(task: Any) -> tuple[dict[str, Any] | None, str]:
    """The schedule of a periodic task in jobs-as-code terms, or why there is none."""
    if task.crontab_id is not None:
        c = task.crontab
        expression = " ".join(
            [c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week]
        )
        doc: dict[str, Any] = {
            "kind": "cron",
            "expression": expression,
            "timezone": str(c.timezone),
        }
    elif task.interval_id is not None:
        i = task.interval
        if i.period not in _SECONDS:
            return None, f"interval of {i.every} {i.period} is below one second"
        start = task.start_time.isoformat() if task.start_time else _ANCHOR
        period = _period(i.every * _SECONDS[i.period])
        doc = {"kind": "interval", "expression": f"R/{start}/{period}"}
    elif task.clocked_id is not None:
        doc = {"kind": "once", "expression": task.clocked.clocked_time.isoformat()}
    elif task.solar_id is not None:
        s = task.solar
        return None, (
            f"solar schedule ({s.event} at {s.latitude}, {s.longitude}) has no cron "
            "equivalent; recreate it by hand"
        )
    else:
        return None, "no schedule"
    doc.setdefault("timezone", "UTC")
    try:
        schedules.parse(doc["kind"], doc["expression"], doc["timezone"])
    except schedules.ScheduleError as exc:
        return None, f"schedule {doc['expression']!r} cannot be used: {exc}"
    if task.start_time and doc["kind"] == "cron":
        doc["start_at"] = task.start_time.isoformat()
    if task.expires:
        doc["end_at"] = task.expires.isoformat()
    if task.one_off and doc["kind"] != "once":
        doc["repetitions_left"] = 1
    if not task.enabled:
        doc["enabled"] = False
    return doc, ""


def _json(text: str, default: Any) -> Any:
    return json.loads(text) if text and text.strip() else default


def beat_document(*, alias: str, app: str) -> BeatImport:
    """Read every PeriodicTask from the database `alias` (inside beat_models())."""
    from django_celery_beat.models import PeriodicTask

    rows = (
        PeriodicTask.objects.using(alias)
        .select_related("crontab", "interval", "clocked", "solar")
        .order_by("name")
    )
    result = BeatImport(document={"version": 1, "apps": {app: {"jobs": {}}}})
    jobs: dict[str, Any] = result.document["apps"][app]["jobs"]
    taken: set[str] = set()
    imported = set(Job.objects.filter(app__name=app).values_list("name", flat=True))
    for task in rows:
        schedule, why = _schedule(task)
        if schedule is None:
            result.skipped.append(f"{task.name}: {why}")
            continue
        try:
            args, kwargs = _json(task.args, []), _json(task.kwargs, {})
        except ValueError as exc:
            result.skipped.append(f"{task.name}: args/kwargs are not JSON ({exc})")
            continue
        spec: dict[str, Any] = {"task": task.task}
        if args:
            spec["args"] = args
        if kwargs:
            spec["kwargs"] = kwargs
        if task.queue:
            spec["queue"] = task.queue
        name = _job_name(task.name, taken)
        if not task.enabled and name in imported:
            # Switched off in django-celery-beat after an import (--disable-source):
            # importing again must not switch the Karmchari job off too.
            result.skipped.append(f"{task.name}: disabled there, already imported")
            continue
        job: dict[str, Any] = {"kind": "task", "spec": spec, "tags": ["celery-beat"]}
        description = task.description or (task.name if name != task.name else "")
        if description:
            job["description"] = description
        job["schedules"] = [schedule]
        jobs[name] = job
        result.sources[name] = task.pk
    return result


def beat_disable_sources(*, alias: str, ids: list[int]) -> int:
    """Turn the imported periodic tasks off so django-celery-beat stops firing them
    (and tell its scheduler, which watches PeriodicTasks.last_update)."""
    from django_celery_beat.models import PeriodicTask, PeriodicTasks

    changed = (
        PeriodicTask.objects.using(alias)
        .filter(pk__in=ids, enabled=True)
        .update(enabled=False)
    )
    PeriodicTasks.objects.using(alias).update_or_create(
        ident=1, defaults={"last_update": timezone.now()}
    )
    return int(changed)
