"""Per-app access in the operator console (jobs/admin/, jobs/engine_admin.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone

from jobs.models import (
    ApiToken,
    App,
    Execution,
    ExecutionEvent,
    Job,
    NotificationChannel,
    NotificationRule,
    Schedule,
)

pytestmark = pytest.mark.django_db

on = override_settings(KARMCHARI_PER_APP_ACCESS=True)

PERMS = [
    f"{label}.{verb}_{model}"
    for label, model in (
        ("jobs", "app"),
        ("jobs", "job"),
        ("jobs", "schedule"),
        ("jobs", "execution"),
        ("jobs", "notificationrule"),
    )
    for verb in ("view", "add", "change")
] + ["jobs.manage_shell_job"]


@pytest.fixture(autouse=True)
def no_broker() -> Iterator[mock.MagicMock]:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


@pytest.fixture
def mine(make_app: Callable[..., App]) -> App:
    return make_app("mine")


@pytest.fixture
def theirs(make_app: Callable[..., App]) -> App:
    return make_app("theirs")


@pytest.fixture
def operator(make_user: Callable[..., User], mine: App) -> Client:
    """A staff user with the model permissions, granted the app "mine"."""
    client = Client()
    client.force_login(make_user("operator", perms=PERMS, apps=[mine], is_staff=True))
    return client


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def choices(response: Any, field: str) -> set[str]:
    form = response.context["adminform"].form
    return {str(obj) for obj in form.fields[field].queryset}


def test_it_leaves_the_console_unchanged_while_off(
    operator: Client, theirs: App, make_job: Callable[..., Job]
) -> None:
    job = make_job(app=theirs, name="their-job")
    assert "their-job" in page(operator, "/admin/jobs/job/")
    assert page(operator, f"/admin/jobs/job/{job.pk}/change/")


@on
def test_it_shows_only_the_users_apps_in_changelists(
    operator: Client,
    mine: App,
    theirs: App,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    make_schedule: Callable[..., Schedule],
) -> None:
    own, other = make_job(app=mine, name="own-job"), make_job(app=theirs, name="x-job")
    own_run, other_run = make_execution(job=own), make_execution(job=other)
    make_schedule("0 9 * * *", job=own)
    make_schedule("0 7 * * *", job=other)

    apps = page(operator, "/admin/jobs/app/")
    assert f"/admin/jobs/app/{mine.pk}/change/" in apps
    assert f"/admin/jobs/app/{theirs.pk}/change/" not in apps
    jobs = page(operator, "/admin/jobs/job/")
    assert "own-job" in jobs and "x-job" not in jobs
    # The app filter offers only the user's apps (shown from two on).
    User.objects.get(username="operator").karmchari_apps.add(make_app("ours"))
    jobs = page(operator, "/admin/jobs/job/")
    assert f"?app__id__exact={mine.pk}" in jobs
    assert f"?app__id__exact={theirs.pk}" not in jobs
    runs = page(operator, "/admin/jobs/execution/")
    assert f"/admin/jobs/execution/{own_run.pk}/change/" in runs
    assert f"/admin/jobs/execution/{other_run.pk}/change/" not in runs
    schedules = page(operator, "/admin/jobs/schedule/")
    assert "0 9 * * *" in schedules and "0 7 * * *" not in schedules


@on
def test_it_answers_pages_of_other_apps_as_missing(
    operator: Client,
    theirs: App,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    make_schedule: Callable[..., Schedule],
) -> None:
    job = make_job(app=theirs)
    run = make_execution(job=job)
    schedule = make_schedule(job=job)
    for url in (
        f"/admin/jobs/app/{theirs.pk}/change/",
        f"/admin/jobs/job/{job.pk}/change/",
        f"/admin/jobs/execution/{run.pk}/change/",
        f"/admin/jobs/schedule/{schedule.pk}/change/",
    ):
        # The admin's answer for a missing object: back to the index, with a note.
        response = operator.get(url, follow=True)
        assert response.redirect_chain == [("/admin/", 302)], url
        assert "Perhaps it was deleted?" in response.content.decode()


@on
def test_it_cannot_run_or_control_runs_of_other_apps(
    operator: Client,
    theirs: App,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    job = make_job(app=theirs)
    running = make_execution(job=job, status=Execution.Status.RUNNING)
    failed = make_execution(job=job, status=Execution.Status.FAILED)

    assert operator.post(f"/admin/jobs/job/{job.pk}/run/").status_code == 404
    for verb in ("pause", "kill"):
        url = f"/admin/jobs/execution/{running.pk}/control/{verb}/"
        assert operator.post(url).status_code == 404
    url = f"/admin/jobs/execution/{failed.pk}/control/retry/"
    assert operator.post(url).status_code == 404
    # Bulk actions act on the changelist's rows: the others are not among them.
    operator.post(
        "/admin/jobs/execution/",
        {"action": "kill_selected", "_selected_action": [running.pk]},
    )
    operator.post(
        "/admin/jobs/job/", {"action": "run_now", "_selected_action": [job.pk]}
    )
    running.refresh_from_db()
    assert running.desired_state == Execution.DesiredState.RUN
    assert not ExecutionEvent.objects.exists()
    assert Execution.objects.count() == 2


@on
def test_it_offers_only_the_users_apps_and_jobs_in_forms(
    operator: Client,
    mine: App,
    theirs: App,
    make_job: Callable[..., Job],
) -> None:
    make_job(app=mine, name="own-job")
    other = make_job(app=theirs, name="x-job")
    response = operator.get("/admin/jobs/job/add/")
    assert choices(response, "app") == {"mine"}
    assert choices(response, "parents") == {"own-job"}
    assert choices(operator.get("/admin/jobs/schedule/add/"), "job") == {"own-job"}
    rule = operator.get("/admin/jobs/notificationrule/add/")
    assert choices(rule, "app") == {"mine"} and choices(rule, "job") == {"own-job"}

    # A hidden job typed into the raw-id field is refused as a missing one.
    response = operator.post(
        "/admin/jobs/schedule/add/",
        {
            "job": other.pk,
            "kind": "cron",
            "expression": "* * * * *",
            "timezone": "UTC",
            "misfire_policy": "run_once",
            "jitter": "0",
        },
    )
    assert response.status_code == 200
    assert "job" in response.context["adminform"].form.errors
    assert not Schedule.objects.exists()


@on
def test_it_hides_and_keeps_dependencies_in_other_apps_on_the_job_page(
    operator: Client,
    mine: App,
    theirs: App,
    make_job: Callable[..., Job],
) -> None:
    job = make_job(app=mine, name="own-job", kind=Job.Kind.EXTERNAL, spec={})
    hidden_parent = make_job(app=theirs, name="x-parent")
    hidden_child = make_job(app=theirs, name="x-child")
    seen_child = make_job(app=mine, name="own-child")
    job.parents.set([hidden_parent])
    hidden_child.parents.set([job])
    seen_child.parents.set([job])

    response = operator.get(f"/admin/jobs/job/{job.pk}/change/")
    html = response.content.decode()
    assert "mine / own-child" in html and "x-child" not in html
    assert "x-parent" not in html
    form = response.context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if name in form.fields and value is not None
    }
    data.update(
        {
            "app": mine.pk,
            "spec": "{}",
            "tags": "[]",
            "legacy": "{}",
            "parents": [],
            "description": "changed",
            "schedules-TOTAL_FORMS": "0",
            "schedules-INITIAL_FORMS": "0",
            "secrets-TOTAL_FORMS": "0",
            "secrets-INITIAL_FORMS": "0",
            "executions-TOTAL_FORMS": "0",
            "executions-INITIAL_FORMS": "0",
        }
    )
    response = operator.post(f"/admin/jobs/job/{job.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    job.refresh_from_db()
    assert job.description == "changed"
    assert list(job.parents.all()) == [hidden_parent]


@on
def test_it_counts_only_the_users_apps_on_the_dashboard(
    operator: Client,
    admin_client: Client,
    mine: App,
    theirs: App,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    own = make_job(app=mine, name="own-job")
    other = make_job(app=theirs, name="x-job", last_error_at=timezone.now())
    make_job(app=theirs, name="x-job-2")
    make_execution(job=own, status=Execution.Status.RUNNING)
    make_execution(job=other, status=Execution.Status.RUNNING)
    make_execution(job=other, status=Execution.Status.FAILED)

    html = page(operator, "/admin/")
    assert '<span class="k-figure" id="k-jobs-enabled">1</span>' in html
    assert '<span class="k-figure" id="k-running">1</span>' in html
    assert '<span class="k-figure" id="k-failed">0</span>' in html
    assert "x-job" not in html
    assert "(over the apps granted to you)" in html
    # The restricted figures never stand in for everyone's.
    html = page(admin_client, "/admin/")
    assert '<span class="k-figure" id="k-jobs-enabled">3</span>' in html
    assert "theirs / x-job" in html
    assert "(cached for a few seconds)" in html


@on
def test_it_hides_notification_rules_of_other_apps(
    operator: Client, mine: App, theirs: App, make_job: Callable[..., Job]
) -> None:
    channel = NotificationChannel.objects.create(name="hook", kind="webhook")
    own = NotificationRule.objects.create(channel=channel, app=mine, events=["x"])
    by_job = NotificationRule.objects.create(
        channel=channel, job=make_job(app=mine), events=["y"]
    )
    other = NotificationRule.objects.create(channel=channel, app=theirs, events=["z"])
    html = page(operator, "/admin/jobs/notificationrule/")
    for rule in (own, by_job):
        assert f"/admin/jobs/notificationrule/{rule.pk}/change/" in html
    assert f"/admin/jobs/notificationrule/{other.pk}/change/" not in html


@on
def test_it_grants_an_app_made_in_the_console_to_its_restricted_maker(
    operator: Client,
) -> None:
    response = operator.get("/admin/jobs/app/add/")
    fields = response.context["adminform"].form.fields
    assert fields["users"].widget.widget.is_stacked is False  # filter_horizontal
    assert {"users", "groups"} <= set(fields)
    response = operator.post(
        "/admin/jobs/app/add/", {"name": "fresh", "meta": "{}", "description": ""}
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    fresh = App.objects.get(name="fresh")
    assert list(fresh.users.values_list("username", flat=True)) == ["operator"]
    assert "fresh" in page(operator, "/admin/jobs/app/")


@on
def test_it_hides_parents_in_other_apps_on_a_read_only_job_page(
    make_user: Callable[..., User],
    mine: App,
    theirs: App,
    make_job: Callable[..., Job],
) -> None:
    """Editors' forms narrow the parents offered; a viewer's page shows links to the
    parents they may see, not Django's list of every parent."""
    job = make_job(app=mine, name="own-job", kind=Job.Kind.EXTERNAL, spec={})
    job.parents.set(
        [
            make_job(app=theirs, name="secret-parent-in-theirs"),
            make_job(app=mine, name="own-parent"),
        ]
    )
    viewer = Client()
    viewer.force_login(make_user("v", groups=["viewer"], apps=[mine], is_staff=True))

    html = page(viewer, f"/admin/jobs/job/{job.pk}/change/")

    assert "secret-parent-in-theirs" not in html
    assert "mine / own-parent" in html


