"""The CLI's client: settings, errors, and the log stream through broken
connections."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from jobs.logs import LogWriter
from jobs.models import Execution, Job
from karmchari_cli import client as client_module
from karmchari_cli.client import Client, CliError, load_settings
from karmchari_cli.main import main


def _start_stream(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()


def _chunk(handler: http.server.BaseHTTPRequestHandler, text: str) -> None:
    data = text.encode()
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    handler.wfile.flush()


def _answer_json(handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_it_reports_a_non_json_answer_instead_of_crashing(
    fake_server: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A proxy (or a wrong URL) answering 200 with an HTML page."""

    def html(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = b"<html><body>Welcome to nginx!</body></html>"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    fake_server(html)
    assert main(["agents"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("karmchari: ")
    assert "not JSON (text/html)" in err


def test_it_refuses_a_server_url_without_a_scheme(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KARMCHARI_CONFIG", "/nonexistent/karmchari.ini")
    monkeypatch.setenv("KARMCHARI_TOKEN", "some-token")
    monkeypatch.setenv("KARMCHARI_URL", "127.0.0.1:8000")
    assert main(["agents"]) == 2
    assert capsys.readouterr().err == (
        "karmchari: Server URL '127.0.0.1:8000' is not an http(s) URL: use e.g. "
        "http://127.0.0.1:8000.\n"
    )


def test_it_strips_the_newline_a_token_comes_with(
    fake_server: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As from `export KARMCHARI_TOKEN=$(cat token.txt)` of a file ending in a blank
    line, or a config file's `token = ...` pasted with spaces."""
    seen: list[str | None] = []

    def agents(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("Authorization"))
        _answer_json(handler, b"[]")

    fake_server(agents)
    monkeypatch.setenv("KARMCHARI_TOKEN", "some-token\n\n")
    assert main(["--json", "agents"]) == 0
    assert seen == ["Token some-token"]


def test_it_reports_a_token_no_header_can_hold(
    fake_server: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[str | None] = []

    def agents(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("Authorization"))
        _answer_json(handler, b"[]")

    fake_server(agents)
    monkeypatch.setenv("KARMCHARI_TOKEN", "some\ntoken")
    assert main(["agents"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("karmchari: Request to http://127.0.0.1:")
    assert seen == []


def test_it_reconnects_the_follow_stream_when_the_connection_drops(
    fake_server: Callable[..., str],
) -> None:
    """A proxy or a restarted web process cuts a chunked event stream short: the
    client resumes from the last event's id."""
    calls: list[str] = []

    def stream(handler: http.server.BaseHTTPRequestHandler) -> None:
        calls.append(handler.headers.get("Last-Event-ID", ""))
        _start_stream(handler)
        if len(calls) == 1:
            _chunk(
                handler,
                'id: 6\nevent: output\ndata: {"offset": 0, "text": "first\\n"}\n\n'
                # An event cut short before its end: not delivered, so its id
                # does not count.
                'id: 9\nevent: output\ndata: {"offset": 6, "te',
            )
            # The connection is cut: no terminating chunk.
            handler.close_connection = True
            handler.request.shutdown(2)
            return
        _chunk(
            handler,
            'id: 13\nevent: output\ndata: {"offset": 6, "text": "second\\n"}\n\n',
        )
        _chunk(
            handler,
            'id: 13\nevent: end\ndata: {"status": "succeeded", "next_offset": 13}\n\n',
        )
        handler.wfile.write(b"0\r\n\r\n")
        handler.close_connection = True

    fake_server(stream)
    client = Client(load_settings(url=None, token=None))
    texts = [e["text"] for e in client.log_events(1) if e["event"] == "output"]
    assert texts == ["first\n", "second\n"]
    assert calls == ["", "6"]


@pytest.mark.timeout(30)
def test_it_gives_up_on_a_silent_stream_after_a_few_reconnects(
    fake_server: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server sends a keep-alive every 0.25 s while a run is quiet
    (jobs/engine_views.py), so a connection silent for the client's timeout has a
    dead peer (a laptop that slept, a NAT that forgot it): reconnect, and in the end
    say so rather than block `run --follow` for ever."""
    monkeypatch.setattr(client_module, "_STREAM_BACKOFF_SECONDS", 0)
    release = threading.Event()
    calls: list[str] = []

    def silent(handler: http.server.BaseHTTPRequestHandler) -> None:
        calls.append(handler.path)
        _start_stream(handler)
        _chunk(handler, "retry: 1000\n\n")
        release.wait(20)  # then nothing more: a dead peer

    fake_server(silent)
    client = Client(load_settings(url=None, token=None), timeout=0.5)
    try:
        with pytest.raises(CliError, match=r"^Lost the connection to http://127\.0"):
            list(client.log_events(1))
    finally:
        release.set()
    assert len(calls) == client_module._STREAM_RETRIES + 1


def test_it_reports_a_log_event_that_is_not_json(
    fake_server: Callable[..., str],
) -> None:
    def stream(handler: http.server.BaseHTTPRequestHandler) -> None:
        _start_stream(handler)
        _chunk(handler, "id: 3\nevent: output\ndata: <html>\n\n")
        handler.wfile.write(b"0\r\n\r\n")
        handler.close_connection = True

    fake_server(stream)
    client = Client(load_settings(url=None, token=None))
    with pytest.raises(CliError, match="sent a log event that is not a JSON object"):
        list(client.log_events(1))


@pytest.mark.django_db(transaction=True)
def test_it_keeps_non_utf8_output_across_a_stream_reconnect(
    server: str, settings: Any, make_job: Callable[..., Job]
) -> None:
    """`run --follow` reconnects when the server ends a long stream
    (KARMCHARI_LOG_STREAM_SECONDS). Output with a byte that is not UTF-8 (Latin-1
    text, binary noise) reaches the client as U+FFFD, which is 3 bytes, not 1: the
    next offset is the event's id, not one counted from the text."""
    settings.KARMCHARI_LOG_STREAM_SECONDS = 0
    job = make_job(kind="external", spec={})
    execution = Execution.objects.create(
        job=job, status="running", trigger="api", started_at=timezone.now()
    )
    writer = LogWriter(execution.pk)
    writer.write(b"caf\xe9\n")
    writer.flush()

    events = Client(load_settings(url=None, token=None)).log_events(execution.pk)
    first = next(events)
    assert (first["event"], first["text"]) == ("output", "caf\ufffd\n")

    # The server closed that stream; the run goes on writing, then ends.
    writer.write(b"second line\n")
    writer.close()
    Execution.objects.filter(pk=execution.pk).update(
        status="succeeded", finished_at=timezone.now()
    )
    rest = "".join(e["text"] for e in events if e["event"] == "output")
    assert rest == "second line\n"
