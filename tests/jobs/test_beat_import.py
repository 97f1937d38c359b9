"""The django-celery-beat importer, on real django-celery-beat tables and rows."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.test.utils import override_settings
from django.utils import timezone

from jobs.models import Job, Schedule
from jobs.services.schedules import schedule_upcoming

BEAT_INSTALLED = [*settings.INSTALLED_APPS, "django_celery_beat"]


@pytest.fixture(scope="module")
def beat_schema(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """django-celery-beat's tables, made by its own migrations, dropped afterwards."""
    with django_db_blocker.unblock(), override_settings(INSTALLED_APPS=BEAT_INSTALLED):
        call_command("migrate", "django_celery_beat", verbosity=0)
    yield
    with django_db_blocker.unblock(), override_settings(INSTALLED_APPS=BEAT_INSTALLED):
        call_command("migrate", "django_celery_beat", "zero", verbosity=0)
        # Its migration made content types and permissions, which the admin of a
        # later test would look its models up by.
        ContentType.objects.filter(app_label="django_celery_beat").delete()
        ContentType.objects.clear_cache()
    # Installing the app ran the admin's autodiscovery, which registered its models.
    for model in list(admin.site._registry):
        if model._meta.app_label == "django_celery_beat":
            admin.site.unregister(model)


@pytest.fixture
def beat_tables(beat_schema: None, db: None) -> None:
    """Rows made in a test go with its transaction."""


def make_rows() -> None:
    with override_settings(INSTALLED_APPS=BEAT_INSTALLED):
        from django_celery_beat.models import (
            ClockedSchedule,
            CrontabSchedule,
            IntervalSchedule,
            PeriodicTask,
            SolarSchedule,
        )

        crontab = CrontabSchedule.objects.create(
            minute="30", hour="4", day_of_week="1-5", timezone="Europe/Paris"
        )
        PeriodicTask.objects.create(
            name="Nightly report",
            task="reports.nightly",
            crontab=crontab,
            kwargs='{"full": true}',
            queue="reports",
        )
        every = IntervalSchedule.objects.create(every=15, period="minutes")
        PeriodicTask.objects.create(
            name="poll", task="feeds.poll", interval=every, args="[1, 2]"
        )
        clocked = ClockedSchedule.objects.create(
            clocked_time=datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
        )
        PeriodicTask.objects.create(
            name="launch", task="rocket.launch", clocked=clocked, one_off=True
        )
        sun = SolarSchedule.objects.create(
            event="sunrise", latitude="48.85", longitude="2.35"
        )
        PeriodicTask.objects.create(name="wake", task="rooster.crow", solar=sun)


def beat_enabled() -> dict[str, bool]:
    with override_settings(INSTALLED_APPS=BEAT_INSTALLED):
        from django_celery_beat.models import PeriodicTask

        return dict(PeriodicTask.objects.values_list("name", "enabled"))


ALLOWED = ["reports.nightly", "feeds.poll", "rocket.launch"]


@override_settings(KARMCHARI_ALLOWED_TASKS=ALLOWED)
def test_it_imports_crontab_interval_and_clocked_tasks(beat_tables: None) -> None:
    make_rows()
    out, err = io.StringIO(), io.StringIO()
    call_command("jobs", "import-beat", "--disable-source", stdout=out, stderr=err)

    assert "skipped wake: solar schedule (sunrise" in err.getvalue()
    assert "+ job celery-beat/Nightly-report" in out.getvalue()
    nightly = Job.objects.get(name="Nightly-report")
    assert nightly.kind == Job.Kind.TASK
    assert nightly.spec == {
        "task": "reports.nightly",
        "kwargs": {"full": True},
        "queue": "reports",
    }
    assert nightly.description == "Nightly report"
    cron = nightly.schedules.get()
    assert (cron.kind, cron.expression, cron.timezone) == (
        "cron",
        "30 4 * * 1-5",
        "Europe/Paris",
    )
    poll = Schedule.objects.get(job__name="poll")
    assert poll.expression == "R/2000-01-01T00:00:00Z/PT15M"
    assert poll.job.spec["args"] == [1, 2]
    launch = Schedule.objects.get(job__name="launch")
    assert (launch.kind, launch.expression) == ("once", "2030-01-01T09:00:00+00:00")
    assert beat_enabled() == {
        "Nightly report": False,
        "poll": False,
        "launch": False,
        "wake": True,
    }

    # Importing again (the sources now disabled) changes nothing.
    again, err = io.StringIO(), io.StringIO()
    call_command("jobs", "import-beat", stdout=again, stderr=err)
    assert again.getvalue().strip() == "No changes."
    assert "poll: disabled there, already imported" in err.getvalue()
    assert Schedule.objects.filter(enabled=False).count() == 0


