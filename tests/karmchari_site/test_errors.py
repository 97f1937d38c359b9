"""Error pages for paths no route serves: each client family gets its own terms."""

from __future__ import annotations

import pytest
from django.test import Client
from django.test.utils import override_settings
from django.urls import path

from karmchari_site import urls as site_urls


def boom(request: object) -> None:
    raise RuntimeError("boom")


urlpatterns = [
    path("api/boom/", boom),
    path("boom/", boom),
    *site_urls.urlpatterns,
]
handler404 = site_urls.handler404
handler500 = site_urls.handler500


@pytest.mark.django_db
def test_it_answers_an_unknown_native_api_path_with_json(client: Client) -> None:
    response = client.get("/api/no-such-thing/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "Not found: no API endpoint at /api/no-such-thing/."
    }


@pytest.mark.django_db
def test_it_answers_an_unknown_kala_path_as_kala_did(client: Client) -> None:
    response = client.post("/api/v1/nope/x/")

    assert response.status_code == 404
    assert response.content == b"404 page not found\n"
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_it_leaves_other_unknown_paths_to_django(client: Client) -> None:
    response = client.get("/no/such/page/here")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@override_settings(ROOT_URLCONF=__name__, DEBUG=False)
def test_it_answers_a_failure_outside_a_view_of_the_api_with_json() -> None:
    client = Client(raise_request_exception=False)

    api = client.get("/api/boom/")
    page = client.get("/boom/")

    assert api.status_code == 500
    assert "Server error" in api.json()["detail"]
    assert page.status_code == 500
    assert page["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@override_settings(DEBUG=True)
def test_it_answers_an_unknown_api_path_in_its_terms_with_debug_on_too(
    client: Client,
) -> None:
    native = client.get("/api/no-such-thing/")
    kala = client.get("/api/v1/nope/x/")
    page = client.get("/no/such/page/here")

    assert native.json() == {
        "detail": "Not found: no API endpoint at /api/no-such-thing/."
    }
    assert kala.content == b"404 page not found\n"
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")
