"""A small client for Karmchari's REST API: settings, auth, errors, the log stream."""

from __future__ import annotations

import configparser
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

DEFAULT_URL = "http://127.0.0.1:8000"

# Reconnects of the log stream in a row, without an event in between, before giving
# up; the pause before each doubles from _STREAM_BACKOFF_SECONDS. A connection that
# ends without a sign of life (an event, or the keep-alive the server sends while a
# run is quiet) counts as a failure too: else a proxy answering 200 with an empty
# body would be asked again and again, for ever.
_STREAM_RETRIES = 3
_STREAM_BACKOFF_SECONDS = 0.25


class CliError(Exception):
    """Something to tell the user, with the exit code to end on."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class AuthError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code=3)


def config_path() -> Path:
    explicit = os.environ.get("KARMCHARI_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "karmchari" / "config.ini"


@dataclass(frozen=True)
class Settings:
    url: str
    token: str
    source: str


def load_settings(
    *, url: str | None, token: str | None, profile: str = "default"
) -> Settings:
    """Flags win over the environment (KARMCHARI_URL, KARMCHARI_TOKEN), which wins over
    the config file's [profile] section (url = ..., token = ...)."""
    path = config_path()
    # No interpolation: a token or a URL may hold a `%`.
    parser = configparser.ConfigParser(interpolation=None)
    if path.exists():
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise CliError(f"{path} is not a valid config file: {exc}", 2) from None
        except UnicodeDecodeError as exc:
            raise CliError(
                f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8.", 2
            ) from None
    section = parser[profile] if parser.has_section(profile) else {}
    final_url = (
        url or os.environ.get("KARMCHARI_URL") or section.get("url") or DEFAULT_URL
    ).strip()
    try:
        parts = urlsplit(final_url)
        parts.port  # noqa: B018 (raises on a port that is no number, or too big)
    except ValueError as exc:
        raise CliError(f"Server URL {final_url!r} is not valid: {exc}.", 2) from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(
            f"Server URL {final_url!r} is not an http(s) URL: use e.g. {DEFAULT_URL}.",
            2,
        )
    # A token pasted or read from a file often comes with a newline, which no HTTP
    # header may hold.
    final_token = (
        token or os.environ.get("KARMCHARI_TOKEN") or section.get("token") or ""
    ).strip()
    if not final_token:
        raise AuthError(
            "No API token: set KARMCHARI_TOKEN, pass --token, or put "
            f"'token = ...' under [{profile}] in {path}. Get one with "
            "POST /api/token/ or `python manage.py create_token USER`."
        )
    source = (
        "flags/environment"
        if (token or os.environ.get("KARMCHARI_TOKEN"))
        else str(path)
    )
    return Settings(url=final_url.rstrip("/"), token=final_token, source=source)


class Client:
    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {settings.token}"
        self.session.headers["Accept"] = "application/json"
        # The last URL asked, to name in an error about its answer.
        self.last_url: str | None = None

    def url(self, path: str) -> str:
        return f"{self.settings.url}/api/{path.lstrip('/')}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        self.last_url = self.url(path)
        try:
            response = self.session.request(method, self.url(path), **kwargs)
        except requests.ConnectionError:
            raise CliError(
                f"Cannot reach {self.settings.url}: is Karmchari running there? "
                "(set KARMCHARI_URL)"
            ) from None
        except requests.Timeout:
            raise CliError(f"{self.settings.url} did not answer in time.") from None
        except requests.RequestException as exc:
            raise CliError(f"Request to {self.settings.url} failed: {exc}") from None
        self._check(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            # A proxy's HTML page, or a URL that is not Karmchari's.
            kind = response.headers.get("Content-Type") or "no content type"
            raise CliError(
                f"{self.settings.url} answered {response.request.path_url} with "
                f"something that is not JSON ({kind}): is it Karmchari's URL?"
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        """None leaves a parameter out; 0 and "" are sent."""
        return self.request(
            "GET", path, params={k: v for k, v in params.items() if v is not None}
        )

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def _check(self, response: requests.Response) -> None:
        if response.status_code < 400:
            return
        detail = _detail(response)
        if response.status_code in (401, 403):
            what = (
                "Authentication failed"
                if response.status_code == 401
                else "Not allowed"
            )
            raise AuthError(
                f"{what} at {self.settings.url} ({detail}). Check the token from "
                f"{self.settings.source}."
            )
        if response.status_code == 404:
            raise CliError(f"Not found: {response.request.path_url} ({detail})")
        raise CliError(f"{response.status_code}: {detail}")

    def log_events(
        self, execution_id: int, offset: int = 0
    ) -> Iterator[dict[str, Any]]:
        """The SSE log stream as events ({"event": "output"|"end", ...data}),
        reconnecting from the last event's id (the server's next offset) when the
        server closes a long stream, when the connection breaks, and when it goes
        silent for the client's timeout (the server sends a keep-alive every 0.25 s
        while a run is quiet, so silence means a dead peer). A connection that ends
        with neither an event nor a keep-alive is a failure, as a broken one is."""
        failures = 0
        while True:
            alive = False
            try:
                for resume_at, event in self._log_stream(execution_id, offset):
                    alive, failures = True, 0
                    if event is None:  # a keep-alive
                        continue
                    offset = resume_at
                    yield event
                    if event["event"] == "end":
                        return
                if alive:
                    continue  # the server ended a long stream: resume at once
                lost = "the log stream ended without an event (is it Karmchari's URL?)"
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                # A read timeout while streaming comes as a ConnectionError.
                lost = str(exc)
            except requests.RequestException as exc:
                raise CliError(
                    f"Log stream from {self.settings.url} failed: {exc}"
                ) from None
            failures += 1
            if failures > _STREAM_RETRIES:
                raise CliError(f"Lost the connection to {self.settings.url}: {lost}")
            time.sleep(_STREAM_BACKOFF_SECONDS * 2 ** (failures - 1))

    def _log_stream(
        self, execution_id: int, offset: int
    ) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """One connection's events, each with the offset to resume after it; None
        for a keep-alive comment."""
        headers = {"Accept": "text/event-stream"}
        if offset:
            headers["Last-Event-ID"] = str(offset)
        response = self.session.get(
            self.url(f"executions/{execution_id}/log/stream/"),
            headers=headers,
            params={"offset": offset},
            stream=True,
            timeout=self.timeout,
        )
        with response:
            self._check(response)
            if response.status_code == 204:
                # A reconnect past the end of a finished run (its `end` event was
                # lost with the connection): the end, with the run's status.
                status = self.get(f"executions/{execution_id}/")["status"]
                yield offset, {"event": "end", "status": status, "next_offset": offset}
                return
            kind = response.headers.get("Content-Type") or "no content type"
            if kind.partition(";")[0].strip().lower() != "text/event-stream":
                # A proxy's login page, or a URL that is not Karmchari's.
                raise CliError(
                    f"{self.settings.url} answered {response.request.path_url} with "
                    f"something that is not an event stream ({kind}): is it "
                    "Karmchari's URL?"
                )
            event, data = "message", ""
            for raw in response.iter_lines(decode_unicode=True):
                line = raw or ""
                if not line:
                    if data:
                        yield offset, {"event": event, **self._event_data(data)}
                    event, data = "message", ""
                elif line.startswith(":"):
                    yield offset, None
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif line.startswith("id:") and line[3:].strip().isdigit():
                    offset = int(line[3:].strip())

    def _event_data(self, data: str) -> dict[str, Any]:
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CliError(
                f"{self.settings.url} sent a log event that is not a JSON object: "
                f"{data[:100]!r}"
            )
        return body


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return json.dumps(body)[:300]
