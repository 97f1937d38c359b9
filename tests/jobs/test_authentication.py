from __future__ import annotations

import base64
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from jobs import tokens

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def low_limit(settings: object) -> None:
    settings.KARMCHARI_AUTH_FAILURE_LIMIT = 3  # type: ignore[attr-defined]
    settings.KARMCHARI_AUTH_FAILURE_ADDRESS_LIMIT = 6  # type: ignore[attr-defined]


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


def test_it_still_signs_in_another_user_at_the_same_address(
    anon: APIClient, admin_user: User
) -> None:
    """Behind one NAT, a script with a stale password locks out its own user only."""
    User.objects.create_superuser("other", password="secret")
    for _ in range(3):
        anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "guess"))
    response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("other", "secret"))
    assert response.status_code == 200
    # The locked-out username in another case is the same username.
    response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("ADMIN", "password"))
    assert response.status_code == 429
    assert "for these credentials" in response.json()["detail"]


def test_it_refuses_the_address_after_guesses_across_usernames(
    anon: APIClient, admin_user: User
) -> None:
    for n in range(6):
        response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic(f"u{n}", "guess"))
        assert response.status_code == 401
    response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "password"))
    assert response.status_code == 429
    assert response.json()["detail"].startswith(
        "Too many failed authentication attempts from this address."
    )


def test_it_counts_malformed_basic_credentials_too(anon: APIClient) -> None:
    for _ in range(3):
        response = anon.get("/api/jobs/", HTTP_AUTHORIZATION="Basic %%%")
        assert response.status_code == 401
    assert anon.get("/api/jobs/", HTTP_AUTHORIZATION="Basic %%%").status_code == 429


def test_it_fails_open_with_redis_down(
    anon: APIClient, admin_user: User, settings: Any
) -> None:
    """No counts without Redis: a wrong password is a 401 (not a 500) and the right
    one still works, rather than everyone being locked out."""
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
        }
    }
    for _ in range(4):
        response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "guess"))
        assert response.status_code == 401
    response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "password"))
    assert response.status_code == 200


def test_it_counts_bad_tokens_too(anon: APIClient) -> None:
    for _ in range(3):
        anon.get("/api/jobs/", HTTP_AUTHORIZATION="Token nope")
    assert anon.get("/api/jobs/", HTTP_AUTHORIZATION="Token nope").status_code == 429


def test_it_locks_out_only_the_revoked_token_itself(
    anon: APIClient, admin_user: User
) -> None:
    revoked, stale = tokens.token_create(user=admin_user, name="old")
    tokens.token_revoke(token=revoked)
    _, key = tokens.token_create(user=admin_user, name="new")
    for _ in range(3):
        anon.get("/api/jobs/", HTTP_AUTHORIZATION=f"Token {stale}")
    assert (
        anon.get("/api/jobs/", HTTP_AUTHORIZATION=f"Token {stale}").status_code == 429
    )
    assert anon.get("/api/jobs/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def test_it_leaves_other_addresses_unaffected(
    anon: APIClient, admin_user: User
) -> None:
    for _ in range(3):
        anon.get("/api/jobs/", HTTP_AUTHORIZATION="Token nope", REMOTE_ADDR="10.0.0.9")
    response = anon.get(
        "/api/jobs/",
        HTTP_AUTHORIZATION=basic("admin", "password"),
        REMOTE_ADDR="10.0.0.8",
    )
    assert response.status_code == 200


def test_it_does_not_count_good_credentials(anon: APIClient, admin_user: User) -> None:
    for _ in range(5):
        response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "password"))
        assert response.status_code == 200


def test_it_rate_limits_the_token_endpoint(
    anon: APIClient, admin_user: User, settings: object
) -> None:
    settings.KARMCHARI_AUTH_FAILURE_LIMIT = 100  # type: ignore[attr-defined]
    settings.KARMCHARI_AUTH_FAILURE_ADDRESS_LIMIT = 100  # type: ignore[attr-defined]
    codes = [
        anon.post("/api/token/", {"username": "admin", "password": "x"}).status_code
        for _ in range(11)
    ]
    assert codes[:10] == [400] * 10
    assert codes[10] == 429


