"""compat/karmchari_asgi.py: only the original Karmchari's routes, on their own port."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from compat.karmchari_asgi import application


async def call(
    path: str, method: str = "GET", query: bytes = b""
) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "server": ("127.0.0.1", 51463),
        "client": ("127.0.0.1", 40000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    body = await communicator.receive_output(5)
    return [start, body]


def test_it_answers_other_paths_as_go_does() -> None:
    start, body = async_to_sync(call)("/api/jobs/")
    assert start["status"] == 404
    assert body["body"] == b"404 page not found\n"


@pytest.mark.django_db(transaction=True)  # middleware (audit) may write
def test_it_passes_the_karmchari_routes_to_django() -> None:
    start, _ = async_to_sync(call)("/jobState", method="DELETE")
    assert start["status"] == 405


@pytest.mark.django_db(transaction=True)
def test_it_drops_a_malformed_escape_in_the_query_as_go_does(settings: Any) -> None:
    settings.KARMCHARI_COMPAT_OPEN = ["karmchari"]
    start, body = async_to_sync(call)("/jobState", query=b"id=%zz")
    assert (start["status"], body["body"]) == (400, b"ID is required")


def test_it_redirects_an_unclean_path_as_gorilla_mux_does() -> None:
    start, body = async_to_sync(call)("//jobState", query=b"id=abc")
    assert start["status"] == 301
    assert dict(start["headers"])[b"location"] == b"/jobState?id=abc"
    assert body["body"] == b""
    start, _ = async_to_sync(call)("/x/../registerJob")
    assert dict(start["headers"])[b"location"] == b"/registerJob"
    start, body = async_to_sync(call)("/registerJob/")  # clean: Go's 404
    assert (start["status"], body["body"]) == (404, b"404 page not found\n")


def test_it_does_not_redirect_an_unclean_path_to_another_host() -> None:
    """`/x/../\\evil.example` cleans to `/\\evil.example`; browsers read a Location
    of `/\\host` as `//host`, another origin: an open redirect off the server."""
    start, _ = async_to_sync(call)("/x/../\\evil.example/")
    location = dict(start["headers"]).get(b"location", b"")
    assert start["status"] != 301 or not location.replace(b"\\", b"/").startswith(
        b"//"
    ), location
