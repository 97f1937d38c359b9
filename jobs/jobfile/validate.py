"""Validating a document into the desired state, naming each problem's place."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db.models import IntegerField
from django.utils.dateparse import parse_datetime

from jobs import schedules, services
from jobs.jobfile.export import _default
from jobs.jobfile.reading import (
    _DATETIMES,
    _DURATIONS,
    APP_FIELDS,
    FORMAT_VERSION,
    JOB_FIELDS,
    SCHEDULE_FIELDS,
    JobfileError,
    _located,
    _Map,
    _where,
)
from jobs.models import App, Job, Schedule
from jobs.runners import SECRET_MASK, SpecError
from jobs.secrets import SecretError, clean_secrets, spec_split_secrets
from jobs.services import MAX_SCHEDULE_DELAY
from karmchari_site.text import unstorable_path


@dataclass
class _WantSchedule:
    values: dict[str, Any]
    where: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (
            self.values["kind"],
            self.values["expression"],
            self.values["timezone"],
        )

    def label(self) -> str:
        kind, expression, tz = self.key
        return f"schedule {kind} {expression!r} ({tz})"


@dataclass
class _WantJob:
    app: str
    name: str
    values: dict[str, Any]
    parents: list[tuple[str, str]]
    schedules: list[_WantSchedule]
    where: str
    parents_where: str
    # By name: a value to set, or SECRET_MASK to keep the stored one.
    secrets: dict[str, str] = field(default_factory=dict)


@dataclass
class _WantApp:
    name: str
    values: dict[str, Any]
    jobs: list[_WantJob]


class _Validator:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[str] = []

    def fail(self, mark: yaml.Mark | None, path: str, message: str) -> None:
        self.problems.append(f"{_where(self.filename, mark)}: {path}: {message}")

    def mapping(self, value: Any, mark: yaml.Mark | None, path: str) -> _Map | None:
        if value is None:
            empty = _Map()
            empty.mark, empty.marks = mark, {}
            return empty
        if not isinstance(value, _Map):
            self.fail(mark, path, "must be a mapping")
            return None
        return value

    def unknown(self, doc: _Map, allowed: Iterable[str], path: str) -> None:
        allowed = set(allowed)
        for key in doc:
            if key not in allowed:
                self.fail(
                    doc.marks.get(key, doc.mark),
                    f"{path}.{key}",
                    f"unknown field (expected one of {', '.join(sorted(allowed))})",
                )


def _model_errors(exc: ValidationError) -> dict[str, list[str]]:
    return {
        name: [str(message) for message in messages]
        for name, messages in exc.message_dict.items()
    }


def _null_as_default(model: type[Any], values: dict[str, Any]) -> None:
    """`null` (as YAML reads `description:` with nothing after it) for a field that
    may be empty but not null takes the field's default, as the app's description
    always has: the database would refuse it mid-apply. Where empty is not allowed
    either, clean_fields names the field."""
    for name, value in values.items():
        field = model._meta.get_field(name)
        if value is None and field.blank and not field.null:
            values[name] = field.get_default()


def _whole_numbers(
    v: _Validator, model: type[Any], doc: _Map, names: Iterable[str], path: str
) -> bool:
    """False, naming each, where an integer field holds a fraction or a boolean:
    Django's int() would store 1.5 as 1 and true as 1, and the API refuses both."""
    ok = True
    for name in names:
        value = doc.get(name)
        if not isinstance(model._meta.get_field(name), IntegerField):
            continue
        if isinstance(value, bool) or (
            isinstance(value, float) and not value.is_integer()
        ):
            v.fail(
                doc.marks.get(name, doc.mark),
                f"{path}.{name}",
                "must be a whole number",
            )
            ok = False
    return ok


