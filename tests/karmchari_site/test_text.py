"""Unstorable text (karmchari_site/text.py): NUL and lone surrogates are refused in
requests with a 400 saying what and where, and replaced in what runs print.
PostgreSQL cannot store them; on SQLite the same answers keep the two alike."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.test import Client
from rest_framework.test import APIClient

from jobs import services
from jobs.models import App, Job
from karmchari_site.text import storable, unstorable, unstorable_path

pytestmark = pytest.mark.django_db


def test_it_says_why_text_cannot_be_stored() -> None:
    assert unstorable("plain é ✓ 🙂") is None
    assert unstorable("a\x00") == "Text must not contain NUL (U+0000) characters."
    assert unstorable("a\ud800") == (
        "Text must not contain surrogate characters (U+D800)."
    )


def test_it_finds_unstorable_text_anywhere_in_parsed_data() -> None:
    why = "Text must not contain NUL (U+0000) characters."
    assert unstorable_path({"a": [1, {"b": ("x", "y\x00")}]}) == (
        ["a", "1", "b", "1"],
        why,
    )
    assert unstorable_path({"k\x00": 1}) == (["k\x00"], why)
    assert unstorable_path("a\x00") == ([], why)
    assert unstorable_path({"a": [1, 2.5, None, True, {"b": "plain"}]}) is None


def test_it_replaces_unstorable_characters_with_the_replacement_character() -> None:
    assert storable("a\x00b\udfff") == "a\ufffdb\ufffd"
    assert storable("plain") == "plain"


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("/api/jobs/?search=%00", "query string"),
        ("/api/jobs/?name=a%00b", "query string"),
        ("/api/jobs/%00/", "URL"),
        ("/admin/jobs/job/?q=%00", "query string"),
    ],
)
def test_it_refuses_a_nul_in_the_url_with_400(
    api: APIClient, url: str, where: str
) -> None:
    response = api.get(url)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert (
        f"NUL (U+0000) characters. Found in the {where}." in response.content.decode()
    )


def test_it_refuses_a_nul_in_a_form_body_and_stores_nothing(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("ops")
    response = api.post(
        "/api/jobs/",
        "app=ops&name=x&description=a%00b",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
    assert "form body" in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("text", "why"), [("echo \x00", "NUL (U+0000)"), ("echo \ud800", "(U+D800)")]
)
def test_it_refuses_unstorable_text_in_a_json_body_naming_the_field(
    api: APIClient, make_app: Callable[..., App], text: str, why: str
) -> None:
    make_app("ops")
    body = {"app": "ops", "name": "x", "spec": {"command": text}}
    response = api.post("/api/jobs/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert why in response.json()["spec"]["command"][0]
    assert not Job.objects.exists()


def test_it_answers_a_name_with_a_nul_as_invalid_in_a_multipart_body(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("ops")
    response = api.post(
        "/api/jobs/",
        {"app": "o\x00ps", "name": "x", "spec": '{"command": "true"}'},
        format="multipart",
    )
    assert response.status_code == 400
    assert "app" in response.json()
    assert not Job.objects.exists()


def test_it_records_a_run_that_prints_nul_bytes_with_them_replaced(
    make_job: Callable[..., Job],
) -> None:
    job = make_job("printf 'a\\000b'; printf 'e\\000' >&2; exit 3")
    execution = services.job_trigger(job=job)
    finished = services.execution_run(execution_id=execution.pk, worker="w")
    assert finished is not None
    finished.refresh_from_db()
    assert finished.status == "failed"
    assert "a\ufffdb" in finished.output
    assert "e\ufffd" in finished.error


def test_it_refuses_a_nul_in_the_admin_login_form_too(client: Client) -> None:
    response = client.post(
        "/admin/login/",
        "username=a%00&password=x",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
