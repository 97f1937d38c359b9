"""The operator console's dashboard: the admin index (jobs/admin/__init__.py) and
its figures (jobs/stats.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from agents.models import Agent
from jobs import services, stats
from jobs.models import Execution, Job, Schedule
from tests.jobs.conftest import NumQueries, make_agent, staff

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


def test_it_shows_the_dashboard_as_the_admin_index(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    make_execution: Callable[..., Execution],
) -> None:
    ok = make_job(name="nightly")
    broken = make_job(name="broken", last_error_at=timezone.now(), error_count=3)
    make_job(name="off", enabled=False)
    make_schedule("*/5 * * * *", job=ok)
    make_execution(job=ok, status=Execution.Status.RUNNING)
    make_execution(job=ok, status=Execution.Status.PAUSED)
    make_execution(job=ok, status=Execution.Status.SUCCEEDED)
    make_execution(job=broken, status=Execution.Status.FAILED)
    make_agent("alive@host")
    make_agent("gone@host", status=Agent.Status.OFFLINE)

    response = admin_client.get("/admin/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Operator console" in html
    assert '<span class="k-figure" id="k-jobs-enabled">2</span>' in html
    assert "(1 disabled)" in html
    assert '<span class="k-figure" id="k-running">1</span>' in html
    assert '<span class="k-figure" id="k-paused">1</span>' in html
    assert '<span class="k-figure" id="k-succeeded">1</span>' in html
    assert '<span class="k-figure" id="k-failed">1</span>' in html
    assert 'class="k-chart k-hourly"' in html
    assert 'data-outcome="succeeded"' in html and 'data-outcome="failed"' in html
    upcoming = html.split('id="k-upcoming"')[1].split('id="k-failing"')[0]
    assert upcoming.count("default / nightly") == 10
    failing = html.split('id="k-failing"')[1].split('id="k-agents"')[0]
    assert "Failing jobs (1)" in failing and "default / broken" in failing
    assert "nightly" not in failing
    agents = html.split('id="k-agents"')[1]
    assert '<span class="k-badge k-badge-alive">alive</span>' in agents
    assert '<span class="k-badge k-badge-offline">offline</span>' in agents
    assert "25%" in agents and "1.50" in agents and "75%" in agents
    # The app list is still there, under the dashboard.
    assert "/admin/jobs/job/" in html and "/admin/agents/agent/" in html
    assert "karmchari/console.css" in html


def test_it_builds_the_dashboard_in_few_queries_and_serves_it_from_the_cache(
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    make_execution: Callable[..., Execution],
    django_assert_num_queries: NumQueries,
) -> None:
    def world(n: int) -> None:
        for _ in range(n):
            job = make_job(last_error_at=timezone.now())
            make_schedule("* * * * *", job=job)
            make_execution(job=job, status=Execution.Status.FAILED)
            make_agent(f"w{uuid.uuid4().hex[:6]}@h")

    world(2)
    # jobs, active runs, hourly, upcoming, failing (+count at the cap), agents
    with django_assert_num_queries(6):
        stats.stats_dashboard()
    world(20)
    cache.clear()
    with django_assert_num_queries(7):
        figures = stats.stats_dashboard()
    assert figures["failing_total"] == 22
    assert len(figures["failing"]) == stats.FAILING
    with django_assert_num_queries(0):
        assert stats.stats_dashboard()["failing_total"] == 22


def test_it_counts_executions_per_hour_by_outcome(
    make_execution: Callable[..., Execution],
) -> None:
    now = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    with time_machine.travel(now - timedelta(hours=2), tick=False):
        make_execution(status=Execution.Status.SUCCEEDED)
        make_execution(status=Execution.Status.TIMED_OUT)
    with time_machine.travel(now - timedelta(minutes=5), tick=False):
        make_execution(status=Execution.Status.KILLED)
        make_execution(status=Execution.Status.RUNNING)
    with time_machine.travel(now - timedelta(hours=30), tick=False):
        make_execution(status=Execution.Status.FAILED)  # outside the window

    series = stats.stats_hourly(now=now)
    assert len(series) == 24
    assert series[-1]["hour"] == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert series[0]["hour"] == datetime(2026, 2, 28, 13, tzinfo=UTC)
    assert series[-3] | {"hour": None} == {
        "hour": None,
        "succeeded": 1,
        "failed": 1,
        "killed": 0,
        "skipped": 0,
        "active": 0,
    }
    assert series[-1]["killed"] == 1 and series[-1]["active"] == 1
    assert sum(sum(v for k, v in h.items() if k != "hour") for h in series) == 4


def test_it_labels_the_hours_with_the_console_s_own_clock() -> None:
    """Buckets are UTC hours: in a half-hour zone each starts at :30 local time, and
    says so (a run at 10:20 in India is in the bar from 09:30, not "09:00")."""
    from jobs.charts import hourly_svg

    hour = datetime(2026, 3, 1, 4, tzinfo=UTC)  # 09:30 in Asia/Kolkata
    series = [{"hour": hour, **dict.fromkeys(stats.OUTCOMES, 0), "succeeded": 1}]
    with timezone.override("Asia/Kolkata"):
        svg = str(hourly_svg(series))
    assert "2026-03-01 09:30: 1 succeeded" in svg
    assert ">09:30</text>" in svg


def test_it_lists_the_next_fire_times_over_all_schedules(
    make_job: Callable[..., Job], make_schedule: Callable[..., Schedule]
) -> None:
    with time_machine.travel(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC), tick=False):
        every_minute = make_schedule("* * * * *", job=make_job(name="often"))
        make_schedule("5 12 * * *", job=make_job(name="daily"))
        make_schedule("* * * * *", job=make_job(name="off", enabled=False))
        make_schedule("* * * * *", enabled=False)
        fires = stats._upcoming(timezone.now())
    assert [f["job"] for f in fires].count("often") == 9
    assert [f["job"] for f in fires].count("daily") == 1
    assert fires[0]["at"] == datetime(2026, 3, 1, 12, 1, tzinfo=UTC)
    assert [f["at"] for f in fires] == sorted(f["at"] for f in fires)
    assert {f["schedule_id"] for f in fires} >= {every_minute.pk}


def test_it_refreshes_the_dashboard_after_a_change_through_a_service(
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable[..., object],
) -> None:
    job = make_job()
    assert stats.stats_dashboard()["pending"] == 0
    with django_capture_on_commit_callbacks(execute=True):  # forgotten after commit
        services.job_trigger(job=job, trigger=Execution.Trigger.MANUAL)
    assert stats.stats_dashboard()["pending"] == 1


def test_it_shows_no_figures_to_a_user_without_job_permissions() -> None:
    html = staff().get("/admin/").content.decode()
    assert "k-figures" not in html
