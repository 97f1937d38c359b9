"""Malformed bodies get a 400 and store nothing, on the native and compat APIs."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from jobs.models import Job

pytestmark = pytest.mark.django_db

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_it_refuses_json_nested_too_deeply(api: APIClient) -> None:
    response = api.generic("POST", "/api/jobs/", DEEP, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_it_refuses_a_body_that_is_not_utf8(api: APIClient) -> None:
    response = api.generic(
        "POST", "/api/apps/", b'{"name": "\xff\xfe"}', content_type="application/json"
    )
    assert response.status_code == 400


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_it_refuses_an_oversized_body(api: APIClient) -> None:
    body = b'{"name": "x", "description": "' + b"a" * 4096 + b'"}'
    response = api.generic("POST", "/api/apps/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "The request body is too large: at most 1024 bytes."
    )


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_it_refuses_an_oversized_form_body_as_it_does_a_json_one(
    anon: APIClient,
) -> None:
    body = "username=admin&password=" + "a" * 4096
    response = anon.generic(
        "POST", "/api/token/", body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "The request body is too large: at most 1024 bytes."
    )


def test_it_refuses_deep_json_on_the_kala_api_too(api: APIClient) -> None:
    response = api.generic(
        "POST", "/api/v1/job/", DEEP, content_type="application/json"
    )
    assert response.status_code == 400
    assert not Job.objects.exists()