def _check_keys(v: _Validator, document: _Map) -> None:
    """Every key is text, as in JSON: YAML reads `1:`, `on:`, `no:` or `null:` as a
    number, a boolean or None, which a JSON field would store as "1", "true" or
    "null" (so a second apply would see a change), and which no name may be."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:  # not recursive: a document may nest deeper than Python's stack
        path, item = stack.pop()
        children: list[tuple[str, Any]] = []
        if isinstance(item, list):
            children = [(f"{path}[{i}]", child) for i, child in enumerate(item)]
        elif isinstance(item, dict):
            marks = getattr(item, "marks", {})
            for key, child in item.items():
                if not isinstance(key, str):
                    v.fail(
                        marks.get(key, getattr(item, "mark", None)),
                        path or "(top)",
                        f"the key {key!r} is not text: quote it (YAML reads 1, on, "
                        "no, null and the like as numbers, booleans or null)",
                    )
                children.append((f"{path}.{key}" if path else str(key), child))
        stack.extend(reversed(children))  # in the file's order


def _seconds(value: Any) -> timedelta:
    """A duration as the API takes it (services.schedule_check_delay)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number of seconds")
    if not math.isfinite(value) or abs(value) > 2 * MAX_SCHEDULE_DELAY.total_seconds():
        # Past what timedelta() holds: any value over the limit is refused alike.
        value = math.copysign(2 * MAX_SCHEDULE_DELAY.total_seconds(), value)
    duration = timedelta(seconds=value)
    services.schedule_check_delay(duration)
    return duration


