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

import itertools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
# Interval schedules are anchored here (shifted to the phase of their last run) unless
# the task has a start_time, so importing twice yields the same expression.
_ANCHOR = "2000-01-01T00:00:00Z"
_UNITS = (("H", 3600), ("M", 60), ("S", 1))


class BeatImportError(RuntimeError):
    """django-celery-beat cannot be read (not installed, no tables, bad URL)."""


@dataclass
class BeatImport:
    document: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    # Imported, but not quite as django-celery-beat would run it: said, not hidden.
    notes: list[str] = field(default_factory=list)
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


def _base_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-._")[:190] or "task"


def _job_names(tasks: list[Any], existing: dict[str, str]) -> dict[int, str]:
    """A job name for each task (by pk), the same at every import.

    A task whose name is a valid job name keeps it; one renamed before (`a/b` as
    `a-b`) finds its job again by the description the import gave it; the rest get
    the first free suffix. So a task added later cannot take over another task's
    job (its spec and its history) because its name sorts first. `existing`: the
    app's job names -> descriptions.
    """
    names: dict[int, str] = {}
    taken: set[str] = set()
    renamed = []
    for task in tasks:
        if _base_name(task.name) == task.name:
            names[task.pk] = task.name
            taken.add(task.name)
        else:
            renamed.append(task)
    by_description: dict[str, str] = {}
    for job_name, description in existing.items():
        by_description.setdefault(description, job_name)
    later = []
    for task in renamed:
        before = by_description.get(task.name)
        if before is not None and before not in taken:
            names[task.pk] = before
            taken.add(before)
        else:
            later.append(task)
    for task in later:
        base = _base_name(task.name)
        candidate, n = base, 2
        while candidate in taken or (
            candidate in existing and existing[candidate] != task.name
        ):
            candidate, n = f"{base}-{n}", n + 1
        names[task.pk] = candidate
        taken.add(candidate)
    return names


def _period(seconds: int) -> str:
    for unit, size in _UNITS:
        if seconds % size == 0:
            return f"PT{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole second divides by 1")


_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
# celery.schedules.crontab_parser's ranges: (max, min) per crontab field.
_CRONTAB_RANGES = ((60, 0), (24, 0), (31, 1), (12, 1), (7, 0))
# Days of the month that are one week of it: with a day of week, "its nth".
_NTH_WEEK = {"1-7": 1, "8-14": 2, "15-21": 3, "22-28": 4}
_MAX_EXPRESSION = 200  # Schedule.expression


def _compact(text: str, high: int, low: int) -> str:
    """A crontab field in the fewest characters: `*`, ranges, or a stepped range."""
    from celery.schedules import ParseException, crontab_parser

    try:
        values = sorted(crontab_parser(high, low).parse(text))
    except (ParseException, ValueError):
        return text  # Said by the schedule's own check.
    if len(values) == high:
        return "*"
    steps = {b - a for a, b in itertools.pairwise(values)}
    if len(values) > 2 and len(steps) == 1 and (step := steps.pop()) > 1:
        return f"{values[0]}-{values[-1]}/{step}"
    return ",".join(
        str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"
        for run in schedules.consecutive_runs(values)
    )


def _crontab(c: Any) -> tuple[str | None, str]:
    """A CrontabSchedule as a cron expression, or why it cannot be one."""
    # celery reads a day's name by its first three letters ("monday-friday").
    dow = re.sub(r"[A-Za-z]+", lambda m: m.group()[:3], c.day_of_week)
    fields = [c.minute, c.hour, c.day_of_month, c.month_of_year, dow]
    fields = ["".join(f.split()) or "*" for f in fields]
    dom = fields[2]
    if dom != "*" and fields[4] != "*":
        # celery fires when both match ("1-7" and "mon": the first Monday); cron
        # fires when either does. Only "the nth weekday" has a cron spelling.
        nth = _NTH_WEEK.get(dom)
        try:
            days = schedules.parse("cron", f"0 0 * * {fields[4]}", "UTC")
        except schedules.ScheduleError:
            days = None
        values = getattr(getattr(days, "dow", None), "values", None)
        if nth is None or not values:
            return None, (
                f"day_of_month {c.day_of_month!r} and day_of_week "
                f"{c.day_of_week!r}: django-celery-beat fires on days matching both, "
                "which cron cannot say (it fires on days matching either); "
                "recreate it by hand"
            )
        fields[2], fields[4] = "*", ",".join(f"{day}#{nth}" for day in values)
    expression = " ".join(fields)
    if len(expression) > _MAX_EXPRESSION:
        expression = " ".join(
            field if "#" in field else _compact(field, high, low)
            for field, (high, low) in zip(fields, _CRONTAB_RANGES, strict=True)
        )
    return expression, ""


def _moment(value: Any) -> Any:
    """A start or expiry Karmchari can hold: 1970 and 9999 are beat's "none"."""
    if value is None or not 1971 <= value.year <= 9998:
        return None
    return value


def _phase(task: Any, start: datetime | None, seconds: int) -> str:
    """Where an interval's slots fall. django-celery-beat runs it `every` after its
    last run: keep that phase (an hourly task that ran at :17 stays at :17), as a
    fixed point, so importing again while beat runs on gives the same expression."""
    if task.last_run_at is not None:
        anchor = datetime.fromisoformat(_ANCHOR)
        offset = int((task.last_run_at - anchor).total_seconds()) % seconds
        return (anchor + timedelta(seconds=offset)).isoformat().replace("+00:00", "Z")
    return start.isoformat() if start else _ANCHOR


