"""The CLI's client: settings, errors, and the log stream through broken
connections."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from pathlib import Path
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


def test_it_ends_the_follow_when_the_reconnect_finds_the_run_over(
    fake_server: Callable[..., str],
) -> None:
    """The connection breaks after the last output, before the end event: the
    reconnect answers 204 (nothing more will come), and the end is the run's
    status, read from the API."""
    calls: list[str] = []

    def handle(handler: http.server.BaseHTTPRequestHandler) -> None:
        if "/log/stream/" not in handler.path:
            _answer_json(handler, b'{"id": 1, "status": "failed"}')
            return
        calls.append(handler.headers.get("Last-Event-ID", ""))
        if len(calls) > 1:
            handler.send_response(204)
            handler.end_headers()
            return
        _start_stream(handler)
        _chunk(
            handler, 'id: 6\nevent: output\ndata: {"offset": 0, "text": "ok\\n"}\n\n'
        )
        handler.close_connection = True
        handler.request.shutdown(2)

    fake_server(handle)
    client = Client(load_settings(url=None, token=None))
    events = list(client.log_events(1))
    assert events[-1] == {"event": "end", "status": "failed", "next_offset": 6}
    assert [e.get("text") for e in events[:-1]] == ["ok\n"]
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


def _answer(
    handler: http.server.BaseHTTPRequestHandler,
    body: bytes,
    *,
    status: int = 200,
    content_type: str = "application/json",
) -> None:
    length = int(handler.headers.get("Content-Length") or 0)
    handler.rfile.read(length)
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.mark.timeout(30)
def test_it_gives_up_on_a_stream_that_ends_without_an_event(
    fake_server: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 200 with an empty body (a proxy, a broken server) used to be asked again
    at once, for ever."""
    monkeypatch.setattr(client_module, "_STREAM_BACKOFF_SECONDS", 0)
    calls: list[str] = []

    def empty(handler: http.server.BaseHTTPRequestHandler) -> None:
        calls.append(handler.path)
        _answer(handler, b"", content_type="text/event-stream")

    fake_server(empty)
    client = Client(load_settings(url=None, token=None))
    with pytest.raises(CliError, match="ended without an event"):
        list(client.log_events(1))
    assert len(calls) == client_module._STREAM_RETRIES + 1


def test_it_refuses_a_log_stream_that_is_not_an_event_stream(
    fake_server: Callable[..., str],
) -> None:
    calls: list[str] = []

    def login_page(handler: http.server.BaseHTTPRequestHandler) -> None:
        calls.append(handler.path)
        _answer(handler, b"<html>Log in</html>", content_type="text/html")

    fake_server(login_page)
    client = Client(load_settings(url=None, token=None))
    with pytest.raises(CliError, match=r"not an event stream \(text/html\)"):
        list(client.log_events(1))
    assert len(calls) == 1


def test_it_keeps_following_a_quiet_run_through_server_closed_streams(
    fake_server: Callable[..., str],
) -> None:
    """A quiet run's stream holds only keep-alives until the server ends it
    (KARMCHARI_LOG_STREAM_SECONDS): a sign of life, not a failure."""
    calls: list[str] = []

    def stream(handler: http.server.BaseHTTPRequestHandler) -> None:
        calls.append(handler.path)
        if len(calls) <= client_module._STREAM_RETRIES + 1:
            body = b"retry: 1000\n\n: keep-alive\n\n"
        else:
            body = b'id: 0\nevent: end\ndata: {"status": "succeeded"}\n\n'
        _answer(handler, body, content_type="text/event-stream")

    fake_server(stream)
    client = Client(load_settings(url=None, token=None))
    assert [e["event"] for e in client.log_events(1)] == ["end"]


@pytest.mark.parametrize(
    ("argv", "status", "body"),
    [
        (["run", "7"], 202, b"null"),
        (["run", "7"], 202, b"[]"),
        (["run", "7"], 202, b'"ok"'),
        (["run", "7"], 202, b"{}"),
        (["run", "7"], 202, b""),
        (["jobs", "list"], 200, b"[1, 2]"),
        (["jobs", "list"], 200, b'{"results": "x"}'),
        (["jobs", "list"], 200, b"{}"),
    ],
)
def test_it_reports_an_answer_of_an_unexpected_shape(
    fake_server: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    body: bytes,
) -> None:
    """JSON, but not Karmchari's: an error, not a TypeError or KeyError traceback."""
    job = b'{"id": 7, "app": "ops", "name": "x", "kind": "shell"}'

    def handle(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.command == "GET" and handler.path == "/api/jobs/7/":
            _answer(handler, job)
        else:
            _answer(handler, body, status=status)

    url = fake_server(handle)
    assert main(argv) == 1
    err = capsys.readouterr().err
    path = "jobs/7/run/" if argv[0] == "run" else "jobs/"
    assert err == (
        f"karmchari: Unexpected answer from {url}/api/{path}: is it Karmchari's URL?\n"
    )


def test_it_sends_a_parameter_of_zero(fake_server: Callable[..., str]) -> None:
    seen: list[str] = []

    def handle(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(handler.path)
        _answer(handler, b"{}")

    fake_server(handle)
    Client(load_settings(url=None, token=None)).get("things/", n=0, app=None)
    assert seen == ["/api/things/?n=0"]


def test_it_reads_a_config_file_with_a_percent_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.ini"
    config.write_text("[default]\nurl = http://h:1/a%20b\ntoken = ab%cd\n")
    monkeypatch.setenv("KARMCHARI_CONFIG", str(config))
    monkeypatch.delenv("KARMCHARI_URL", raising=False)
    monkeypatch.delenv("KARMCHARI_TOKEN", raising=False)
    settings = load_settings(url=None, token=None)
    assert (settings.url, settings.token) == ("http://h:1/a%20b", "ab%cd")


def test_it_refuses_a_config_file_that_is_not_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.ini"
    config.write_bytes(b"[default]\ntoken = \xff\xfe\n")
    monkeypatch.setenv("KARMCHARI_CONFIG", str(config))
    monkeypatch.delenv("KARMCHARI_TOKEN", raising=False)
    with pytest.raises(CliError, match=r"is not UTF-8 text \(byte 18\)") as caught:
        load_settings(url=None, token=None)
    assert caught.value.code == 2


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://h:abc", "Port could not be cast to integer value as 'abc'"),
        ("http://127.0.0.1:99999", "Port out of range 0-65535"),
    ],
)
def test_it_refuses_a_server_url_it_cannot_parse(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    why: str,
) -> None:
    monkeypatch.setenv("KARMCHARI_CONFIG", "/nonexistent/karmchari.ini")
    monkeypatch.setenv("KARMCHARI_TOKEN", "some-token")
    assert main(["--url", url, "agents"]) == 2
    assert capsys.readouterr().err == (
        f"karmchari: Server URL {url!r} is not valid: {why}.\n"
    )
