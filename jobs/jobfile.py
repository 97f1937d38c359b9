"""Jobs as code: export apps, jobs and schedules to YAML, and apply a file back.

The file is the whole truth for every job it lists: a field it leaves out takes the
model's default, and a job's `schedules` list replaces the job's schedules (matched by
kind, expression and time zone, so editing `enabled` or `epsilon` keeps the row and its
history). `prune` also deletes the jobs of the file's apps that the file no longer
lists, and with them (Kala's rule) any job, of any app, left with no parent; the plan
lists each. Apps are never deleted, nor a job the file lists: a parent the prune
would delete is a problem.

Applying compares the file with an export of the database in the same terms, so a file
that was just exported applies as "no changes". A job's `secrets` are exported as their
names with the mask, never a value. In a file, the mask keeps the stored value, a real
value sets it, and a stored secret the file leaves out is deleted (the file is the
whole truth). Secret-looking values inside a spec (KARMCHARI_SECRET_ENV_PATTERN) move
to the secrets, as they do through the API.

Every write goes through jobs.services, in one transaction.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch
from django.utils.dateparse import parse_datetime

from jobs import schedules, services
from jobs.models import App, Job, JobSecret, Schedule
from jobs.runners import SECRET_MASK, SpecError
from jobs.secrets import SecretError, clean_secrets, secret_matches, spec_split_secrets
from jobs.services import MAX_SCHEDULE_DELAY
from karmchari_site.text import unstorable_path

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

APP_FIELDS = ("description", "meta", "keep_succeeded", "keep_failed", "keep_days")
JOB_FIELDS = (
    "description",
    "kind",
    "spec",
    "enabled",
    "owner",
    "tags",
    "queue",
    "timeout",
    "max_retries",
    "retry_backoff",
    "overlap_policy",
    "max_concurrent",
    "ping_grace",
    "keep_succeeded",
    "keep_failed",
    "keep_days",
)
SCHEDULE_FIELDS = (
    "kind",
    "expression",
    "timezone",
    "enabled",
    "epsilon",
    "misfire_policy",
    "jitter",
    "jitter_hashed",
    "start_at",
    "end_at",
    "repetitions_left",
)
# Counted down as the schedule fires: the file sets it when the schedule is created.
_CREATE_ONLY = {"repetitions_left"}
# A schedule's numbers of seconds in a file (as a job's ping_grace).
_DURATIONS = {"epsilon", "jitter"}
_DATETIMES = {"start_at", "end_at"}


class JobfileError(ValueError):
    """The file cannot be applied; each problem names its place in the file."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- Reading YAML with positions -----------------------------------------------------


class _Map(dict[Any, Any]):
    """A mapping that remembers where it and each of its keys are in the file."""

    mark: yaml.Mark | None = None
    marks: dict[Any, yaml.Mark]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.mark = node.start_mark
    result.marks = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.marks[key] = value_node.start_mark
    return result


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def _located(value: Any) -> Any:
    """Plain dicts (a document built in code, not read from a file) as _Map."""
    if isinstance(value, dict) and not isinstance(value, _Map):
        located = _Map({key: _located(item) for key, item in value.items()})
        located.marks = {}
        return located
    if isinstance(value, list):
        return [_located(item) for item in value]
    return value


def _where(filename: str, mark: yaml.Mark | None) -> str:
    if mark is None:
        return filename
    return f"{filename}:{mark.line + 1}:{mark.column + 1}"


# --- Exporting -----------------------------------------------------------------------


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
    the names of their secrets (masked)."""
    queryset = App.objects.order_by("name").prefetch_related(
        "jobs__schedules",
        "jobs__parents__app",
        Prefetch("jobs__secrets", queryset=JobSecret.objects.only("job_id", "name")),
    )
    names = list(apps)
    if names:
        queryset = queryset.filter(name__in=names)
    document: dict[str, Any] = {"version": FORMAT_VERSION, "apps": {}}
    for app in queryset:
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


# --- Validating a document into desired state ---------------------------------------


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
    if values["spec"] is None:
        values["spec"] = {}
    before = len(v.problems)
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
        else:
            parents.append(parsed)
    wanted: list[_WantSchedule] = []
    raw_schedules = doc.get("schedules") or []
    if not isinstance(raw_schedules, list):
        v.fail(doc.marks.get("schedules"), f"{path}.schedules", "must be a list")
        raw_schedules = []
    seen: set[tuple[str, str, str]] = set()
    for index, raw_schedule in enumerate(raw_schedules):
        at = getattr(raw_schedule, "mark", None) or doc.marks.get("schedules")
        schedule = _check_schedule(v, raw_schedule, at, f"{path}.schedules[{index}]")
        if schedule is None:
            continue
        if schedule.key in seen:
            v.fail(
                at,
                f"{path}.schedules[{index}]",
                "the same kind, expression and time zone appear twice",
            )
            continue
        seen.add(schedule.key)
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
        values["description"] = values["description"] or ""
        values["meta"] = values["meta"] or {}
        try:
            App(name=str(app_name), **values).clean_fields()
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
                str(app_name),
                str(job_name),
                raw_job,
                where,
                existing.get((str(app_name), str(job_name))),
            )
            if job is not None:
                jobs.append(job)
        wanted.append(_WantApp(name=str(app_name), values=values, jobs=jobs))
    _check_links(v, wanted, existing, prune=prune)
    if v.problems:
        raise JobfileError(v.problems)
    return wanted


# --- Planning and applying -----------------------------------------------------------


@dataclass
class Change:
    """One entry of the plan: + create, ~ change, - delete. `run` makes it so;
    `later` runs after every `run`, in plan order: links to jobs the same apply
    creates, then the prune's deletes (last in the plan), so a job the file keeps is
    unlinked from a pruned parent before Kala's rule could delete it along."""

    action: str
    label: str
    details: list[str] = field(default_factory=list)
    run: Callable[[], object] | None = field(default=None, repr=False)
    later: Callable[[], object] | None = field(default=None, repr=False)


