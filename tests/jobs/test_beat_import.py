"""The django-celery-beat importer, on real django-celery-beat tables and rows."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test.utils import override_settings

from jobs.models import Job, Schedule

BEAT_INSTALLED = [*settings.INSTALLED_APPS, "django_celery_beat"]


@pytest.fixture
def beat_tables(transactional_db: None) -> Iterator[None]:
    """django-celery-beat's tables, made by its own migrations, dropped afterwards."""
    with override_settings(INSTALLED_APPS=BEAT_INSTALLED):
        call_command("migrate", "django_celery_beat", verbosity=0)
    yield
    with override_settings(INSTALLED_APPS=BEAT_INSTALLED):
        call_command("migrate", "django_celery_beat", "zero", verbosity=0)


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


def test_it_says_when_the_tables_are_missing(transactional_db: None) -> None:
    with pytest.raises(CommandError, match="Cannot read django-celery-beat's tables"):
        call_command("jobs", "import-beat", stdout=io.StringIO())