def test_it_names_tasks_that_are_not_allowed(beat_tables: None) -> None:
    make_rows()
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("jobs", "import-beat", stdout=io.StringIO(), stderr=err)
    assert "spec.task: 'reports.nightly' is not in KARMCHARI_ALLOWED_TASKS" in (
        err.getvalue()
    )
    assert not Job.objects.exists()


@override_settings(KARMCHARI_ALLOWED_TASKS=ALLOWED)
def test_it_writes_yaml_instead_of_applying(beat_tables: None) -> None:
    make_rows()
    out = io.StringIO()
    call_command(
        "jobs", "import-beat", "--output", "-", stdout=out, stderr=io.StringIO()
    )
    assert "expression: 30 4 * * 1-5" in out.getvalue()
    assert not Job.objects.exists()


def test_it_says_when_the_tables_are_missing(
    beat_schema: None, transactional_db: None
) -> None:
    with override_settings(INSTALLED_APPS=BEAT_INSTALLED):
        call_command("migrate", "django_celery_beat", "zero", verbosity=0)
    try:
        with pytest.raises(
            CommandError, match="Cannot read django-celery-beat's tables"
        ):
            call_command("jobs", "import-beat", stdout=io.StringIO())
    finally:
        with override_settings(INSTALLED_APPS=BEAT_INSTALLED):
            call_command("migrate", "django_celery_beat", verbosity=0)


@contextmanager
def beat_rows() -> Iterator[Any]:
    """django-celery-beat's models, to make rows with."""
    with override_settings(INSTALLED_APPS=BEAT_INSTALLED):
        from django_celery_beat import models

        yield models


def run_import(*args: str) -> tuple[str, str, CommandError | None]:
    out, err = io.StringIO(), io.StringIO()
    failure = None
    try:
        call_command("jobs", "import-beat", *args, stdout=out, stderr=err)
    except CommandError as exc:
        failure = exc
    return out.getvalue(), err.getvalue(), failure


ODD_ALLOWED = ["t.a", "t.b", "t.c"]


def _celery_fires(crontab_row: Any, after: datetime, n: int) -> list[datetime]:
    """What django-celery-beat's own schedule (TzAwareCrontab) fires next."""
    sched = crontab_row.schedule
    fires, t = [], after.astimezone(crontab_row.timezone)
    for _ in range(n):
        start, ends_in, _now = sched.remaining_delta(t)
        t = start + ends_in
        fires.append(t.astimezone(UTC))
    return fires


