"""The operator console's execution pages (jobs/admin/executions.py), and what a
viewer may not press."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone

from jobs.models import Execution, ExecutionEvent, Job
from karmchari_site.admin_ui import CappedPaginator
from tests.jobs.conftest import NumQueries, make_agent, staff

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


def test_it_lists_executions_with_badges_and_never_counts_the_table(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    django_assert_num_queries: NumQueries,
) -> None:
    agent = make_agent()
    for _ in range(3):
        job = make_job()
        make_execution(
            job=job, status=Execution.Status.RUNNING, agent=agent, worker=agent.name
        )
        make_execution(job=job, status=Execution.Status.TIMED_OUT)
    admin_client.get("/admin/jobs/execution/")
    # session, user, capped count, page
    with django_assert_num_queries(4) as captured:
        response = admin_client.get("/admin/jobs/execution/")
    sql = " ".join(q["sql"] for q in captured.captured_queries).upper()  # type: ignore[attr-defined]
    assert "LIMIT 10001" in sql
    html = response.content.decode()
    assert html.count('<span class="k-badge k-badge-running">running</span>') == 3
    assert html.count('<span class="k-badge k-badge-timed_out">timed out</span>') == 3
    assert "w1@host" in html
    with django_assert_num_queries(4):
        admin_client.get("/admin/jobs/execution/?status__exact=running")


def test_it_says_more_than_the_cap_on_the_execution_list(
    admin_client: Client,
    make_execution: Callable[..., Execution],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CappedPaginator, "CAP", 3)
    job = make_execution().job
    for _ in range(4):
        make_execution(job=job)
    html = admin_client.get("/admin/jobs/execution/").content.decode()
    assert "more than 3 executions" in html
    # Selecting "all" acts on every row the filters match: not "all 4".
    assert "Select all 4" not in html and "All 4 selected" not in html
    assert "(more than 3)" in html


def test_it_reads_no_column_of_the_whole_table_for_the_execution_list(
    admin_client: Client, make_execution: Callable[..., Execution]
) -> None:
    """No date hierarchy (a DISTINCT over every row), and a search that goes through
    the indexes: an id by its key, a job's name through the jobs table."""
    from django.test.utils import CaptureQueriesContext

    run = make_execution()
    for url in (
        "/admin/jobs/execution/",
        f"/admin/jobs/execution/?q={run.pk}",
        f"/admin/jobs/execution/?q={run.job.name}",
    ):
        with CaptureQueriesContext(connection) as queries:
            html = admin_client.get(url).content.decode()
        reads = [
            q["sql"].upper()
            for q in queries.captured_queries
            if 'FROM "JOBS_EXECUTION"' in q["sql"].upper()
        ]
        assert reads, url
        for sql in reads:
            assert "DISTINCT" not in sql, (url, sql)
            assert '"JOBS_EXECUTION"."ID"::TEXT' not in sql, (url, sql)
            assert "CAST(" not in sql, (url, sql)
        assert f"/admin/jobs/execution/{run.pk}/change/" in html, url


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's plan format")
@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "jobs_execution_newest"),
        ({"status": "failed"}, "jobs_execution_status"),
        ({"trigger": "manual"}, "jobs_execution_trigger"),
        ({"job_id": 1}, "jobs_execution_job_newest"),
    ],
)
def test_it_uses_an_index_for_the_execution_list_queries(
    filters: dict[str, object], index: str
) -> None:
    plan = (
        Execution.objects.filter(**filters)
        .defer("output", "error", "parameters")
        .order_by("-created", "-id")[:100]
        .explain()
    )
    assert index in plan, plan


