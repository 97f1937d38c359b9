"""Servers for the CLI to talk to: a live Karmchari, or a throwaway fake."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import User

from tests.tokens import make_token


@pytest.fixture
def server(live_server, admin_user: User, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    token = make_token(admin_user)
    monkeypatch.setenv("KARMCHARI_URL", live_server.url)
    monkeypatch.setenv("KARMCHARI_TOKEN", token.key)
    monkeypatch.setenv("KARMCHARI_CONFIG", "/nonexistent/karmchari.ini")
    return str(token.key)


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """A throwaway HTTP server answering every GET and POST with the given handler."""
    servers: list[http.server.ThreadingHTTPServer] = []
    monkeypatch.setenv("KARMCHARI_CONFIG", "/nonexistent/karmchari.ini")
    monkeypatch.setenv("KARMCHARI_TOKEN", "some-token")

    def start(handle: Callable[[http.server.BaseHTTPRequestHandler], None]) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                handle(self)

            def do_POST(self) -> None:
                handle(self)

            def log_message(self, *args: object) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        url = f"http://127.0.0.1:{httpd.server_port}"
        monkeypatch.setenv("KARMCHARI_URL", url)
        return url

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
