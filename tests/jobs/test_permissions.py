"""Roles (groups made by a data migration) and the shell-job permission, via the API."""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from rest_framework.test import APIClient

from jobs.models import App, Job
from tests.compat.conftest import basic
from tests.tokens import make_token

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker() -> object:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


def client_for(role: str) -> APIClient:
    user = User.objects.create_user(f"{role}-user", password="pw")
    user.groups.add(Group.objects.get(name=role))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(user).key}")
    return client


SHELL_JOB = {"app": "default", "name": "backup", "spec": {"command": "true"}}


def test_it_creates_the_roles() -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= {
        "viewer",
        "operator",
        "editor",
        "admin",
    }


def test_it_lets_a_viewer_read_but_not_run(make_job: Callable[..., Job]) -> None:
    job = make_job()
    viewer = client_for("viewer")
    assert viewer.get("/api/jobs/").status_code == 200
    assert viewer.get("/api/executions/").status_code == 200
    assert viewer.post(f"/api/jobs/{job.pk}/run/").status_code == 403


def test_it_lets_an_operator_run_but_not_edit(make_job: Callable[..., Job]) -> None:
    job = make_job()
    operator = client_for("operator")
    assert operator.post(f"/api/jobs/{job.pk}/run/").status_code == 202
    response = operator.patch(f"/api/jobs/{job.pk}/", {"description": "x"})
    assert response.status_code == 403


def test_it_refuses_an_editor_creating_or_changing_shell_jobs(
    make_app: Callable[..., App], make_job: Callable[..., Job]
) -> None:
    make_app("default")
    editor = client_for("editor")
    response = editor.post("/api/jobs/", SHELL_JOB)
    assert response.status_code == 403
    assert "jobs.manage_shell_job" in response.json()["detail"]
    job = make_job()
    assert editor.patch(f"/api/jobs/{job.pk}/", {"description": "x"}).status_code == 403
    assert not Job.objects.filter(name="backup").exists()


def test_it_lets_an_admin_create_shell_jobs(make_app: Callable[..., App]) -> None:
    make_app("default")
    assert client_for("admin").post("/api/jobs/", SHELL_JOB).status_code == 201


def test_it_needs_no_role_for_a_superuser(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("default")
    assert api.post("/api/jobs/", SHELL_JOB).status_code == 201


def test_it_keeps_shell_jobs_from_editors_in_the_admin(
    make_app: Callable[..., App], make_job: Callable[..., Job]
) -> None:
    from django.test import Client

    app = make_app("default")
    job = make_job()
    user = User.objects.create_user("ed", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="editor"))
    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/admin/jobs/job/{job.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content  # read-only for them
    response = browser.post(
        "/admin/jobs/job/add/",
        {"app": app.pk, "name": "sneaky", "kind": "shell", "spec": '{"command": "id"}'},
    )
    assert b"jobs.manage_shell_job" in response.content
    assert not Job.objects.filter(name="sneaky").exists()


@pytest.fixture
def editor(make_user: Callable[..., User]) -> User:
    return make_user("ed", groups=["editor"], is_staff=True)


def test_it_refuses_an_editor_disabling_or_enabling_a_shell_job_through_the_verbs(
    editor: User, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(editor).key}")
    response = client.post(f"/api/jobs/{job.pk}/disable/")
    job.refresh_from_db()
    assert (response.status_code, job.enabled) == (403, True)


def test_it_refuses_an_editor_disabling_a_shell_job_with_the_console_action(
    editor: User, make_job: Callable[..., Job]
) -> None:
    """The shell job's page is read-only to an editor; the changelist's bulk action
    still changes it."""
    job = make_job()
    browser = Client()
    browser.force_login(editor)
    browser.post(
        "/admin/jobs/job/", {"action": "disable", "_selected_action": [job.pk]}
    )
    job.refresh_from_db()
    assert job.enabled


def test_it_refuses_a_kala_client_without_the_shell_permission_disabling_a_job(
    make_user: Callable[..., User], make_app: Callable[..., App]
) -> None:
    """Every Kala job is a shell job; docs/compat.md: creating or changing one needs
    jobs.manage_shell_job, as in /api/."""
    from compat.security import READ_PERMISSIONS, WRITE_PERMISSIONS

    make_user("op", perms=[*READ_PERMISSIONS, *WRITE_PERMISSIONS])
    job = Job.objects.create(
        app=make_app("default"), name="kala-job", kind="shell", spec={"command": "id"}
    )
    curl = Client(HTTP_AUTHORIZATION=basic("op", "pw"))
    response = curl.post(f"/api/v1/job/disable/{job.uid}/")
    job.refresh_from_db()
    assert job.enabled, response.status_code


def test_it_refuses_an_editor_linking_a_shell_job_as_a_child(
    editor: User, make_job: Callable[..., Job]
) -> None:
    """`children` of an http job are the shell job's `parents`: writing them changes
    the shell job (it then runs after each success of the http job)."""
    shell = make_job(name="shell-child")
    http = make_job(name="http-parent", kind="http", spec={"url": "http://127.0.0.1/"})
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(editor).key}")
    response = client.patch(f"/api/jobs/{http.pk}/", {"children": [shell.pk]})
    assert list(shell.parents.all()) == [], response.status_code


@pytest.mark.parametrize(
    ("perms", "expected"),
    [(["change_execution"], 403), (["change_execution", "view_execution"], 202)],
)
def test_it_answers_a_verb_only_to_who_may_read_what_it_acts_on(
    make_user: Callable[..., User],
    make_execution: Callable[..., object],
    perms: list[str],
    expected: int,
) -> None:
    """A verb answers with the run (its output, parameters, events): one who may
    kill runs but not read them was shown them all."""
    run = make_execution(status="running", worker="w@h")
    user = make_user("killer", perms=[f"jobs.{perm}" for perm in perms])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(user).key}")
    with mock.patch("jobs.control.publish"):
        response = client.post(f"/api/executions/{run.pk}/kill/")  # type: ignore[attr-defined]
    assert response.status_code == expected, response.content