@on
def test_it_refuses_a_cycle_through_a_hidden_parent_as_a_form_error(
    make_user: Callable[..., User],
    mine: App,
    theirs: App,
    make_job: Callable[..., Job],
) -> None:
    """b -> h -> a, with h in an app hidden from the editor: making b a child of a
    closes a cycle through h, which saving would keep (keep_hidden_links)."""
    a = make_job(app=mine, name="a", kind=Job.Kind.EXTERNAL, spec={})
    b = make_job(app=mine, name="b", kind=Job.Kind.EXTERNAL, spec={})
    hidden = make_job(app=theirs, name="h", kind=Job.Kind.EXTERNAL, spec={})
    a.parents.set([hidden])
    hidden.parents.set([b])
    perms = ["jobs.view_job", "jobs.change_job", "jobs.view_app"]
    editor = Client()
    editor.force_login(make_user("ed", perms=perms, apps=[mine], is_staff=True))
    data = {
        "app": mine.pk,
        "name": "a",
        "kind": "external",
        "spec": "{}",
        "queue": "celery",
        "max_retries": 0,
        "retry_backoff": 10,
        "overlap_policy": "skip",
        "tags": "[]",
        "legacy": "{}",
        "enabled": "on",
        "children": [b.pk],
        **{
            f"{prefix}-{count}_FORMS": 0
            for prefix in ("schedules", "secrets", "executions")
            for count in ("TOTAL", "INITIAL")
        },
    }

    response = editor.post(f"/admin/jobs/job/{a.pk}/change/", data)

    assert response.status_code == 200
    assert "children" in response.context["adminform"].form.errors
    assert not b.parents.filter(pk=a.pk).exists()
    assert list(a.parents.all()) == [hidden]


