"""Planning a document against the database, and applying the plan."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from jobs import services
from jobs.jobfile.export import _plain
from jobs.jobfile.reading import (
    _CREATE_ONLY,
    APP_FIELDS,
    JOB_FIELDS,
    SCHEDULE_FIELDS,
    JobfileError,
)
from jobs.jobfile.validate import (
    _doomed,
    _existing_jobs,
    _links,
    _pruned,
    _validate,
    _WantApp,
    _WantJob,
)
from jobs.models import App, Job, Schedule
from jobs.runners import SECRET_MASK
from jobs.secrets import secret_matches

logger = logging.getLogger(__name__)


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
        # The oldest unmatched row with the same key: a job with the same schedule
        # twice (the API allows it) matches them in order, as they were exported.
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