def _schedule(task: Any, notes: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The schedule of a periodic task in jobs-as-code terms, or why there is none.

    As django-celery-beat runs it: a one-off task that ran, or one past its expiry,
    never runs again (imported disabled); nor does a slot at the expiry instant.
    """
    start, expires = _moment(task.start_time), _moment(task.expires)
    if task.expires is not None and expires is None and task.expires.year < 1971:
        expires = task.expires  # Long expired; see below.
    if start is not None and expires is not None and expires <= start:
        return None, "it expires before it starts, so django-celery-beat never runs it"
    if task.crontab_id is not None:
        c = task.crontab
        expression, why = _crontab(c)
        if expression is None:
            return None, why
        doc: dict[str, Any] = {
            "kind": "cron",
            "expression": expression,
            "timezone": str(c.timezone),
        }
    elif task.interval_id is not None:
        i = task.interval
        if i.period == "microseconds" and i.every % 1_000_000 == 0:
            seconds = i.every // 1_000_000
        elif i.period in _SECONDS:
            seconds = i.every * _SECONDS[i.period]
        else:
            return None, f"interval of {i.every} {i.period} is below one second"
        doc = {
            "kind": "interval",
            "expression": f"R/{_phase(task, start, seconds)}/{_period(seconds)}",
        }
    elif task.clocked_id is not None:
        when = task.clocked.clocked_time
        doc = {"kind": "once", "expression": when.isoformat()}
        if task.enabled and not task.total_run_count and when <= timezone.now():
            notes.append(
                f"{task.name}: its time ({when:%Y-%m-%d %H:%M:%S %Z}) has passed "
                "and it never ran; django-celery-beat would run it when it next "
                "starts: run the job by hand if it is still wanted"
            )
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
    if start and doc["kind"] == "cron":
        doc["start_at"] = start.isoformat()
    enabled = task.enabled
    if expires is not None and expires <= timezone.now():
        if enabled:
            notes.append(
                f"{task.name}: expired on {expires:%Y-%m-%d}; imported disabled"
            )
        enabled = False
    elif expires is not None:
        # Beat stops at the expiry instant: a slot exactly then does not run.
        doc["end_at"] = (expires - timedelta(microseconds=1)).isoformat()
    if task.one_off and (task.total_run_count or task.last_run_at):
        if enabled:
            notes.append(
                f"{task.name}: a one-off task that already ran; imported disabled"
            )
        enabled = False
    elif task.one_off and doc["kind"] != "once":
        doc["repetitions_left"] = 1
    if not enabled:
        doc["enabled"] = False
    return doc, ""


def _finite(text: str) -> Any:
    raise ValueError(f"{text} is not a number JSON can carry")


def _json(text: str, default: Any) -> Any:
    if not text or not text.strip():
        return default
    return json.loads(text, parse_constant=_finite)


# What django-celery-beat also sends with a task, which a task job does not carry.
_NOT_CARRIED = ("priority", "exchange", "routing_key", "headers", "expire_seconds")


def _dropped(task: Any) -> list[str]:
    dropped = []
    for option in _NOT_CARRIED:
        value = getattr(task, option, None)
        if option == "headers" and (value or "").strip() in ("", "{}"):
            continue
        if value not in (None, ""):
            dropped.append(f"{option}={value}")
    return dropped


def _spec(task: Any) -> tuple[dict[str, Any] | None, str]:
    try:
        args, kwargs = _json(task.args, []), _json(task.kwargs, {})
    except ValueError as exc:
        return None, f"args/kwargs are not JSON ({exc})"
    if not isinstance(args, list):
        return None, "args must be a JSON list"
    if not isinstance(kwargs, dict):
        return None, "kwargs must be a JSON object"
    spec: dict[str, Any] = {"task": task.task}
    if args:
        spec["args"] = args
    if kwargs:
        spec["kwargs"] = kwargs
    if task.queue:
        spec["queue"] = task.queue
    return spec, ""


def beat_document(*, alias: str, app: str) -> BeatImport:
    """Read every PeriodicTask from the database `alias` (inside beat_models())."""
    from django_celery_beat.models import PeriodicTask

    rows = list(
        PeriodicTask.objects.using(alias)
        .select_related("crontab", "interval", "clocked", "solar")
        .order_by("name")
    )
    result = BeatImport(document={"version": 1, "apps": {app: {"jobs": {}}}})
    jobs: dict[str, Any] = result.document["apps"][app]["jobs"]
    existing = dict(
        Job.objects.filter(app__name=app).values_list("name", "description")
    )
    names = _job_names(rows, existing)
    for task in rows:
        schedule, why = _schedule(task, result.notes)
        spec, bad = _spec(task)
        if schedule is None or spec is None:
            result.skipped.append(f"{task.name}: {why or bad}")
            continue
        name = names[task.pk]
        if not task.enabled and name in existing:
            # Switched off in django-celery-beat after an import (--disable-source):
            # importing again must not switch the Karmchari job off too.
            result.skipped.append(f"{task.name}: disabled there, already imported")
            continue
        dropped = _dropped(task)
        if dropped:
            result.notes.append(
                f"{task.name}: not carried by a task job: {', '.join(dropped)}"
            )
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
