from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from jobs.models import App, Job
from jobs.runners import Outcome, RunContext, SpecError
from jobs.runners.http import HttpRunner, fill_placeholders, placeholder_names

runner = HttpRunner()


class Handler(BaseHTTPRequestHandler):
    release = threading.Event()
    # Set when the client of /drip went away before the body was all sent.
    dropped = threading.Event()

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/slow":
            self.release.wait(10)
        if path == "/redirect":
            self._answer(301, b"", {"Location": parse_qs(query)["to"][0]})
        elif path == "/token":
            self._answer(200, f"token: {self.headers.get('X-Token')}".encode())
        elif path == "/text":
            # In the charset the query names, else in UTF-8 without saying so.
            charset = parse_qs(query).get("charset", [""])[0]
            content_type = f"text/plain; charset={charset}" if charset else "text/plain"
            body = "héllo wörld ✓".encode(charset or "utf-8", "replace")
            self._answer(200, body, {"Content-Type": content_type})
        elif path == "/drip":
            self._drip()
        else:
            code = int(path.strip("/")) if path.strip("/").isdigit() else 200
            self._answer(code, b"hello " + self.path.encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        path, _, query = self.path.partition("?")
        if path == "/redirect":  # 307: the client sends the body again
            self._answer(307, b"", {"Location": parse_qs(query)["to"][0]})
            return
        seen = {"body": json.loads(body), "token": self.headers.get("X-Token")}
        self._answer(201, json.dumps(seen).encode())

    def _answer(
        self, code: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self) -> None:
        """Answers at once, then sends its body a byte every 0.2 s (a stalled
        upstream, a stream): each read is quick, the whole body takes 200 s."""
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(1000):
            try:
                self.wfile.write(b".")
                self.wfile.flush()
            except OSError:
                self.dropped.set()
                return
            time.sleep(0.2)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Handler.release.set()
    httpd.shutdown()
    httpd.server_close()


def nested(depth: int, inner: Any = None) -> Any:
    """`inner` inside `depth` lists."""
    for _ in range(depth):
        inner = [inner]
    return inner


def run(
    spec: dict,
    timeout: float | None = None,
    poll: str = "run",
    secrets: dict[str, str] | None = None,
) -> Outcome:
    context = RunContext(
        execution_id=1,
        job_name="ping",
        app_name="default",
        timeout=timeout,
        poll=lambda: poll,
        secrets=secrets or {},
    )
    return runner.run(runner.validate(spec), context)


def test_it_succeeds_on_2xx_with_status_and_body_as_output(server: str) -> None:
    outcome = run({"url": f"{server}/hi"})
    assert outcome.status == "succeeded"
    assert outcome.exit_code == 200
    assert outcome.output == "HTTP 200 OK\n\nhello /hi"


def test_it_fails_on_an_unexpected_status(server: str) -> None:
    outcome = run({"url": f"{server}/503"})
    assert outcome.status == "failed"
    assert outcome.reason == "HTTP status 503, expected 2xx."


def test_it_accepts_the_expected_statuses(server: str) -> None:
    assert run({"url": f"{server}/404", "expected_status": [404]}).status == (
        "succeeded"
    )
    assert run({"url": f"{server}/200", "expected_status": [204]}).status == "failed"


def test_it_sends_method_headers_and_a_json_body(server: str) -> None:
    outcome = run(
        {
            "method": "post",
            "url": f"{server}/",
            "headers": {"X-Token": "s3cret"},
            "body": {"n": 1},
        }
    )
    assert outcome.exit_code == 201
    assert json.loads(outcome.output.split("\n\n", 1)[1]) == {
        "body": {"n": 1},
        "token": "s3cret",
    }


@override_settings(KARMCHARI_HTTP_BODY_LIMIT=5)
def test_it_caps_the_body(server: str) -> None:
    assert run({"url": f"{server}/long"}).output.endswith(
        "hello\n[... cut at 5 bytes ...]"
    )


def test_it_times_out(server: str) -> None:
    outcome = run({"url": f"{server}/slow", "timeout": 0.3})
    assert outcome.status == "timed_out"


def test_it_stops_waiting_when_killed(server: str) -> None:
    outcome = run({"url": f"{server}/slow"}, poll="kill")
    assert outcome.status == "killed"


def test_it_fails_when_nothing_listens() -> None:
    outcome = run({"url": "http://127.0.0.1:9/"})
    assert outcome.status == "failed"
    assert outcome.reason.startswith("Request failed:")


def test_it_fills_secret_placeholders_in_url_headers_and_body(server: str) -> None:
    secrets = {"TOKEN": "s3cret", "WHERE": "here", "N": "42"}
    outcome = run({"url": f"{server}/${{WHERE}}"}, secrets=secrets)
    assert outcome.output == "HTTP 200 OK\n\nhello /here"
    outcome = run(
        {
            "method": "POST",
            "url": f"{server}/",
            "headers": {"X-Token": "Bearer ${TOKEN}"},
            "body": {"n": "${N}", "literal": ["$${N}", "${"]},
        },
        secrets=secrets,
    )
    assert json.loads(outcome.output.split("\n\n", 1)[1]) == {
        "body": {"n": "42", "literal": ["${N}", "${"]},
        "token": "Bearer s3cret",
    }


def test_it_fails_clearly_on_a_placeholder_naming_no_secret(server: str) -> None:
    outcome = run(
        {"url": f"{server}/", "headers": {"X-Token": "${TOKEN}"}},
        secrets={"OTHER": "x"},
    )
    assert outcome.status == "failed"
    assert outcome.reason == (
        "Not sent: headers.X-Token: ${TOKEN} names no secret of this job."
    )


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://x/"}, "url"),
        ({"url": "http://x/", "method": "BREW"}, "method"),
        ({"url": "http://x/", "headers": {"A": 1}}, "headers"),
        ({"url": "http://x/", "timeout": 0}, "timeout"),
        ({"url": "http://x/", "expected_status": [99]}, "expected_status"),
        ({"url": "http://x/", "body": 5}, "body"),
        ({"url": "http://x/", "verb": "GET"}, "spec"),
        ({"url": "http://[::1/"}, "url"),
        ({"url": "http://x:99999/"}, "url"),
        ({"url": "http://x:port/"}, "url"),
        ({"url": "http://:80/"}, "url"),
        ({"url": "http://x/", "headers": {"X A": "1"}}, "headers"),
        ({"url": "http://x/", "headers": {"X-A": "a\r\nX-Injected: 1"}}, "headers"),
        ({"url": "http://x/", "headers": {"X-A": "a\x00"}}, "headers"),
        ({"url": "http://x/", "headers": {"X-Price": "10 €"}}, "headers"),
        ({"url": "http://x/", "headers": {"X-A": " a"}}, "headers"),
        ({"url": "http://x/", "timeout": 1e10}, "timeout"),
        ({"url": "http://x/", "timeout": float("nan")}, "timeout"),
        ({"url": "http://x/", "body": {"a": nested(64)}}, "body"),
    ],
)
def test_it_refuses_bad_specs(spec: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        runner.validate(spec)
    assert field in info.value.errors


def test_it_accepts_what_can_be_sent() -> None:
    spec = {
        "url": "http://${HOST}:${PORT}/",
        "headers": {"X-Name": "Ren\u00e9e\tM.", "X-Empty": "", "X-Token": "${TOKEN}"},
        "body": nested(64),
        "timeout": 2**31 - 1,
    }
    assert runner.validate(spec) == {"method": "GET", **spec}


@pytest.mark.django_db
def test_it_answers_400_not_500_for_a_url_that_cannot_be_parsed(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app()
    api.raise_request_exception = False
    answer = api.post(
        "/api/jobs/",
        {
            "app": "default",
            "name": "v6",
            "kind": "http",
            "spec": {"url": "http://[::1/"},
        },
        format="json",
    )
    assert answer.status_code == 400, answer.status_code
    assert "url" in answer.json()["spec"]
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(
            {"url": "http://127.0.0.1/", "headers": {"X-A": "a\r\nX-Injected: 1"}},
            id="header-value-with-newline",
        ),
        pytest.param(
            {"url": "http://127.0.0.1/", "headers": {"X-Price": "10 €"}},
            id="header-value-not-latin-1",
        ),
        pytest.param({"url": "http://127.0.0.1:99999/"}, id="port-out-of-range"),
        pytest.param(
            {"url": "http://127.0.0.1/", "timeout": 1e10}, id="timeout-overflows"
        ),
    ],
)
def test_it_refuses_a_spec_that_can_never_be_sent(
    api: APIClient, make_app: Callable[..., App], spec: dict
) -> None:
    make_app()
    answer = api.post(
        "/api/jobs/",
        {"app": "default", "name": "never", "kind": "http", "spec": spec},
        format="json",
    )
    assert answer.status_code == 400, answer.content
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_deeply_nested_body_rather_than_store_a_job_that_breaks_the_list(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app()
    api.raise_request_exception = False
    depth = 500  # shallow enough for the JSON parser's own guard
    raw = (
        '{"app": "default", "name": "deep", "kind": "http", '
        '"spec": {"url": "http://127.0.0.1/", "body": %s}}'
        % ("[" * depth + "]" * depth)
    )
    answer = api.post("/api/jobs/", raw, content_type="application/json")
    listing = api.get("/api/jobs/")
    assert (answer.status_code, listing.status_code) == (400, 200)
    assert "body" in answer.json()["spec"]
    assert not Job.objects.exists()


def test_it_reads_placeholders_in_a_body_deeper_than_the_recursion_limit() -> None:
    # A job stored before bodies had a depth limit: the job list still reads it.
    spec = {"url": "http://x/", "body": nested(5000, {"k": "${TOKEN}"})}
    assert placeholder_names(spec) == {"TOKEN"}
    body = fill_placeholders(spec, {"TOKEN": "s3cret"})["body"]
    for _ in range(5000):
        (body,) = body
    assert body == {"k": "s3cret"}


def test_it_fails_without_sending_a_secret_that_cannot_be_a_header_value(
    server: str,
) -> None:
    outcome = run(
        {"url": f"{server}/", "headers": {"X-Token": "${TOKEN}"}},
        secrets={"TOKEN": "s3cret\n"},
    )
    assert outcome.status == "failed"
    assert outcome.reason.startswith(
        "Not sent: headers: The value of X-Token cannot be sent:"
    )
    assert "s3cret" not in outcome.reason


def test_it_runs_a_spec_stored_with_a_timeout_beyond_the_limit(server: str) -> None:
    spec = {"method": "GET", "url": f"{server}/hi", "timeout": 1e10}
    context = RunContext(
        execution_id=1, job_name="ping", app_name="default", timeout=None
    )
    # Not an OverflowError from the socket: the limit applies when it runs too.
    assert runner.run(spec, context).status == "succeeded"


def test_it_times_out_when_the_answer_trickles_in(server: str) -> None:
    started = time.monotonic()
    outcome = run({"url": f"{server}/drip"}, timeout=1)
    took = time.monotonic() - started
    # Each read comes within the timeout: only the run's deadline catches it.
    assert took < 3, f"took {took:.1f}s with a 1s timeout"
    assert outcome.status == "timed_out", outcome
    # The abandoned request stops reading (its thread ends) rather than go on.
    assert Handler.dropped.wait(5)


def test_it_times_out_when_the_name_lookup_hangs(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    lookup = socket.getaddrinfo

    def hanging(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return lookup(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    try:
        outcome = run({"url": f"{server}/hi"}, timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 2
    assert outcome.status == "timed_out", outcome


def test_it_decodes_a_text_body_as_utf8_unless_it_names_a_charset(
    server: str,
) -> None:
    outcome = run({"url": f"{server}/text"})
    assert outcome.output == "HTTP 200 OK\n\nhéllo wörld ✓"
    outcome = run({"url": f"{server}/text?charset=iso-8859-1"})
    assert outcome.output == "HTTP 200 OK\n\nhéllo wörld ?"


def test_it_follows_redirects_unless_it_expects_one(server: str) -> None:
    moved = f"{server}/redirect?to=/hi"
    assert run({"url": moved}).output == "HTTP 200 OK\n\nhello /hi"
    outcome = run({"url": moved, "expected_status": [301]})
    assert outcome.status == "succeeded", outcome
    assert outcome.exit_code == 301


def test_it_does_not_send_the_body_to_another_origin_on_a_307(server: str) -> None:
    """requests sends the body again on a 307/308; secrets are filled into it."""
    spec = {"method": "POST", "body": {"password": "${PW}"}}
    secrets = {"PW": "hunter2"}
    same = run({**spec, "url": f"{server}/redirect?to=/echo"}, secrets=secrets)
    assert same.status == "succeeded", same
    assert '"password": "hunter2"' in same.output
    elsewhere = f"{server.replace('127.0.0.1', 'localhost')}/echo"
    other = run(
        {**spec, "url": f"{server}/redirect?to={quote(elsewhere)}"}, secrets=secrets
    )
    assert other.status == "failed"
    assert other.reason == (
        f"Request failed: not following a 307 redirect to another origin "
        f"({elsewhere}): it would send the request body there"
    )


def test_it_sends_the_spec_headers_to_the_spec_host_only(server: str) -> None:
    spec = {"headers": {"X-Token": "${TOKEN}"}}
    secrets = {"TOKEN": "s3cret"}
    same = run({**spec, "url": f"{server}/redirect?to=/token"}, secrets=secrets)
    assert same.output == "HTTP 200 OK\n\ntoken: s3cret"
    # The same server under another name: another host for the client.
    elsewhere = quote(f"{server.replace('127.0.0.1', 'localhost')}/token")
    other = run({**spec, "url": f"{server}/redirect?to={elsewhere}"}, secrets=secrets)
    assert other.output == "HTTP 200 OK\n\ntoken: None"