def _moment(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        moment = parse_datetime(value)
    if moment is None:
        raise ValueError("must be an ISO 8601 date and time, e.g. 2026-01-01T00:00Z")
    if moment.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
    # As the API: a start near 9999 overflows computing the next run.
    services.schedule_check_moment(moment)
    return moment


def _check_schedule(
    v: _Validator, raw: Any, mark: yaml.Mark | None, path: str
) -> _WantSchedule | None:
    doc = v.mapping(raw, mark, path)
    if doc is None:
        return None
    v.unknown(doc, SCHEDULE_FIELDS, path)
    values: dict[str, Any] = {
        name: _default(Schedule, name) for name in SCHEDULE_FIELDS
    }
    ok = True
    for name in SCHEDULE_FIELDS:
        if name not in doc:
            continue
        value = doc[name]
        try:
            if name in _DURATIONS and value is not None:
                value = _seconds(value)
            elif name in _DATETIMES and value is not None:
                value = _moment(value)
        except (ValueError, OverflowError) as exc:
            v.fail(doc.marks.get(name), f"{path}.{name}", str(exc))
            ok = False
            continue
        values[name] = value
    _null_as_default(Schedule, values)
    ok = _whole_numbers(v, Schedule, doc, SCHEDULE_FIELDS, path) and ok
    if isinstance(values["expression"], datetime):
        # An unquoted one-shot time: YAML already read it as a timestamp.
        values["expression"] = values["expression"].isoformat()
    if not isinstance(values["expression"], str) or not values["expression"]:
        v.fail(doc.mark, f"{path}.expression", "a schedule needs an expression")
        return None
    if values["kind"] == "quartz":
        values["kind"] = Schedule.Kind.CRON
        try:
            # Stored as cron; the parser tells Quartz apart by its field count.
            schedules.parse("quartz", values["expression"], str(values["timezone"]))
        except schedules.ScheduleError as exc:
            v.fail(doc.marks.get("expression", doc.mark), path, str(exc))
            return None
    instance = Schedule(**values)
    try:
        instance.clean_fields(exclude=["job", "next_run_at", "last_run_at"])
    except ValidationError as exc:
        for name, messages in _model_errors(exc).items():
            v.fail(doc.marks.get(name, doc.mark), f"{path}.{name}", " ".join(messages))
        return None
    try:
        schedules.parse(instance.kind, instance.expression, instance.timezone)
    except schedules.ScheduleError as exc:
        at = "timezone" if "time zone" in str(exc) else "expression"
        v.fail(doc.marks.get(at, doc.mark), f"{path}.{at}", str(exc))
        return None
    if (
        values["start_at"]
        and values["end_at"]
        and values["end_at"] <= values["start_at"]
    ):
        v.fail(doc.marks.get("end_at"), f"{path}.end_at", "must be after start_at")
        return None
    if not ok:
        return None
    cleaned = {name: getattr(instance, name) for name in SCHEDULE_FIELDS}
    return _WantSchedule(values=cleaned, where=_where(v.filename, doc.mark))


def _parse_ref(ref: Any, app: str) -> tuple[str, str] | None:
    if not isinstance(ref, str) or not ref or ref.count("/") > 1:
        return None
    if "/" in ref:
        app_name, name = ref.split("/")
        return (app_name, name)
    return (app, ref)


def _check_job(
    v: _Validator,
    app: str,
    name: Any,
    raw: Any,
    mark: yaml.Mark | None,
    existing: Job | None,
) -> _WantJob | None:
    path = f"apps.{app}.jobs.{name}"
    doc = v.mapping(raw, mark, path)
    if doc is None:
        return None
    v.unknown(doc, [*JOB_FIELDS, "secrets", "parents", "schedules"], path)
    values = {n: _default(Job, n) for n in JOB_FIELDS}
    values.update({n: doc[n] for n in JOB_FIELDS if n in doc})
    _null_as_default(Job, values)
    before = len(v.problems)
    _whole_numbers(v, Job, doc, JOB_FIELDS, path)
    if values["ping_grace"] is not None:
        try:
            values["ping_grace"] = _seconds(values["ping_grace"])
        except ValueError as exc:
            v.fail(doc.marks.get("ping_grace"), f"{path}.ping_grace", str(exc))
            values["ping_grace"] = None
    instance = Job(name=name, **values)
    bad: set[str] = set()
    try:
        instance.clean_fields(exclude=["app", "spec", "parents"])
    except ValidationError as exc:
        bad = set(exc.message_dict)
        for field_name, messages in _model_errors(exc).items():
            v.fail(
                doc.marks.get(field_name, doc.mark),
                f"{path}.{field_name}" if field_name != "name" else path,
                " ".join(messages),
            )
    tags = values["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        v.fail(doc.marks.get("tags"), f"{path}.tags", "must be a list of strings")
    if "timeout" not in bad and instance.timeout is not None and instance.timeout < 1:
        v.fail(doc.marks.get("timeout"), f"{path}.timeout", "must be at least 1")
    limit = None if "max_concurrent" in bad else instance.max_concurrent
    if limit is not None and limit < 1:
        at = doc.marks.get("max_concurrent")
        v.fail(at, f"{path}.max_concurrent", "must be at least 1")
    secrets = _check_secrets(v, doc, path)
    if "kind" not in bad:
        stored = {s.name for s in existing.secrets.all()} if existing else set()
        secrets = _check_spec(v, doc, path, instance, secrets, stored)
    parents: list[tuple[str, str]] = []
    raw_parents = doc.get("parents") or []
    if not isinstance(raw_parents, list):
        v.fail(doc.marks.get("parents"), f"{path}.parents", "must be a list")
        raw_parents = []
    for ref in raw_parents:
        parsed = _parse_ref(ref, app)
        if parsed is None:
            v.fail(
                doc.marks.get("parents"),
                f"{path}.parents",
                f"{ref!r} is not a job name or app/name",
            )
        elif parsed not in parents:
            # `[a, ops/a]` in app ops names one parent (the database links it once).
            parents.append(parsed)
    wanted: list[_WantSchedule] = []
    raw_schedules = doc.get("schedules") or []
    if not isinstance(raw_schedules, list):
        v.fail(doc.marks.get("schedules"), f"{path}.schedules", "must be a list")
        raw_schedules = []
    for index, raw_schedule in enumerate(raw_schedules):
        at = getattr(raw_schedule, "mark", None) or doc.marks.get("schedules")
        schedule = _check_schedule(v, raw_schedule, at, f"{path}.schedules[{index}]")
        if schedule is not None:
            wanted.append(schedule)
    if len(v.problems) > before:
        return None
    cleaned = {n: getattr(instance, n) for n in JOB_FIELDS}
    return _WantJob(
        app=app,
        name=name,
        values=cleaned,
        parents=parents,
        schedules=wanted,
        where=_where(v.filename, doc.mark),
        parents_where=_where(v.filename, doc.marks.get("parents", doc.mark)),
        secrets=secrets,
    )


_NOTHING_TO_KEEP = (
    f"holds the placeholder {SECRET_MASK!r} but there is no stored secret to keep: "
    "write the real value"
)


def _check_secrets(v: _Validator, doc: _Map, path: str) -> dict[str, str]:
    raw = doc.get("secrets")
    mark = doc.marks.get("secrets", doc.mark)
    if raw is None:
        return {}
    if not isinstance(raw, _Map):
        v.fail(mark, f"{path}.secrets", "must be a mapping of NAME: value")
        return {}
    try:
        cleaned = clean_secrets(dict(raw))
    except SecretError as exc:
        for name, message in exc.errors.items():
            v.fail(raw.marks.get(name, mark), f"{path}.secrets.{name}", message)
        return {}
    secrets: dict[str, str] = {}
    for name, value in cleaned.items():
        if value is None:
            v.fail(
                raw.marks.get(name, mark),
                f"{path}.secrets.{name}",
                "is empty: leave the name out to delete the secret",
            )
        else:
            secrets[name] = value
    return secrets


def _check_spec(
    v: _Validator,
    doc: _Map,
    path: str,
    instance: Job,
    secrets: dict[str, str],
    stored: set[str],
) -> dict[str, str]:
    """Cleans instance.spec in place and moves its secret-looking values out; answers
    all the secrets the job should have (the file's `secrets` win)."""
    mark = doc.marks.get("spec", doc.mark)
    try:
        spec = services.job_clean_spec(kind=instance.kind, spec=instance.spec)
    except SpecError as exc:
        for key, message in exc.errors.items():
            v.fail(mark, f"{path}.spec.{key}", message)
        return secrets
    instance.spec, split = spec_split_secrets(kind=instance.kind, spec=spec)
    try:
        json.dumps(instance.spec)
    except TypeError as exc:  # a YAML date or set: the JSONField could not save it
        v.fail(mark, f"{path}.spec", f"must hold only JSON values ({exc})")
    if _has_mask(instance.spec):
        v.fail(mark, f"{path}.spec", _NOTHING_TO_KEEP)
    wanted = {**split, **secrets}
    raw = doc.get("secrets")
    for name, value in wanted.items():
        if value != SECRET_MASK or name in stored:
            continue
        if name in secrets and isinstance(raw, _Map):
            v.fail(
                raw.marks.get(name, mark), f"{path}.secrets.{name}", _NOTHING_TO_KEEP
            )
        else:
            v.fail(mark, f"{path}.spec", _NOTHING_TO_KEEP)
    return wanted


def _has_mask(spec: Any) -> bool:
    if isinstance(spec, dict):
        return any(_has_mask(value) for value in spec.values())
    if isinstance(spec, list):
        return any(_has_mask(value) for value in spec)
    return bool(spec == SECRET_MASK)


def _existing_jobs() -> dict[tuple[str, str], Job]:
    rows = Job.objects.select_related("app").prefetch_related(
        "schedules", "parents__app", "secrets"
    )
    return {(job.app.name, job.name): job for job in rows}


def _check_storable(v: _Validator, document: _Map) -> None:
    """Text no database here can store, or a number that is not finite (YAML's .inf
    and .nan), anywhere in the file (karmchari_site/text.py): else PostgreSQL, the
    JSON fields or Django's integer fields (OverflowError) refuse it mid-apply. The
    first one found is reported."""
    found = unstorable_path(document)
    if found is None:
        return
    keys, why = found
    item, mark, path = document, document.mark, ""
    for key in keys:
        if isinstance(item, list):
            item, path = item[int(key)], f"{path}[{key}]"
            mark = getattr(item, "mark", mark)
        else:
            real = next(k for k in item if str(k) == key)
            mark = item.marks.get(real, mark)
            item, path = item[real], f"{path}.{key}" if path else key
    v.fail(mark, path or "(top)", why)


_Key = tuple[str, str]


def _links(wanted: list[_WantApp], existing: dict[_Key, Job]) -> dict[_Key, list[_Key]]:
    """Each job's parents once the file is applied: the file's for a job it
    declares, the stored ones for any other."""
    links = {
        key: [(parent.app.name, parent.name) for parent in job.parents.all()]
        for key, job in existing.items()
    }
    links.update(
        {(job.app, job.name): job.parents for app in wanted for job in app.jobs}
    )
    return links


def _pruned(wanted: list[_WantApp], existing: dict[_Key, Job]) -> set[_Key]:
    """The stored jobs of the file's apps that the file no longer lists."""
    declared = {(job.app, job.name) for app in wanted for job in app.jobs}
    names = {app.name for app in wanted}
    return {key for key in existing if key[0] in names and key not in declared}


def _doomed(pruned: set[_Key], links: dict[_Key, list[_Key]]) -> set[_Key]:
    """The pruned jobs and every job their deletion leaves with no other parent (and
    theirs): Kala's rule, as services.jobs_doomed applies it."""
    doomed = set(pruned)
    grew = True
    while grew:
        grew = False
        for key, parents in links.items():
            if key not in doomed and parents and set(parents) <= doomed:
                doomed.add(key)
                grew = True
    return doomed


def _cycle(start: _Key, links: dict[_Key, list[_Key]]) -> list[_Key] | None:
    """The shortest chain of parents from `start` back to itself, or None."""
    came_from: dict[_Key, _Key] = {}
    frontier = [start]
    while frontier:
        following: list[_Key] = []
        for key in frontier:
            for parent in links.get(key, []):
                if parent == start:
                    chain = [key]
                    while chain[-1] != start:
                        chain.append(came_from[chain[-1]])
                    return [*reversed(chain), start]
                if parent not in came_from:
                    came_from[parent] = key
                    following.append(parent)
        frontier = following
    return None


def _check_links(
    v: _Validator,
    wanted: list[_WantApp],
    existing: dict[_Key, Job],
    *,
    prune: bool,
) -> None:
    """Parents that exist, are not deleted by the prune (Kala's rule would take
    the job that names them along), and make no dependency cycle."""
    jobs = [job for app in wanted for job in app.jobs]
    declared = {(job.app, job.name) for job in jobs}
    links = _links(wanted, existing)
    pruned = _pruned(wanted, existing) if prune else set()
    doomed = _doomed(pruned, {k: p for k, p in links.items() if k not in declared})
    for job in jobs:
        for ref in job.parents:
            if ref not in declared and ref not in existing:
                why = "no job {} in the file or the database"
            elif ref in pruned:
                why = "{} is not in the file, so the prune deletes it"
            elif ref in doomed:
                why = "{} goes with its last parent, which the prune deletes"
            else:
                continue
            v.problems.append(
                f"{job.parents_where}: apps.{job.app}.jobs.{job.name}.parents: "
                + why.format(repr("/".join(ref)))
            )
    if v.problems:
        return  # a cycle over parents that are not right yet would mislead
    for key in doomed:
        del links[key]
    seen: list[set[_Key]] = []
    for job in jobs:
        cycle = _cycle((job.app, job.name), links)
        if cycle is None or set(cycle) in seen:
            continue
        seen.append(set(cycle))
        v.problems.append(
            f"{job.parents_where}: apps.{job.app}.jobs.{job.name}.parents: "
            f"would depend on itself: {' -> '.join('/'.join(k) for k in cycle)}"
        )


def _validate(
    document: Any,
    filename: str,
    existing: dict[_Key, Job],
    *,
    prune: bool = False,
) -> list[_WantApp]:
    v = _Validator(filename)
    document = _located(document)
    root = v.mapping(document, getattr(document, "mark", None), "(top)")
    if root is None:
        raise JobfileError(v.problems)
    _check_keys(v, root)
    if v.problems:
        raise JobfileError(v.problems)
    _check_storable(v, root)
    if v.problems:
        raise JobfileError(v.problems)
    v.unknown(root, ["version", "apps"], "(top)")
    version = root.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        v.fail(
            root.marks.get("version"), "version", f"unsupported (use {FORMAT_VERSION})"
        )
    apps_doc = v.mapping(root.get("apps"), root.marks.get("apps", root.mark), "apps")
    wanted: list[_WantApp] = []
    for app_name, raw_app in (apps_doc or {}).items():
        path = f"apps.{app_name}"
        at = apps_doc.marks.get(app_name) if apps_doc else None
        app_doc = v.mapping(raw_app, at, path)
        if app_doc is None:
            continue
        v.unknown(app_doc, [*APP_FIELDS, "jobs"], path)
        values = {n: app_doc.get(n, _default(App, n)) for n in APP_FIELDS}
        _null_as_default(App, values)
        _whole_numbers(v, App, app_doc, APP_FIELDS, path)
        try:
            App(name=app_name, **values).clean_fields()
        except ValidationError as exc:
            for name, messages in _model_errors(exc).items():
                where = app_doc.marks.get(name, at)
                v.fail(
                    where,
                    path if name == "name" else f"{path}.{name}",
                    " ".join(messages),
                )
        if not isinstance(values["meta"], dict):
            v.fail(app_doc.marks.get("meta"), f"{path}.meta", "must be a mapping")
        jobs_doc = v.mapping(
            app_doc.get("jobs"), app_doc.marks.get("jobs", at), f"{path}.jobs"
        )
        jobs: list[_WantJob] = []
        for job_name, raw_job in (jobs_doc or {}).items():
            where = jobs_doc.marks.get(job_name) if jobs_doc else None
            job = _check_job(
                v,
                app_name,
                job_name,
                raw_job,
                where,
                existing.get((app_name, job_name)),
            )
            if job is not None:
                jobs.append(job)
        wanted.append(_WantApp(name=app_name, values=values, jobs=jobs))
    _check_links(v, wanted, existing, prune=prune)
    if v.problems:
        raise JobfileError(v.problems)
    return wanted
