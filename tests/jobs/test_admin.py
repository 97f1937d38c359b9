"""The operator console: dashboard, job, schedule, app and execution pages."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone

from agents.models import Agent
from jobs import services, stats
from jobs.admin import CappedPaginator, JobForm
from jobs.models import App, Execution, ExecutionEvent, Job, Schedule
from jobs.runners import SECRET_MASK
from jobs.secrets import job_secrets_reveal

pytestmark = pytest.mark.django_db

NumQueries = Callable[..., object]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


def make_agent(name: str = "w1@host", **fields: object) -> Agent:
    fields.setdefault("instance_id", uuid.uuid4())
    fields.setdefault("last_heartbeat", timezone.now())
    fields.setdefault("cpu_cores", 8)
    fields.setdefault("memory_total", 16 << 30)
    fields.setdefault("memory_free", 4 << 30)
    fields.setdefault("system_cpu_load", 0.25)
    fields.setdefault("load_average", [1.5, 1.0, 0.5])
    return Agent.objects.create(name=name, **fields)


def staff(*perms: str) -> Client:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


# --- Dashboard ---------------------------------------------------------------------


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


def test_a_change_through_a_service_refreshes_the_dashboard(
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable[..., object],
) -> None:
    job = make_job()
    assert stats.stats_dashboard()["pending"] == 0
    with django_capture_on_commit_callbacks(execute=True):  # forgotten after commit
        services.job_trigger(job=job, trigger=Execution.Trigger.MANUAL)
    assert stats.stats_dashboard()["pending"] == 1


def test_a_user_without_job_permissions_sees_no_figures() -> None:
    html = staff().get("/admin/").content.decode()
    assert "k-figures" not in html


# --- Apps -------------------------------------------------------------------------


def test_it_lists_apps_with_their_job_counts_in_constant_queries(
    admin_client: Client,
    make_job: Callable[..., Job],
    django_assert_num_queries: NumQueries,
) -> None:
    for i in range(5):
        app = App.objects.create(name=f"app{i}")
        make_job(app=app)
        make_job(app=app)
    admin_client.get("/admin/jobs/app/")
    with django_assert_num_queries(5):  # session, user, 2 counts, page
        response = admin_client.get("/admin/jobs/app/")
    assert '<a href="/admin/jobs/job/?app__id__exact=' in response.content.decode()


# --- Jobs -------------------------------------------------------------------------


def test_it_lists_jobs_with_schedule_last_status_and_next_run_in_constant_queries(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    make_execution: Callable[..., Execution],
    django_assert_num_queries: NumQueries,
) -> None:
    def world(n: int) -> None:
        for _ in range(n):
            job = make_job()
            make_schedule("*/5 * * * *", job=job)
            make_schedule("0 3 * * *", job=job)
            make_execution(job=job, status=Execution.Status.SUCCEEDED)
            make_execution(job=job, status=Execution.Status.FAILED)

    world(2)
    make_job(name="idle")
    # session, user, app filter choices, 2 counts, page, schedules prefetch
    with django_assert_num_queries(7):
        admin_client.get("/admin/jobs/job/")
    world(10)
    with django_assert_num_queries(7):
        response = admin_client.get("/admin/jobs/job/")
    html = response.content.decode()
    assert html.count('<span class="k-badge k-badge-failed">failed</span>') == 12
    assert '<span class="k-badge k-badge-never">never run</span>' in html
    assert "(+1 more)" in html
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in ", html)


def test_it_filters_jobs_by_last_status(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    failed, fixed = make_job(name="failed-now"), make_job(name="fixed-now")
    make_job(name="never-ran")
    make_execution(job=failed, status=Execution.Status.SUCCEEDED)
    make_execution(job=failed, status=Execution.Status.FAILED)
    make_execution(job=fixed, status=Execution.Status.FAILED)
    make_execution(job=fixed, status=Execution.Status.SUCCEEDED)

    def names(query: str) -> set[str]:
        response = admin_client.get(f"/admin/jobs/job/?{query}")
        return set(
            re.findall(
                r">((?:failed|fixed|never)-[a-z]+)</a>", response.content.decode()
            )
        )

    assert names("last_status=failed") == {"failed-now"}
    assert names("last_status=succeeded") == {"fixed-now"}
    assert names("last_status=never") == {"never-ran"}
    assert names("q=fixed") == {"fixed-now"}


def test_it_shows_schedules_runs_dependencies_and_stats_on_the_job_page(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    make_execution: Callable[..., Execution],
) -> None:
    job = make_job(name="parent")
    child = make_job(name="child")
    services.job_set_parents(job=child, parents=[job])
    make_schedule("0 9 * * 1-5", job=job, timezone="Europe/Berlin")
    runs = [
        make_execution(job=job, status=Execution.Status.SUCCEEDED) for _ in range(12)
    ]

    response = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "cron: at 09:00 on MON-FRI (Europe/Berlin)" in html
    assert html.count('class="k-fire"') == 5
    assert "CET" in html or "CEST" in html
    assert "Recent executions (newest 10)" in html
    assert f"/admin/jobs/execution/{runs[-1].pk}/change/" in html
    assert f"/admin/jobs/execution/{runs[0].pk}/change/" not in html
    assert f'<a href="/admin/jobs/job/{child.pk}/change/">default / child</a>' in html
    assert 'id="k-job-stats"' in html and "k-hourly" in html
    assert f"/admin/jobs/job/{job.pk}/run/" in html
    assert f"/admin/jobs/execution/?job__id__exact={job.pk}" in html


def test_saving_the_job_page_keeps_its_runs_and_schedules(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    make_execution: Callable[..., Execution],
) -> None:
    job = make_job(name="keep")
    schedule = make_schedule("0 9 * * *", job=job)
    run = make_execution(job=job, status=Execution.Status.SUCCEEDED)
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    form = page.context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if name in form.fields and value is not None
    }
    data.update(
        {
            "app": job.app_id,
            "spec": '{"command": "echo changed"}',
            "tags": "[]",
            "parents": [],
            "enabled": "",
            "schedules-TOTAL_FORMS": "1",
            "schedules-INITIAL_FORMS": "1",
            "schedules-0-id": schedule.pk,
            "schedules-0-job": job.pk,
            "schedules-0-kind": "cron",
            "schedules-0-expression": "0 10 * * *",
            "schedules-0-timezone": "UTC",
            "schedules-0-enabled": "on",
            "secrets-TOTAL_FORMS": "0",
            "secrets-INITIAL_FORMS": "0",
            "executions-TOTAL_FORMS": "1",
            "executions-INITIAL_FORMS": "1",
            "executions-0-id": run.pk,
            "executions-0-job": job.pk,
        }
    )
    data.pop("legacy", None)
    for name in ("legacy",):
        if name in form.fields:
            data[name] = "{}"
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    job.refresh_from_db()
    schedule.refresh_from_db()
    assert job.spec == {"command": "echo changed"} and not job.enabled
    assert schedule.expression == "0 10 * * *" and schedule.next_run_at is not None
    assert Execution.objects.get(pk=run.pk).status == Execution.Status.SUCCEEDED


def test_the_job_form_refuses_a_bad_spec_and_a_dependency_cycle(
    make_job: Callable[..., Job],
) -> None:
    parent = make_job(name="p")
    child = make_job(name="c")
    services.job_set_parents(job=child, parents=[parent])
    form = JobForm(
        instance=parent,
        data={
            "app": parent.app_id,
            "name": "p",
            "kind": "shell",
            "spec": '{"commandd": "x"}',
            "queue": "celery",
            "max_retries": 0,
            "retry_backoff": 10,
            "overlap_policy": "skip",
            "tags": "[]",
            "legacy": "{}",
            "parents": [child.pk],
        },
    )
    assert not form.is_valid()
    assert "commandd" in str(form.errors["spec"])
    assert "would depend on itself" in str(form.errors["parents"])


def test_the_job_form_does_not_offer_a_job_as_its_own_parent(
    make_job: Callable[..., Job],
) -> None:
    job, other = make_job(name="self"), make_job(name="other")
    offered = set(JobForm(instance=job).fields["parents"].queryset)  # type: ignore[attr-defined]
    assert offered == {other}
    assert set(JobForm().fields["parents"].queryset) == {job, other}  # type: ignore[attr-defined]


def _job_page_data(page: object, **extra: object) -> dict[str, object]:
    """What the job page posts back unchanged, plus `extra`."""
    form = page.context["adminform"].form  # type: ignore[attr-defined]
    data: dict[str, object] = {
        name: value
        for name, value in form.initial.items()
        if name in form.fields and value is not None and name != "parents"
    }
    data["spec"] = json.dumps(form.initial["spec"])
    data["tags"] = json.dumps(form.initial["tags"])
    data["legacy"] = "{}"
    data["enabled"] = "on"
    for formset in page.context["inline_admin_formsets"]:  # type: ignore[attr-defined]
        management = formset.formset.management_form
        prefix = formset.formset.prefix
        data[f"{prefix}-TOTAL_FORMS"] = management.initial["TOTAL_FORMS"]
        data[f"{prefix}-INITIAL_FORMS"] = management.initial["INITIAL_FORMS"]
        for index, inline in enumerate(formset.formset.forms):
            data[f"{prefix}-{index}-id"] = inline.instance.pk
            data[f"{prefix}-{index}-job"] = inline.instance.job_id
            if prefix == "secrets":
                data[f"{prefix}-{index}-name"] = inline.instance.name
            if prefix == "schedules":
                for field in ("kind", "expression", "timezone"):
                    data[f"{prefix}-{index}-{field}"] = getattr(inline.instance, field)
    data.update(extra)
    return data


def test_the_job_page_shows_secret_names_never_their_values(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    job = services.job_create(
        app=make_app(),
        name="backup",
        spec={"command": "backup.sh", "env": {"API_TOKEN": "s3cret-value", "X": "1"}},
    )
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    html = page.content.decode()
    assert "API_TOKEN" in html
    assert "s3cret-value" not in html
    assert 'type="password"' in html

    # Blank keeps the stored value; a new row sets one; the spec's env moves over.
    data = _job_page_data(
        page,
        spec=json.dumps({"command": "backup.sh", "env": {"DB_PASSWORD": "from-spec"}}),
        **{
            "secrets-TOTAL_FORMS": "2",
            "secrets-0-new_value": "",
            "secrets-1-name": "NEW_ONE",
            "secrets-1-new_value": "fresh-value",
            "secrets-1-job": job.pk,
        },
    )
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/change/", data)
    assert response.status_code == 302, response.context["errors"]
    job.refresh_from_db()
    assert job.spec == {"command": "backup.sh"}
    assert job_secrets_reveal(job_id=job.pk) == {
        "API_TOKEN": "s3cret-value",
        "DB_PASSWORD": "from-spec",
        "NEW_ONE": "fresh-value",
    }
    html = admin_client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    for value in ("s3cret-value", "from-spec", "fresh-value"):
        assert value not in html
    history = admin_client.get(f"/admin/jobs/job/{job.pk}/history/").content.decode()
    assert "fresh-value" not in history


def test_the_job_page_changes_and_deletes_secrets(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    job = services.job_create(
        app=make_app(),
        name="sync",
        spec={"command": "sync.sh"},
        secrets={"A_TOKEN": "old-value", "B_TOKEN": "doomed-value"},
    )
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    data = _job_page_data(
        page,
        **{
            "secrets-0-new_value": "new-value",
            "secrets-1-DELETE": "on",
        },
    )
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/change/", data)
    assert response.status_code == 302, response.context["errors"]
    assert job_secrets_reveal(job_id=job.pk) == {"A_TOKEN": "new-value"}


def test_the_job_page_needs_a_value_for_a_new_secret(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    data = _job_page_data(
        page,
        **{
            "secrets-TOTAL_FORMS": "1",
            "secrets-0-name": "EMPTY_TOKEN",
            "secrets-0-job": job.pk,
        },
    )
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/change/", data)
    assert response.status_code == 200
    assert "A new secret needs a value." in response.content.decode()
    assert not job.secrets.exists()


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_the_job_page_shows_secrets_read_only_to_who_cannot_edit_the_job(
    role: str, make_app: Callable[..., App]
) -> None:
    from django.contrib.auth.models import Group

    # A shell job: editors may not change those, so its secrets are read-only too.
    job = services.job_create(
        app=make_app(), name="b", spec={"command": "x"}, secrets={"A_KEY": "v4lue"}
    )
    user = User.objects.create_user("u", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/admin/jobs/job/{job.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "A_KEY" in html and "v4lue" not in html
    assert 'name="secrets-0-new_value"' not in html
    # The value column says a value is stored, without it (not "None").
    cell = re.search(r'<td class="field-new_value">\s*<p>(.*?)</p>', html)
    assert cell is not None and cell[1] == SECRET_MASK
    response = browser.post(
        f"/admin/jobs/job/{job.pk}/change/",
        {
            "secrets-TOTAL_FORMS": "1",
            "secrets-INITIAL_FORMS": "1",
            "secrets-0-id": job.secrets.get().pk,
            "secrets-0-name": "A_KEY",
            "secrets-0-new_value": "changed",
        },
    )
    assert response.status_code == 403
    assert job_secrets_reveal(job_id=job.pk) == {"A_KEY": "v4lue"}


def test_adding_a_job_in_the_admin_moves_spec_secrets_out(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    app = make_app()
    data = {
        "app": app.pk,
        "name": "fresh",
        "kind": "shell",
        "spec": json.dumps({"command": "x", "env": {"MY_PASSWORD": "pw-value"}}),
        "enabled": "on",
        "queue": "celery",
        "max_retries": 0,
        "retry_backoff": 10,
        "overlap_policy": "skip",
        "tags": "[]",
        "legacy": "{}",
        "schedules-TOTAL_FORMS": "0",
        "schedules-INITIAL_FORMS": "0",
        "secrets-TOTAL_FORMS": "1",
        "secrets-INITIAL_FORMS": "0",
        "secrets-0-name": "API_KEY",
        "secrets-0-new_value": "key-value",
        "executions-TOTAL_FORMS": "0",
        "executions-INITIAL_FORMS": "0",
    }
    response = admin_client.post("/admin/jobs/job/add/", data)
    assert response.status_code == 302, response.context["errors"]
    job = Job.objects.get(name="fresh")
    assert job.spec == {"command": "x"}
    assert job_secrets_reveal(job_id=job.pk) == {
        "API_KEY": "key-value",
        "MY_PASSWORD": "pw-value",
    }


def test_run_now_starts_a_run_and_opens_its_page(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/run/", follow=True)
    execution = Execution.objects.get(job=job)
    assert execution.trigger == Execution.Trigger.MANUAL
    assert response.redirect_chain[-1][0] == (
        f"/admin/jobs/execution/{execution.pk}/change/"
    )
    assert f"Started {job.name} as #{execution.pk}." in response.content.decode()
    assert admin_client.get(f"/admin/jobs/job/{job.pk}/run/").status_code == 405


def test_run_now_on_a_disabled_job_says_why(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    job = make_job(enabled=False)
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/run/", follow=True)
    assert "is disabled; enable it before running it" in response.content.decode()
    assert not Execution.objects.exists()


def test_list_actions_run_enable_and_disable_through_services(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    jobs = [make_job(), make_job()]
    ids = [job.pk for job in jobs]
    admin_client.post(
        "/admin/jobs/job/", {"action": "disable", "_selected_action": ids}
    )
    assert not Job.objects.filter(enabled=True).exists()
    admin_client.post("/admin/jobs/job/", {"action": "enable", "_selected_action": ids})
    assert Job.objects.filter(enabled=True).count() == 2
    response = admin_client.post(
        "/admin/jobs/job/", {"action": "run_now", "_selected_action": ids}, follow=True
    )
    assert "Started 2 job(s)." in response.content.decode()
    assert Execution.objects.filter(trigger=Execution.Trigger.MANUAL).count() == 2


# --- Schedules ----------------------------------------------------------------------


def test_it_lists_schedules_with_their_meaning_in_constant_queries(
    admin_client: Client,
    make_schedule: Callable[..., Schedule],
    django_assert_num_queries: NumQueries,
) -> None:
    for _ in range(3):
        make_schedule("*/5 * * * *")
    admin_client.get("/admin/jobs/schedule/")
    # session, user, time zone filter choices, 2 counts, page
    with django_assert_num_queries(6):
        response = admin_client.get("/admin/jobs/schedule/")
    assert response.content.decode().count("every 5 minutes of every hour") == 3


def test_the_schedule_form_says_what_is_wrong(make_job: Callable[..., Job]) -> None:
    from jobs.admin import ScheduleForm

    job = make_job()
    base = {"job": job.pk, "kind": "cron", "timezone": "UTC", "enabled": "on"}
    base |= {"misfire_policy": "run_once", "jitter": "0"}
    form = ScheduleForm(data={**base, "expression": "61 * * * *"})
    assert not form.is_valid()
    assert "minute" in str(form.errors["expression"]).lower()
    assert "61" in str(form.errors["expression"])
    form = ScheduleForm(
        data={**base, "expression": "* * * * *", "timezone": "Mars/Base"}
    )
    assert not form.is_valid()
    assert "Mars/Base" in str(form.errors["timezone"])


def test_the_schedule_page_previews_an_expression_as_it_is_typed(
    admin_client: Client, make_schedule: Callable[..., Schedule]
) -> None:
    schedule = make_schedule("0 12 * * *")
    page = admin_client.get(f"/admin/jobs/schedule/{schedule.pk}/change/").content
    assert b"/admin/jobs/schedule/preview/" in page and b'class="k-fire"' in page
    answer = admin_client.get(
        "/admin/jobs/schedule/preview/",
        {"kind": "cron", "expression": "*/10 * * * *", "timezone": "UTC"},
    ).json()
    assert answer["description"] == "cron: every 10 minutes of every hour (UTC)"
    assert len(answer["fires"]) == 5
    bad = admin_client.get(
        "/admin/jobs/schedule/preview/", {"kind": "cron", "expression": "* * *"}
    ).json()
    assert "expected 5 fields" in bad["error"] and "got 3" in bad["error"]
    assert staff().get("/admin/jobs/schedule/preview/").status_code == 403


# --- Executions ---------------------------------------------------------------------


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
    # session, user, capped count, page, date hierarchy (min/max, then days)
    with django_assert_num_queries(6) as captured:
        response = admin_client.get("/admin/jobs/execution/")
    sql = " ".join(q["sql"] for q in captured.captured_queries).upper()  # type: ignore[attr-defined]
    assert "LIMIT 10001" in sql
    html = response.content.decode()
    assert html.count('<span class="k-badge k-badge-running">running</span>') == 3
    assert html.count('<span class="k-badge k-badge-timed_out">timed out</span>') == 3
    assert "w1@host" in html
    with django_assert_num_queries(6):
        admin_client.get("/admin/jobs/execution/?status__exact=running")


def test_the_execution_list_says_more_than_the_cap(
    admin_client: Client,
    make_execution: Callable[..., Execution],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CappedPaginator, "CAP", 3)
    job = make_execution().job
    for _ in range(4):
        make_execution(job=job)
    assert (
        "more than 3 executions"
        in admin_client.get("/admin/jobs/execution/").content.decode()
    )


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
def test_the_execution_list_queries_use_an_index(
    filters: dict[str, object], index: str
) -> None:
    plan = (
        Execution.objects.filter(**filters)
        .defer("output", "error", "parameters")
        .order_by("-created", "-id")[:100]
        .explain()
    )
    assert index in plan, plan


def test_the_execution_page_shows_status_duration_attempts_audit_and_log(
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


def test_a_viewer_sees_no_control_buttons_and_the_endpoints_refuse(
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


def test_it_configures_notifications_in_the_admin(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    from jobs.models import NotificationChannel, NotificationRule

    app = make_app("ops")
    response = admin_client.post(
        "/admin/jobs/notificationchannel/add/",
        {
            "name": "hook",
            "kind": "webhook",
            "target": "https://x.test/h",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    channel = NotificationChannel.objects.get()
    response = admin_client.post(
        "/admin/jobs/notificationrule/add/",
        {"channel": channel.pk, "app": app.pk, "events": ["failure", "late"]},
    )
    assert response.status_code == 302, response.content[:2000]
    assert NotificationRule.objects.get().events == ["failure", "late"]
    assert admin_client.get("/admin/jobs/notificationdelivery/").status_code == 200