@dataclass
class Plan:
    changes: list[Change]

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys("+~-", 0)
        for change in self.changes:
            counts[change.action] += 1
        return counts

    def render(self) -> str:
        if self.empty:
            return "No changes."
        lines: list[str] = []
        for change in self.changes:
            lines.append(f"{change.action} {change.label}")
            lines.extend(f"    {detail}" for detail in change.details)
        counts = self.counts()
        lines.append(
            f"{counts['+']} to create, {counts['~']} to change, "
            f"{counts['-']} to delete."
        )
        return "\n".join(lines)


def _show(name: str, value: Any) -> str:
    return json.dumps(_plain(name, value), default=str, ensure_ascii=False)


def _differences(
    names: Iterable[str], have: Any, want: dict[str, Any]
) -> dict[str, Any]:
    return {n: want[n] for n in names if getattr(have, n) != want[n]}


def _describe(names: dict[str, Any], have: Any) -> list[str]:
    return [
        f"{name}: {_show(name, getattr(have, name))} -> {_show(name, value)}"
        for name, value in names.items()
    ]


def _plan_secrets(
    want: _WantJob, have: Job | None
) -> tuple[list[str], dict[str, str | None]]:
    """Plan lines (names only, never values) and job_update's `secrets`."""
    stored = (
        {secret.name: secret.value for secret in have.secrets.all()} if have else {}
    )
    lines: list[str] = []
    changes: dict[str, str | None] = {}
    for name, value in sorted(want.secrets.items()):
        if value == SECRET_MASK:
            continue
        if name not in stored:
            lines.append(f"+ secret {name}")
        elif not secret_matches(stored[name], value):
            lines.append(f"~ secret {name}: value changed")
        else:
            continue
        changes[name] = value
    for name in sorted(set(stored) - set(want.secrets)):
        lines.append(f"- secret {name}")
        changes[name] = None
    return lines, changes


def _in_order(steps: list[Callable[[], object]]) -> Callable[[], object]:
    def run() -> None:
        for step in steps:
            step()

    return run


class _Context:
    """Objects made earlier in the same apply, by name (for later steps)."""

    def __init__(self, existing: dict[tuple[str, str], Job]) -> None:
        self.apps: dict[str, App] = {app.name: app for app in App.objects.all()}
        self.jobs = dict(existing)


def _schedule_label(schedule: Schedule) -> str:
    return f"schedule {schedule.kind} {schedule.expression!r} ({schedule.timezone})"


def _plan_schedules(
    ctx: _Context, want: _WantJob, have: Job | None
) -> tuple[list[str], list[Callable[[], object]]]:
    lines: list[str] = []
    steps: list[Callable[[], object]] = []
    key = (want.app, want.name)
    remaining = sorted(have.schedules.all(), key=lambda s: s.pk) if have else []
    updatable = [n for n in SCHEDULE_FIELDS if n not in _CREATE_ONLY]
    for schedule in want.schedules:
        match = next(
            (
                s
                for s in remaining
                if (s.kind, s.expression, s.timezone) == schedule.key
            ),
            None,
        )
        if match is None:

            def create(values: dict[str, Any] = schedule.values) -> None:
                services.schedule_create(job=ctx.jobs[key], **values)

            lines.append(f"+ {schedule.label()}")
            steps.append(create)
            continue
        remaining.remove(match)
        changed = _differences(updatable, match, schedule.values)
        if changed:
            lines.append(
                f"~ {schedule.label()}: {'; '.join(_describe(changed, match))}"
            )
            steps.append(
                functools.partial(services.schedule_update, schedule=match, **changed)
            )
    for row in remaining:

        def delete(row: Schedule = row) -> None:
            services.schedule_delete(schedule=row)

        lines.append(f"- {_schedule_label(row)}")
        steps.append(delete)
    return lines, steps


