from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings

from jobs.runners import Outcome, RunContext, SpecError
from jobs.runners.http import HttpRunner

runner = HttpRunner()


class Handler(BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/slow":
            self.release.wait(10)
        code = int(self.path.strip("/")) if self.path.strip("/").isdigit() else 200
        self._answer(code, b"hello " + self.path.encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        seen = {"body": json.loads(body), "token": self.headers.get("X-Token")}
        self._answer(201, json.dumps(seen).encode())

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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
    ],
)
def test_it_refuses_bad_specs(spec: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        runner.validate(spec)
    assert field in info.value.errors