@on
def test_it_refuses_a_token_for_a_user_who_sees_apps_the_maker_cannot(
    make_user: Callable[..., User], mine: App, theirs: App
) -> None:
    """A token is its user's rights, and the apps a user sees are rights too: a
    maker granted "mine" may not make one for a user granted "theirs", even with no
    more permissions."""
    perms = ["jobs.view_job", "jobs.view_app"]
    token_perms = ["jobs.add_apitoken", "jobs.view_apitoken"]
    maker = make_user("maker", perms=perms + token_perms, apps=[mine], is_staff=True)
    client = Client()
    client.force_login(maker)
    peer = make_user("peer", perms=perms, apps=[mine])
    outsider = make_user("outsider", perms=perms, apps=[theirs])

    response = client.post(
        "/admin/jobs/apitoken/add/", {"user": outsider.pk, "name": "borrowed"}
    )

    assert response.status_code == 200
    assert "user" in response.context["adminform"].form.errors
    assert not ApiToken.objects.exists()
    response = client.post("/admin/jobs/apitoken/add/", {"user": peer.pk, "name": "ok"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert ApiToken.objects.get().user == peer


@on
@pytest.mark.parametrize(
    "url", ["/admin/jobs/schedule/add/", "/admin/jobs/notificationrule/add/"]
)
def test_it_does_not_name_a_hidden_job_in_a_raw_id_field(
    operator: Client, theirs: App, make_job: Callable[..., Job], url: str
) -> None:
    """The raw-id widget labels the id it holds with the object's name, read from the
    unrestricted manager: typing (or passing ?job=) a hidden job's id names it."""
    hidden = make_job(app=theirs, name="payroll-secret-export")
    response = operator.get(f"{url}?job={hidden.pk}")
    assert response.status_code == 200
    body = response.content.decode()
    assert "payroll-secret-export" not in body
    assert f"/admin/jobs/job/{hidden.pk}/change/" not in body
