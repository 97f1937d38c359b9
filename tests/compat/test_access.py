"""Per-app access on the compatibility routes (compat/security.py and the three APIs):
an authenticated caller sees and acts only on jobs of their apps."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from django.utils import timezone

from agents.models import Agent
from compat import edn
from compat.checks import check_compat_open_with_per_app_access
from compat.security import READ_PERMISSIONS, WRITE_PERMISSIONS
from jobs import services
from jobs.models import App, Execution, Job, Schedule
from tests.compat.conftest import basic

pytestmark = pytest.mark.django_db

on = override_settings(KARMCHARI_PER_APP_ACCESS=True)
FORM = "application/x-www-form-urlencoded"
EDN = "application/edn"
DENIED = b"You do not have permission to perform this action."


def app_body(name: str, description: str = "d") -> str:
    """POST /apps needs a name, a description and classpaths."""
    return f'{{:name "{name}" :description "{description}" :classpath []}}'


@pytest.fixture(autouse=True)
def no_broker() -> Iterator[mock.MagicMock]:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


@pytest.fixture
def mine(make_app: Callable[..., App]) -> App:
    return make_app("mine")


@pytest.fixture
def hidden(make_app: Callable[..., App]) -> App:
    """KARMCHARI_COMPAT_APP (the Karmchari and Kala jobs' app), granted to nobody."""
    return make_app("default")


@pytest.fixture
def member(make_user: Callable[..., User], mine: App) -> Client:
    """An editor who may manage shell jobs (every compat permission), granted the
    app "mine" only."""
    make_user("member", groups=["editor"], perms=["jobs.manage_shell_job"], apps=[mine])
    return Client(HTTP_AUTHORIZATION=basic("member", "pw"))


def grant(app: App) -> None:
    app.users.add(User.objects.get(username="member"))


def kala_job(curl: Client) -> str:
    body = json.dumps({"name": "nightly", "command": "true"})
    response = curl.post("/api/v1/job/", body, content_type=FORM)
    assert response.status_code == 201, response.content
    return str(json.loads(response.content)["id"])


# --- Karmchari ------------------------------------------------------------------------


@on
def test_it_refuses_a_karmchari_registration_in_an_app_the_caller_cannot_see(
    member: Client, hidden: App
) -> None:
    response = member.post("/registerJob", {"type": "teams"})
    assert (response.status_code, response.content) == (403, DENIED)
    assert not Job.objects.exists() and not Execution.objects.exists()
    grant(hidden)
    response = member.post("/registerJob", {"type": "teams"})
    assert response.status_code == 200
    assert response.content.startswith(b"Created! id = ")


@on
def test_it_grants_the_app_karmchari_makes_to_its_restricted_caller(
    member: Client,
) -> None:
    assert member.post("/registerJob", {"type": "upload"}).status_code == 200
    app = App.objects.get(name="default")
    assert list(app.users.values_list("username", flat=True)) == ["member"]


@on
def test_it_answers_job_not_available_in_karmchari_for_a_hidden_run(
    member: Client, curl: Client, hidden: App
) -> None:
    answer = curl.post("/registerJob", {"type": "teams"}).content.decode()
    job_id = answer.removeprefix("Created! id = ")
    response = member.get(f"/jobState?id={job_id}")
    assert (response.status_code, response.content) == (400, b"Job not available")
    response = member.post("/jobState", {"id": job_id, "command": "kill"})
    assert (response.status_code, response.content) == (400, b"Job not available")
    assert Execution.objects.get().desired_state == Execution.DesiredState.RUN
    grant(hidden)
    assert member.get(f"/jobState?id={job_id}").content == f"{job_id} -- start".encode()


# --- Kala -----------------------------------------------------------------------------


@on
def test_it_shows_and_runs_only_jobs_of_the_callers_apps_in_kala(
    member: Client, curl: Client, hidden: App, make_app: Callable[..., App]
) -> None:
    job_id = kala_job(curl)  # with no schedule, it runs once at once
    assert member.get("/api/v1/job/").content == b'{"jobs":{}}\n'
    for method, path in (
        ("get", f"/api/v1/job/{job_id}/"),
        ("get", f"/api/v1/job/stats/{job_id}/"),
        ("post", f"/api/v1/job/start/{job_id}/"),
        ("post", f"/api/v1/job/disable/{job_id}/"),
        ("delete", f"/api/v1/job/{job_id}/"),
    ):
        response = getattr(member, method)(path)
        assert (response.status_code, response.content) == (404, b""), path
    stats = json.loads(member.get("/api/v1/stats/").content)["Stats"]
    assert stats["jobs"] == 0
    job = Job.objects.get()
    assert job.enabled and job.executions.count() == 1

    grant(hidden)
    assert job_id in json.loads(member.get("/api/v1/job/").content)["jobs"]
    assert member.post(f"/api/v1/job/start/{job_id}/").status_code == 204
    assert job.executions.count() == 2
    # A dependent job in an app hidden from the caller is left out of the answer.
    child = Job.objects.create(app=make_app("theirs"), name="child")
    child.parents.add(job)
    shown = json.loads(member.get(f"/api/v1/job/{job_id}/").content)["job"]
    assert shown["dependent_jobs"] is None
    shown = json.loads(curl.get(f"/api/v1/job/{job_id}/").content)["job"]
    assert shown["dependent_jobs"] == [str(child.uid)]


@on
def test_it_refuses_creating_a_kala_job_in_an_app_the_caller_cannot_see(
    member: Client, hidden: App
) -> None:
    body = json.dumps({"name": "nightly", "command": "true"})
    response = member.post("/api/v1/job/", body, content_type=FORM)
    assert (response.status_code, response.content) == (403, DENIED + b"\n")
    assert not Job.objects.exists()


# --- JobStreamer ----------------------------------------------------------------------


@on
def test_it_shows_and_acts_only_on_the_callers_apps_in_jobstreamer(
    member: Client,
    mine: App,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    theirs = make_app("theirs")
    make_job(app=mine, name="own")
    job = make_job(app=theirs, name="other")
    run = make_execution(job=job, status=Execution.Status.RUNNING)

    listed = edn.loads(member.get("/apps").content)
    assert [app["name"] for app in listed] == ["mine"]
    assert edn.loads(member.get("/mine/jobs").content)["hits"] == 1
    for method, path in (
        ("get", "/theirs/jobs"),
        ("post", "/theirs/jobs"),
        ("get", "/theirs/stats"),
        ("get", "/theirs/job/other"),
        ("delete", "/theirs/job/other"),
        ("get", "/theirs/job/other/executions"),
        ("post", "/theirs/job/other/executions"),
        ("put", f"/theirs/job/other/execution/{run.pk}/stop"),
    ):
        if method == "get":
            response = member.get(path)
        else:
            response = getattr(member, method)(path, "{}", content_type=EDN)
        assert response.status_code == 404, path
        assert response.content == b"Resource not found.", path
    run.refresh_from_db()
    assert run.desired_state == Execution.DesiredState.RUN
    assert Job.objects.filter(pk=job.pk).exists() and job.executions.count() == 1


@on
def test_it_refuses_a_jobstreamer_takeover_of_an_app_the_caller_cannot_see(
    member: Client, make_app: Callable[..., App]
) -> None:
    make_app("theirs", description="kept")
    response = member.post("/apps", app_body("theirs"), content_type=EDN)
    assert (response.status_code, response.content) == (403, b"Permission denied")
    assert App.objects.get(name="theirs").description == "kept"
    response = member.post("/apps", app_body("fresh"), content_type=EDN)
    assert response.status_code == 201
    assert edn.loads(member.get("/fresh/jobs").content)["hits"] == 0


@on
def test_it_lists_only_the_callers_runs_on_an_agent_in_jobstreamer(
    member: Client,
    mine: App,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    agent = Agent.objects.create(name="w@h", last_heartbeat=timezone.now())
    own = make_execution(
        job=make_job(app=mine), agent=agent, status=Execution.Status.RUNNING
    )
    make_execution(
        job=make_job(app=make_app("theirs")),
        agent=agent,
        status=Execution.Status.RUNNING,
    )
    (listed,) = edn.loads(member.get("/agents").content)
    assert listed["agent/jobs"] == {"running": 1}
    assert [e["db/id"] for e in listed["agent/executions"]] == [own.pk]


# --- Open APIs ------------------------------------------------------------------------


@on
def test_it_shows_every_app_to_an_anonymous_caller_of_an_open_api(
    client: Client, curl: Client, hidden: App, settings: Any
) -> None:
    job_id = kala_job(curl)
    settings.KARMCHARI_COMPAT_OPEN = ["kala"]
    assert job_id in json.loads(client.get("/api/v1/job/").content)["jobs"]
    assert client.post(f"/api/v1/job/start/{job_id}/").status_code == 204


def test_it_warns_when_an_open_api_meets_per_app_access(settings: Any) -> None:
    settings.KARMCHARI_COMPAT_OPEN = ["kala"]
    settings.KARMCHARI_PER_APP_ACCESS = False
    assert check_compat_open_with_per_app_access(None) == []
    settings.KARMCHARI_PER_APP_ACCESS = True
    (warning,) = check_compat_open_with_per_app_access(None)
    assert warning.id == "karmchari.W102" and "kala" in warning.msg
    settings.KARMCHARI_COMPAT_OPEN = []
    assert check_compat_open_with_per_app_access(None) == []


def test_it_is_unchanged_while_off(member: Client, curl: Client, hidden: App) -> None:
    job_id = kala_job(curl)
    assert job_id in json.loads(member.get("/api/v1/job/").content)["jobs"]
    assert services.app_get_or_create(name="default") == hidden


# --- Shell jobs need their own permission, as in the native API ----------------------


def test_it_refuses_a_kala_shell_job_to_a_caller_without_the_shell_permission(
    make_user: Callable[..., User], hidden: App
) -> None:
    make_user("editor", groups=["editor"])
    curl = Client(HTTP_AUTHORIZATION=basic("editor", "pw"))
    body = json.dumps({"name": "nightly", "command": "rm -rf /"})
    response = curl.post("/api/v1/job/", body, content_type=FORM)
    assert response.status_code == 403
    assert b"jobs.manage_shell_job" in response.content
    assert not Job.objects.exists()


def test_it_refuses_a_jobstreamer_shell_job_to_a_caller_without_the_shell_permission(
    make_user: Callable[..., User], mine: App
) -> None:
    make_user("editor", groups=["editor"])
    curl = Client(HTTP_AUTHORIZATION=basic("editor", "pw"))
    response = curl.post(
        "/mine/jobs",
        json.dumps({"job/name": "nightly", "job/command": "rm -rf /"}),
        content_type="application/json",
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 403, response.content
    assert not Job.objects.exists()


# --- Apps and schedules need their own permissions, as in the native API -------------


@pytest.fixture
def operator(make_user: Callable[..., User]) -> Client:
    """Every permission a compat route asks of a job operator, and shell jobs; no
    app or schedule permission."""
    make_user(
        "op", perms=[*READ_PERMISSIONS, *WRITE_PERMISSIONS, "jobs.manage_shell_job"]
    )
    return Client(HTTP_AUTHORIZATION=basic("op", "pw"))


def give(*perms: str) -> None:
    user = User.objects.get(username="op")
    for perm in perms:
        codename = perm.removeprefix("jobs.")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="jobs", codename=codename)
        )


def test_it_needs_the_app_permissions_for_jobstreamer_apps(
    operator: Client, make_app: Callable[..., App]
) -> None:
    make_app("prod", description="Production")
    response = operator.post("/apps", app_body("new", "x"), content_type=EDN)
    assert (response.status_code, response.content) == (403, b"Permission denied")
    body = app_body("prod", "changed")
    assert operator.post("/apps", body, content_type=EDN).status_code == 403
    assert list(App.objects.values_list("name", "description")) == [
        ("prod", "Production")
    ]
    give("jobs.add_app")
    response = operator.post("/apps", app_body("new", "x"), content_type=EDN)
    assert response.status_code == 201
    assert operator.post("/apps", body, content_type=EDN).status_code == 403
    give("jobs.change_app")
    assert operator.post("/apps", body, content_type=EDN).status_code == 201
    assert App.objects.get(name="prod").description == "changed"


def test_it_needs_the_schedule_permissions_for_jobstreamer_schedules(
    operator: Client, make_job: Callable[..., Job], mine: App
) -> None:
    make_job(app=mine, name="nightly")
    path = "/mine/job/nightly/schedule"
    hourly = '{:schedule/cron-notation "0 0 * * * ?"}'
    response = operator.post(path, hourly, content_type=EDN)
    assert (response.status_code, response.content) == (403, b"Permission denied")
    assert not Schedule.objects.exists()
    give("jobs.add_schedule")
    assert operator.post(path, hourly, content_type=EDN).status_code == 201
    # Re-timing, pausing and removing it are other permissions.
    daily = '{:schedule/cron-notation "0 0 3 * * ?"}'
    assert operator.put(path, daily, content_type=EDN).status_code == 403
    assert operator.put(f"{path}/pause").status_code == 403
    assert operator.delete(path).status_code == 403
    schedule = Schedule.objects.get()
    assert (schedule.expression, schedule.enabled) == ("0 0 * * * ?", True)
    give("jobs.change_schedule")
    assert operator.put(path, daily, content_type=EDN).status_code == 200
    assert operator.put(f"{path}/pause").status_code == 204
    assert not Schedule.objects.get().enabled
    give("jobs.delete_schedule")
    assert operator.delete(path).status_code == 204
    assert not Schedule.objects.exists()


def test_it_needs_add_schedule_for_a_kala_job_with_a_schedule(
    operator: Client, make_app: Callable[..., App]
) -> None:
    make_app("default")
    body = json.dumps(
        {"name": "n", "command": "true", "schedule": "R2/2099-01-01T00:00:00Z/PT10S"}
    )
    response = operator.post("/api/v1/job/", body, content_type=FORM)
    assert response.status_code == 403
    assert b"jobs.add_schedule" in response.content
    assert not Job.objects.exists()
    give("jobs.add_schedule")
    assert operator.post("/api/v1/job/", body, content_type=FORM).status_code == 201
    assert Schedule.objects.get().job.name == "n"


def test_it_lets_the_editor_role_manage_apps_and_schedules(
    member: Client, make_job: Callable[..., Job], mine: App
) -> None:
    body = app_body("mine", "Mine")
    assert member.post("/apps", body, content_type=EDN).status_code == 201
    make_job(app=mine, name="nightly")
    path = "/mine/job/nightly/schedule"
    hourly = '{:schedule/cron-notation "0 0 * * * ?"}'
    assert member.post(path, hourly, content_type=EDN).status_code == 201
    assert member.put(path, hourly, content_type=EDN).status_code == 200
    assert member.put(f"{path}/pause").status_code == 204
    assert member.delete(path).status_code == 204