def test_it_shares_the_failed_password_count_with_the_token_endpoint(
    anon: APIClient, admin_user: User
) -> None:
    for _ in range(3):
        wrong = {"username": "ADMIN", "password": "guess"}  # any case: one count
        assert anon.post("/api/token/", wrong).status_code == 400
    right = anon.post("/api/token/", {"username": "admin", "password": "password"})
    assert right.status_code == 429
    assert "for these credentials" in right.json()["detail"]
    # And the other way round: basic auth is refused for that user too.
    response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "password"))
    assert response.status_code == 429


def admin_login(client: Client, password: str) -> int:
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "admin", "password": password}
    )
    return response.status_code


def test_it_refuses_an_address_at_the_admin_login_after_repeated_bad_passwords(
    client: Client, admin_user: User
) -> None:
    for _ in range(3):
        assert admin_login(client, "guess") == 200  # the form again, with its error
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "admin", "password": "password"}
    )
    assert response.status_code == 429
    assert response["Retry-After"] == "300"
    assert "Too many failed authentication attempts" in response.content.decode()
    assert 'name="password"' in response.content.decode()  # still the login page
    assert client.get("/admin/").status_code == 302  # not signed in


def test_it_lets_another_user_at_the_same_address_in_at_the_admin_login(
    client: Client, admin_user: User
) -> None:
    User.objects.create_user("other", password="secret", is_staff=True)
    for _ in range(3):
        admin_login(client, "guess")
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "other", "password": "secret"}
    )
    assert response.status_code == 302


def test_it_does_not_count_a_success_at_the_admin_login(
    client: Client, admin_user: User
) -> None:
    for _ in range(4):
        assert admin_login(client, "password") == 302
        client.logout()
    assert admin_login(client, "guess") == 200


def test_it_shows_the_admin_login_page_while_refusing_sign_ins(
    client: Client, admin_user: User
) -> None:
    for _ in range(3):
        admin_login(client, "guess")
    assert client.get("/admin/login/").status_code == 200


def test_it_shares_one_count_between_the_admin_login_and_the_api(
    anon: APIClient, client: Client, admin_user: User
) -> None:
    admin_login(client, "guess")
    for _ in range(2):
        anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "guess"))
    response = anon.get("/api/jobs/", HTTP_AUTHORIZATION=basic("admin", "password"))
    assert response.status_code == 429


def test_it_counts_the_address_the_proxy_saw_behind_the_proxy(
    anon: APIClient, settings: object
) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # type: ignore[attr-defined]
    for fake in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        # The first entry is the client's to write; the last is the proxy's.
        anon.get(
            "/api/jobs/",
            HTTP_AUTHORIZATION="Token nope",
            HTTP_X_FORWARDED_FOR=f"{fake}, 203.0.113.7",
        )
    blocked = anon.get(
        "/api/jobs/",
        HTTP_AUTHORIZATION="Token nope",
        HTTP_X_FORWARDED_FOR="9.9.9.9, 203.0.113.7",
    )
    other = anon.get(
        "/api/jobs/",
        HTTP_AUTHORIZATION="Token nope",
        HTTP_X_FORWARDED_FOR="203.0.113.8",
    )
    assert (blocked.status_code, other.status_code) == (429, 401)


def test_it_counts_guesses_from_a_signed_in_user_at_the_admin_login(
    client: Client, admin_user: User
) -> None:
    User.objects.create_user("other", password="secret", is_staff=True)
    client.force_login(admin_user)
    for _ in range(3):
        response = client.post(
            "/admin/login/", {"username": "other", "password": "guess"}
        )
        assert response.status_code == 200
    response = client.post("/admin/login/", {"username": "other", "password": "secret"})
    assert response.status_code == 429


def test_it_ignores_a_forged_forwarded_for_in_the_token_endpoint_limit(
    anon: APIClient, settings: Any
) -> None:
    """Keyed by the client's address, not by the header a client can vary."""
    # Only the endpoint's rate limit (10/minute) here, not the failure counts.
    settings.KARMCHARI_AUTH_FAILURE_LIMIT = 100
    settings.KARMCHARI_AUTH_FAILURE_ADDRESS_LIMIT = 100
    codes = [
        anon.post(
            "/api/token/",
            {"username": f"u{n}", "password": "guess"},
            HTTP_X_FORWARDED_FOR=f"10.0.0.{n}",
        ).status_code
        for n in range(11)
    ]
    assert codes == [400] * 10 + [429], codes
