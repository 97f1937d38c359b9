"""compat/karmchari.py: the original Karmchari's three routes, byte for byte."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from jobs.models import Execution, Job
from tests.compat.conftest import basic

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"
CREATED = re.compile(r"Created! id = ([0-9a-f]{32})")


def register(
    client: Client, body: str = "type=teams", path: str = "/registerJob"
) -> str:
    response = client.post(path, body, content_type=FORM)
    assert response.status_code == 200, response.content
    match = CREATED.fullmatch(response.content.decode())
    assert match, response.content
    return match.group(1)


def assert_text(response, status: int, body: str) -> None:  # type: ignore[no-untyped-def]
    assert (response.status_code, response.content) == (status, body.encode())
    assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_it_prints_what_the_seed_examples_print(curl: Client) -> None:
    # curl -d "type=teams" http://localhost:51463/registerJob
    response = curl.post("/registerJob", "type=teams", content_type=FORM)
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    job_id = CREATED.fullmatch(response.content.decode()).group(1)  # type: ignore[union-attr]
    assert len(response.content) == 46  # no trailing newline
    # curl -d "id=<id>&command=pause" http://localhost:51463/jobState
    response = curl.post("/jobState", f"id={job_id}&command=pause", content_type=FORM)
    assert_text(response, 200, f"{job_id} -- pause")
    # curl http://localhost:51463/jobState?id=<id>
    assert_text(curl.get(f"/jobState?id={job_id}"), 200, f"{job_id} -- pause")


def test_it_runs_a_registered_job_as_an_external_execution_of_the_type_job(
    curl: Client, settings: Any
) -> None:
    job_id = register(curl, "type=upload")
    execution = Execution.objects.select_related("job__app").get(external_id=job_id)
    assert execution.job.app.name == settings.KARMCHARI_COMPAT_APP
    assert execution.job.name == "karmchari-upload"
    assert execution.job.kind == Job.Kind.EXTERNAL
    assert execution.status == Execution.Status.RUNNING
    assert execution.trigger == Execution.Trigger.COMPAT
    assert_text(curl.get(f"/jobState?id={job_id}"), 200, f"{job_id} -- start")
    second = register(curl, "type=upload")
    assert second != job_id
    assert Job.objects.filter(name="karmchari-upload").count() == 1


def test_it_maps_commands_onto_the_control_bus(curl: Client) -> None:
    job_id = register(curl)
    execution = Execution.objects.get(external_id=job_id)
    for command in ("pause", "pause", "start", "start", "kill", "kill"):
        response = curl.post("/jobState", {"id": job_id, "command": command})
        assert_text(response, 200, f"{job_id} -- {command}")
        assert_text(
            curl.get("/jobState", {"id": job_id}), 200, f"{job_id} -- {command}"
        )
    execution.refresh_from_db()
    assert execution.desired_state == Execution.DesiredState.KILL
    assert [e.action for e in execution.events.all()] == ["pause", "resume", "kill"]
    # Nothing can start a killed run again: a new registration is needed.
    response = curl.post("/jobState", {"id": job_id, "command": "start"})
    assert response.status_code == 409
    assert_text(curl.get("/jobState", {"id": job_id}), 200, f"{job_id} -- kill")


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        ("", "Type is required"),
        ("type=", "Type is required"),
        ("type=bogus", "Type is invalid"),
        ("type=Teams", "Type is invalid"),
        ("type=+teams", "Type is invalid"),
    ],
)
def test_it_refuses_a_bad_type(curl: Client, body: str, answer: str) -> None:
    assert_text(curl.post("/registerJob", body, content_type=FORM), 400, answer)
    assert not Execution.objects.exists()


def test_it_reads_the_body_first_then_the_query_string(curl: Client) -> None:
    register(curl, "type=teams", path="/registerJob?type=bogus")
    register(curl, "", path="/registerJob?type=upload")
    register(curl, "type=teams&type=bogus")  # the first value wins
    response = curl.post("/registerJob?type=teams", "type=", content_type=FORM)
    assert_text(response, 400, "Type is required")  # an empty body value still wins
    # JSON is not a form: the original saw no parameters.
    response = curl.post(
        "/registerJob", {"type": "teams"}, content_type="application/json"
    )
    assert_text(response, 400, "Type is required")


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        ("command=pause", "ID is required"),
        ("id=&command=pause", "ID is required"),
        ("id=ID", "Command is required"),
        ("id=ID&command=", "Command is required"),
        ("id=ID&command=bogus", "Command is invalid"),
        ("id=ID&command=Pause", "Command is invalid"),
    ],
)
def test_it_refuses_a_bad_update_and_leaves_the_state(
    curl: Client, body: str, answer: str
) -> None:
    job_id = register(curl)
    response = curl.post("/jobState", body.replace("ID", job_id), content_type=FORM)
    assert_text(response, 400, answer)
    assert_text(curl.get(f"/jobState?id={job_id}"), 200, f"{job_id} -- start")
    assert not Execution.objects.get(external_id=job_id).events.exists()


def test_it_answers_job_not_available_without_making_a_phantom(curl: Client) -> None:
    unknown = "45c02fc01519814156e94adbd1902279"
    response = curl.post("/jobState", f"id={unknown}&command=pause", content_type=FORM)
    assert_text(response, 400, "Job not available")
    assert_text(curl.get(f"/jobState?id={unknown}"), 400, "Job not available")
    assert not Execution.objects.exists()


def test_it_reads_the_id_of_a_get_from_the_query_only(curl: Client) -> None:
    assert_text(curl.get("/jobState"), 400, "ID is required")
    assert_text(curl.get("/jobState?id="), 400, "Job not available")
    job_id = register(curl)
    assert_text(curl.get(f"/jobState?id={job_id}&id=x"), 200, f"{job_id} -- start")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/registerJob"),
        ("put", "/registerJob"),
        ("delete", "/jobState"),
        ("head", "/jobState"),
        ("put", "/jobState"),
        ("options", "/jobState"),
    ],
)
def test_it_answers_405_with_an_empty_body_on_a_wrong_method(
    curl: Client, method: str, path: str
) -> None:
    response = getattr(curl, method)(path)
    assert response.status_code == 405
    assert response.content == b""


def test_it_never_redirects_a_trailing_slash(curl: Client) -> None:
    assert (
        curl.post("/registerJob/", "type=teams", content_type=FORM).status_code == 404
    )
    assert curl.get("/jobState/?id=x").status_code == 404
    assert not Execution.objects.exists()


def test_it_never_answers_500_for_a_malformed_escape(curl: Client) -> None:
    response = curl.post("/registerJob", "type=%zz", content_type=FORM)
    assert_text(response, 400, "Type is invalid")
    # GET reads the query as Go's url.ParseQuery: the malformed pair is dropped.
    assert_text(curl.get("/jobState?id=%zz"), 400, "ID is required")


def test_it_drops_only_the_malformed_pair_of_a_get_query(curl: Client) -> None:
    job_id = register(curl)
    response = curl.get(f"/jobState?id=%zz&id={job_id}")
    assert_text(response, 200, f"{job_id} -- start")
    response = curl.get(f"/jobState?x=%g1&id={job_id}&id=%zz")
    assert_text(response, 200, f"{job_id} -- start")
    assert_text(curl.get("/jobState?id%zz=1"), 400, "ID is required")


def test_it_requires_credentials_by_default(client: Client) -> None:
    response = client.post("/registerJob", "type=teams", content_type=FORM)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    assert client.get("/jobState?id=x").status_code == 401
    assert not Execution.objects.exists()


def test_it_accepts_a_token_too(client: Client, admin_user: User) -> None:
    from tests.tokens import make_token

    token = make_token(admin_user)
    response = client.post(
        "/registerJob",
        "type=teams",
        content_type=FORM,
        HTTP_AUTHORIZATION=f"Token {token.key}",
    )
    assert response.status_code == 200


def test_it_refuses_a_user_without_job_permissions(
    client: Client, django_user_model: type[User]
) -> None:
    django_user_model.objects.create_user("viewer", password="pw")
    client.defaults["HTTP_AUTHORIZATION"] = basic("viewer", "pw")
    assert client.post("/registerJob", {"type": "teams"}).status_code == 403
    assert client.get("/jobState?id=x").status_code == 403


def test_it_serves_anonymous_clients_when_opened(
    client: Client, settings: Any, make_job: Callable[..., Job]
) -> None:
    settings.KARMCHARI_COMPAT_OPEN = ["karmchari"]
    job_id = register(client)
    response = client.post("/jobState", {"id": job_id, "command": "pause"})
    assert_text(response, 200, f"{job_id} -- pause")
    # Opening one API opens only that one.
    assert client.get("/api/v1/job/").status_code == 401


def test_it_runs_the_type_job_as_a_shell_job_when_an_operator_made_it_one(
    curl: Client, make_app: Callable[..., object], make_job: Callable[..., Job]
) -> None:
    make_job(
        "sleep 30",
        app=make_app("default"),
        name="karmchari-export",
        kind=Job.Kind.SHELL,
    )
    job_id = register(curl, "type=export")
    execution = Execution.objects.get(external_id=job_id)
    assert execution.status == Execution.Status.PENDING  # sent to a worker
    assert execution.job.kind == Job.Kind.SHELL
    response = curl.post("/jobState", {"id": job_id, "command": "pause"})
    assert_text(response, 200, f"{job_id} -- pause")
    execution.refresh_from_db()
    assert execution.desired_state == Execution.DesiredState.PAUSE