# --- As django-celery-beat fires them --------------------------------------------


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_fires_dom_and_dow_crontab_only_when_both_match(beat_tables: None) -> None:
    """celery crontab ANDs day_of_month and day_of_week ("first Monday of the
    month"); the imported cron expression is read with cron's OR rule."""
    with beat_rows() as m:
        c = m.CrontabSchedule.objects.create(
            minute="0",
            hour="9",
            day_of_month="1-7",
            day_of_week="1",
            timezone="UTC",
        )
        m.PeriodicTask.objects.create(name="first-monday", task="t.a", crontab=c)
        after = datetime(2026, 1, 1, tzinfo=UTC)
        expected = _celery_fires(c, after, 4)
    _, err, exc = run_import()
    assert exc is None, err
    s = Schedule.objects.get(job__name="first-monday")
    assert schedule_upcoming(s, after=after, n=4) == expected


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_accepts_full_weekday_names_celery_accepts(beat_tables: None) -> None:
    """celery.schedules.weekday() reads the first three letters: 'monday',
    'Friday' are valid crontab day_of_week values."""
    with beat_rows() as m:
        c = m.CrontabSchedule.objects.create(
            minute="0", hour="9", day_of_week="monday-friday", timezone="UTC"
        )
        m.PeriodicTask.objects.create(name="weekdays", task="t.a", crontab=c)
        after = datetime(2026, 1, 1, tzinfo=UTC)
        expected = _celery_fires(c, after, 5)
    _, err, exc = run_import()
    assert exc is None, err
    assert "skipped" not in err
    s = Schedule.objects.get(job__name="weekdays")
    assert schedule_upcoming(s, after=after, n=5) == expected


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_imports_microsecond_intervals_of_whole_seconds(beat_tables: None) -> None:
    """IntervalSchedule(every=30_000_000, period='microseconds') is a 30 s
    timedelta in celery; it is skipped as 'below one second'."""
    with beat_rows() as m:
        i = m.IntervalSchedule.objects.create(every=30_000_000, period="microseconds")
        m.PeriodicTask.objects.create(name="tick", task="t.a", interval=i)
    _, err, exc = run_import()
    assert exc is None, err
    assert "skipped" not in err
    assert Schedule.objects.get(job__name="tick").expression.endswith("/PT30S")


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_anchors_intervals_on_last_run(beat_tables: None) -> None:
    """django-celery-beat fires an interval task `every` after last_run_at
    (ModelEntry: schedule.is_due(last_run_at)); the import anchors every interval
    on 2000-01-01, shifting the phase (an hourly task that last ran at :17 moves
    to :00)."""
    last = timezone.now().replace(minute=17, second=0, microsecond=0) - timedelta(
        hours=1
    )
    with beat_rows() as m:
        i = m.IntervalSchedule.objects.create(every=1, period="hours")
        m.PeriodicTask.objects.create(
            name="hourly", task="t.a", interval=i, last_run_at=last
        )
    _, err, exc = run_import()
    assert exc is None, err
    s = Schedule.objects.get(job__name="hourly")
    assert s.next_run_at is not None
    assert s.next_run_at.minute == 17


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_does_not_refire_a_one_off_task_that_already_ran(beat_tables: None) -> None:
    """ModelEntry.is_due: one_off and total_run_count > 0 -> never due again
    (beat disables it). The import still gives it repetitions_left=1."""
    with beat_rows() as m:
        c = m.CrontabSchedule.objects.create(minute="0", hour="3", timezone="UTC")
        m.PeriodicTask.objects.create(
            name="once-done",
            task="t.a",
            crontab=c,
            one_off=True,
            total_run_count=1,
            last_run_at=timezone.now() - timedelta(hours=2),
        )
    _, err, exc = run_import()
    assert exc is None, err
    s = Schedule.objects.filter(job__name="once-done").first()
    assert s is None or s.next_run_at is None or not s.enabled


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_keeps_a_clocked_task_whose_time_just_passed(beat_tables: None) -> None:
    """clocked.is_due(): a clocked_time in the past is due at once, so beat runs an
    enabled, never-run clocked task as soon as it starts. The import creates a
    `once` schedule that never fires, and says nothing."""
    with beat_rows() as m:
        k = m.ClockedSchedule.objects.create(
            clocked_time=timezone.now() - timedelta(minutes=5)
        )
        m.PeriodicTask.objects.create(
            name="launch", task="t.a", clocked=k, one_off=True
        )
    _, err, exc = run_import()
    assert exc is None, err
    s = Schedule.objects.filter(job__name="launch").first()
    fires = s is not None and s.enabled and s.next_run_at is not None
    assert fires or "launch" in err


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_does_not_fire_at_the_expires_instant(beat_tables: None) -> None:
    """ModelEntry.is_due disables the task when now >= expires, so a slot at the
    expires instant never runs; end_at keeps a fire at end_at."""
    expires = datetime(2030, 1, 1, 4, 0, tzinfo=UTC)
    with beat_rows() as m:
        c = m.CrontabSchedule.objects.create(minute="0", hour="4", timezone="UTC")
        m.PeriodicTask.objects.create(
            name="until", task="t.a", crontab=c, expires=expires
        )
    _, err, exc = run_import()
    assert exc is None, err
    s = Schedule.objects.get(job__name="until")
    fires = schedule_upcoming(s, after=expires - timedelta(days=2), n=5)
    assert expires not in fires


# --- options ------------------------------------------------------------------------


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_does_not_silently_drop_priority_headers_routing(beat_tables: None) -> None:
    """ModelEntry sends queue, exchange, routing_key, priority, headers and
    expire_seconds as apply_async options. Only queue is imported; the rest are
    dropped without a word."""
    with beat_rows() as m:
        c = m.CrontabSchedule.objects.create(minute="0", hour="3", timezone="UTC")
        m.PeriodicTask.objects.create(
            name="routed",
            task="t.a",
            crontab=c,
            priority=9,
            headers='{"tenant": "acme"}',
            routing_key="fast.key",
            exchange="fastx",
            expire_seconds=60,
        )
    _, err, exc = run_import()
    assert exc is None, err
    job = Job.objects.get(name="routed")
    spec_text = str(job.spec)
    for word in ("priority", "tenant", "fast.key", "expire"):
        assert word in spec_text or word in err, word


# --- odd rows -----------------------------------------------------------------------


