"""Roles (groups made by a data migration) and the shell-job permission, via the API."""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from jobs.models import App, Job
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


def test_the_roles_exist() -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= {
        "viewer",
        "operator",
        "editor",
        "admin",
    }


def test_a_viewer_reads_but_cannot_run(make_job: Callable[..., Job]) -> None:
    job = make_job()
    viewer = client_for("viewer")
    assert viewer.get("/api/jobs/").status_code == 200
    assert viewer.get("/api/executions/").status_code == 200
    assert viewer.post(f"/api/jobs/{job.pk}/run/").status_code == 403


def test_an_operator_runs_but_cannot_edit(make_job: Callable[..., Job]) -> None:
    job = make_job()
    operator = client_for("operator")
    assert operator.post(f"/api/jobs/{job.pk}/run/").status_code == 202
    response = operator.patch(f"/api/jobs/{job.pk}/", {"description": "x"})
    assert response.status_code == 403


def test_an_editor_cannot_create_or_change_shell_jobs(
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


def test_an_admin_creates_shell_jobs(make_app: Callable[..., App]) -> None:
    make_app("default")
    assert client_for("admin").post("/api/jobs/", SHELL_JOB).status_code == 201


def test_a_superuser_needs_no_role(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("default")
    assert api.post("/api/jobs/", SHELL_JOB).status_code == 201


def test_the_admin_keeps_shell_jobs_from_editors(
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