def _plan_job(ctx: _Context, job: _WantJob, have: Job | None) -> Change | None:
    lines, schedule_steps = _plan_schedules(ctx, job, have)
    secret_lines, secrets = _plan_secrets(job, have)
    label = f"job {job.app}/{job.name}"
    change: Change | None = None
    if have is None:

        def make_job() -> None:
            ctx.jobs[(job.app, job.name)] = services.job_create(
                app=ctx.apps[job.app], name=job.name, secrets=secrets, **job.values
            )

        details = [*secret_lines, *lines]
        change = Change("+", label, details, run=_in_order([make_job, *schedule_steps]))
    else:
        changed = _differences(JOB_FIELDS, have, job.values)
        details = [*_describe(changed, have), *secret_lines, *lines]
        if details:

            def update_job() -> None:
                if changed or secrets:
                    services.job_update(job=have, secrets=secrets, **changed)

            steps = [update_job, *schedule_steps]
            change = Change("~", label, details, run=_in_order(steps))
    have_rows = list(have.parents.all()) if have else []
    have_parents = sorted((p.app.name, p.name) for p in have_rows)
    if sorted(job.parents) != have_parents:

        def set_parents() -> None:
            services.job_update(
                job=ctx.jobs[(job.app, job.name)],
                parents=[ctx.jobs[ref] for ref in job.parents],
            )

        old = ", ".join("/".join(p) for p in have_parents) or "none"
        new = ", ".join("/".join(p) for p in sorted(job.parents)) or "none"
        change = change or Change("~", label)
        change.details.append(f"parents: {old} -> {new}")
        change.later = set_parents
        kept = [p for p in have_rows if (p.app.name, p.name) in job.parents]
        if have is not None and len(kept) < len(have_rows):
            # The links a file drops go in the `run` pass, before any is added: no
            # step passes through a cycle (a file swapping a parent and its child),
            # and no job the file keeps goes with a pruned parent (Kala's rule).
            unlink = functools.partial(services.job_set_parents, job=have, parents=kept)
            change.run = _in_order([change.run, unlink] if change.run else [unlink])
    return change


def _plan(
    wanted: list[_WantApp], existing: dict[tuple[str, str], Job], *, prune: bool
) -> Plan:
    ctx = _Context(existing)
    changes: list[Change] = []
    for app in wanted:
        have_app = ctx.apps.get(app.name)
        if have_app is None:

            def make_app(app: _WantApp = app) -> None:
                ctx.apps[app.name] = services.app_create(name=app.name, **app.values)

            changes.append(Change("+", f"app {app.name}", run=make_app))
        elif changed := _differences(APP_FIELDS, have_app, app.values):
            details = _describe(changed, have_app)
            update_app = functools.partial(services.app_update, app=have_app, **changed)
            changes.append(Change("~", f"app {app.name}", details, run=update_app))
        for job in app.jobs:
            change = _plan_job(ctx, job, existing.get((job.app, job.name)))
            if change is not None:
                changes.append(change)
    if prune:
        pruned = _pruned(wanted, existing)
        for key in sorted(pruned):

            def delete(row: Job = existing[key]) -> None:
                services.job_delete(job=row)

            changes.append(Change("-", f"job {key[0]}/{key[1]}", later=delete))
        # Jobs of other apps whose last parent goes: job_delete takes them along.
        for key in sorted(_doomed(pruned, _links(wanted, existing)) - pruned):
            why = "no parent left once the jobs above are deleted"
            changes.append(Change("-", f"job {key[0]}/{key[1]}", [why]))
    return Plan(changes)


def jobfile_load(*, text: str, filename: str) -> Any:
    """The YAML document, with positions; JobfileError naming the place of a syntax
    error."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        problem = f"{exc.problem or exc}"
        raise JobfileError(
            [f"{_where(filename, exc.problem_mark)}: {problem}"]
        ) from None
    except yaml.YAMLError as exc:
        raise JobfileError([f"{filename}: {exc}"]) from None


def jobfile_plan(
    *, document: Any, filename: str = "<document>", prune: bool = False
) -> Plan:
    """What applying `document` would change; JobfileError if it is not valid."""
    existing = _existing_jobs()
    wanted = _validate(document, filename, existing, prune=prune)
    return _plan(wanted, existing, prune=prune)


def jobfile_apply(
    *, document: Any, filename: str = "<document>", prune: bool = False
) -> Plan:
    """Make the database match `document` in one transaction; answers the plan."""
    try:
        with transaction.atomic():
            plan = jobfile_plan(document=document, filename=filename, prune=prune)
            for change in plan.changes:
                if change.run is not None:
                    change.run()
            for change in plan.changes:
                if change.later is not None:
                    change.later()
    except services.DependencyCycle as exc:
        # Validation finds the file's cycles; this is one made through the API
        # since, and the transaction has been rolled back.
        raise JobfileError([f"{filename}: {exc}"]) from None
    logger.info("applied %s: %d change(s)", filename, len(plan.changes))
    return plan