def test_it_shows_status_duration_attempts_audit_and_log_on_the_execution_page(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    admin_user: User,
) -> None:
    job = make_job()
    now = timezone.now()
    first = make_execution(
        job=job,
        status=Execution.Status.FAILED,
        started_at=now - timedelta(seconds=90),
        finished_at=now - timedelta(seconds=30),
    )
    second = make_execution(
        job=job,
        status=Execution.Status.RUNNING,
        attempt=2,
        retry_of=first,
        started_at=now,
    )
    ExecutionEvent.objects.create(execution=first, action="retry", actor=admin_user)
    agent = make_agent("ran-it@host")
    Execution.objects.filter(pk=first.pk).update(worker=agent.name)

    html = admin_client.get(
        f"/admin/jobs/execution/{first.pk}/change/"
    ).content.decode()
    assert '<span class="k-badge k-badge-failed">failed</span>' in html
    assert "1m 00s" in html
    chain = html.split('class="k-chain"')[1].split("</span></a></span>")[0]
    assert chain.index(f"#{first.pk}") < chain.index(f"#{second.pk}")
    assert 'class="k-current"' in chain
    assert " \u2192 " in chain and "&amp;rarr;" not in chain
    assert "Control events" in html
    assert f'<a href="/admin/agents/agent/{agent.pk}/change/">ran-it@host</a>' in html
    assert f"/api/executions/{first.pk}/log/" in html
    assert "/control/retry/" in html
    assert re.search(r'<li data-when="running" hidden>', html)

    html = admin_client.get(
        f"/admin/jobs/execution/{second.pk}/change/"
    ).content.decode()
    assert "so far" in html
    assert re.search(r'<li data-when="running">', html)
    assert re.search(r'<li data-when="paused" hidden>', html)


# --- Permissions ----------------------------------------------------------------------


def test_it_shows_a_viewer_no_control_buttons_and_refuses_them_at_the_endpoints(
    make_job: Callable[..., Job], make_execution: Callable[..., Execution]
) -> None:
    client = staff("jobs.view_job", "jobs.view_execution", "jobs.view_schedule")
    job = make_job()
    execution = make_execution(job=job, status=Execution.Status.RUNNING)
    failed = make_execution(job=job, status=Execution.Status.FAILED)

    page = client.get(f"/admin/jobs/execution/{execution.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/control/" not in html and 'id="k-kill"' not in html
    assert (
        "/control/retry/"
        not in client.get(f"/admin/jobs/execution/{failed.pk}/change/").content.decode()
    )
    html = client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert f"/admin/jobs/job/{job.pk}/run/" not in html

    for verb in ("pause", "resume", "kill"):
        url = f"/admin/jobs/execution/{execution.pk}/control/{verb}/"
        assert client.post(url).status_code == 403
    assert (
        client.post(f"/admin/jobs/execution/{failed.pk}/control/retry/").status_code
        == 403
    )
    assert client.post(f"/admin/jobs/job/{job.pk}/run/").status_code == 403
    response = client.post(
        "/admin/jobs/job/", {"action": "run_now", "_selected_action": [job.pk]}
    )
    assert response.status_code == 200  # the action is not offered
    execution.refresh_from_db()
    assert execution.desired_state == Execution.DesiredState.RUN
    assert not ExecutionEvent.objects.exists()
    assert Execution.objects.count() == 2


def test_it_refreshes_the_dashboard_when_runs_are_deleted(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """The dashboard's figures are cached; deleting runs, from a run's page or with
    "Delete selected executions", must drop them."""
    job = make_job()
    one, two = (make_execution(job=job, status=Execution.Status.FAILED) for _ in "12")
    failed = '<span class="k-figure" id="k-failed">{}</span>'
    assert failed.format(2) in admin_client.get("/admin/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/jobs/execution/{one.pk}/delete/", {"post": "yes"}
        )
    assert response.status_code == 302
    assert failed.format(1) in admin_client.get("/admin/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/jobs/execution/",
            {"action": "delete_selected", "_selected_action": [two.pk], "post": "yes"},
        )
    assert response.status_code == 302
    assert not Execution.objects.exists()
    assert failed.format(0) in admin_client.get("/admin/").content.decode()
