from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def low_limit(settings: object) -> None:
    settings.KARMCHARI_AUTH_FAILURE_LIMIT = 3  # type: ignore[attr-defined]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_it_refuses_an_address_after_repeated_bad_passwords(
    anon: APIClient, admin_user: User
) -> None:
    for _ in range(3):
        response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "guess"))
        assert response.status_code == 401
    # Now even the right password is refused from this address, for a while.
    response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "password"))
    assert response.status_code == 429
    assert "Too many failed authentication attempts" in response.json()["detail"]
    assert "Retry-After" in response


def test_it_counts_bad_tokens_too(anon: APIClient) -> None:
    for _ in range(3):
        anon.get("/api/jobs/", HTTP_AUTHORIZATION="Token nope")
    assert anon.get("/api/jobs/", HTTP_AUTHORIZATION="Token nope").status_code == 429


def test_other_addresses_are_not_affected(anon: APIClient, admin_user: User) -> None:
    for _ in range(3):
        anon.get("/api/jobs/", HTTP_AUTHORIZATION="Token nope", REMOTE_ADDR="10.0.0.9")
    response = anon.get(
        "/api/jobs/",
        HTTP_AUTHORIZATION=basic("admin", "password"),
        REMOTE_ADDR="10.0.0.8",
    )
    assert response.status_code == 200


def test_good_credentials_do_not_count(anon: APIClient, admin_user: User) -> None:
    for _ in range(5):
        response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "password"))
        assert response.status_code == 200


def test_the_token_endpoint_is_rate_limited(
    anon: APIClient, admin_user: User, settings: object
) -> None:
    codes = [
        anon.post("/api/token/", {"username": "admin", "password": "x"}).status_code
        for _ in range(11)
    ]
    assert codes[:10] == [400] * 10
    assert codes[10] == 429