def _two_rows(m: Any, bad: dict[str, Any]) -> None:
    c = m.CrontabSchedule.objects.create(minute="0", hour="3", timezone="UTC")
    m.PeriodicTask.objects.create(name="good", task="t.a", crontab=c)
    m.PeriodicTask.objects.create(name="bad", task="t.b", crontab=c, **bad)


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_skips_a_row_whose_args_are_not_a_list(beat_tables: None) -> None:
    """args='{"x": 1}' is JSON (so not 'skipped'), but it fails the task spec and
    the whole import is refused: one odd row blocks every other task."""
    with beat_rows() as m:
        _two_rows(m, {"args": '{"x": 1}'})
    _, err, exc = run_import()
    assert Job.objects.filter(name="good").exists(), (exc, err)


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_skips_a_row_whose_kwargs_hold_nan(beat_tables: None) -> None:
    """json.loads accepts NaN/Infinity; the jobfile refuses non-finite numbers and
    the whole import is refused."""
    with beat_rows() as m:
        _two_rows(m, {"kwargs": '{"limit": Infinity}'})
    _, err, exc = run_import()
    assert Job.objects.filter(name="good").exists(), (exc, err)


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_skips_a_row_that_expires_before_it_starts(beat_tables: None) -> None:
    """A crontab task with expires <= start_time never runs in beat; the import
    turns it into end_at <= start_at, which refuses the whole import."""
    with beat_rows() as m:
        _two_rows(
            m,
            {
                "start_time": datetime(2030, 1, 2, tzinfo=UTC),
                "expires": datetime(2030, 1, 1, tzinfo=UTC),
            },
        )
    _, err, exc = run_import()
    assert Job.objects.filter(name="good").exists(), (exc, err)


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_skips_a_row_with_an_epoch_start_time(beat_tables: None) -> None:
    """start_time 1970-01-01 (a common 'no start' placeholder) is valid in beat;
    start_at must be >= 1971, and the whole import is refused."""
    with beat_rows() as m:
        _two_rows(m, {"start_time": datetime(1970, 1, 1, tzinfo=UTC)})
    _, err, exc = run_import()
    assert Job.objects.filter(name="good").exists(), (exc, err)


# --- re-imports ---------------------------------------------------------------------


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_keeps_each_job_on_its_task_when_a_new_name_collides(
    beat_tables: None,
) -> None:
    """Names are de-duplicated by suffix in name order, so a new task whose name
    normalises to an existing job's name and sorts first takes that job over (its
    spec, history), and the old task moves to a new job."""
    with beat_rows() as m:
        c = m.CrontabSchedule.objects.create(minute="0", hour="3", timezone="UTC")
        m.PeriodicTask.objects.create(name="a/b", task="t.a", crontab=c)
    _, err, exc = run_import("--disable-source")
    assert exc is None, err
    assert Job.objects.get(name="a-b").spec["task"] == "t.a"
    with beat_rows() as m:
        m.PeriodicTask.objects.create(name="a b", task="t.b", crontab=c)
    _, err, exc = run_import()
    assert exc is None, err
    assert Job.objects.get(name="a-b").spec["task"] == "t.a"


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_imports_a_valid_crontab_with_long_value_lists(beat_tables: None) -> None:
    """CrontabSchedule.minute holds up to 240 characters and celery accepts explicit
    lists; joined, the five fields pass Schedule.expression's 200-character limit
    and the task is skipped, though the same times fit a short expression."""
    with beat_rows() as m:
        c = m.CrontabSchedule.objects.create(
            minute=",".join(str(i) for i in range(0, 60, 2)),
            hour=",".join(str(i) for i in range(24)),
            day_of_month=",".join(str(i) for i in range(1, 32)),
            timezone="UTC",
        )
        m.PeriodicTask.objects.create(name="lists", task="t.a", crontab=c)
        after = datetime(2026, 1, 1, tzinfo=UTC)
        expected = _celery_fires(c, after, 3)
    _, err, exc = run_import()
    assert exc is None, err
    assert "skipped" not in err
    s = Schedule.objects.get(job__name="lists")
    assert schedule_upcoming(s, after=after, n=3) == expected


@override_settings(KARMCHARI_ALLOWED_TASKS=ODD_ALLOWED)
def test_it_skips_or_clamps_a_far_future_expires(beat_tables: None) -> None:
    """expires=9999-12-31 ('never') is fine for beat; end_at must be <= 9998, and
    the whole import is refused."""
    with beat_rows() as m:
        _two_rows(m, {"expires": datetime(9999, 12, 31, tzinfo=UTC)})
    _, err, exc = run_import()
    assert Job.objects.filter(name="good").exists(), (exc, err)
