"""A small client for Karmchari's REST API: settings, auth, errors, the log stream."""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8000"


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
    parser = configparser.ConfigParser()
    if path.exists():
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise CliError(f"{path} is not a valid config file: {exc}", 2) from None
    section = parser[profile] if parser.has_section(profile) else {}
    final_url = url or os.environ.get("KARMCHARI_URL") or section.get("url")
    final_token = token or os.environ.get("KARMCHARI_TOKEN") or section.get("token")
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
    return Settings(
        url=(final_url or DEFAULT_URL).rstrip("/"), token=final_token, source=source
    )


class Client:
    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {settings.token}"
        self.session.headers["Accept"] = "application/json"

    def url(self, path: str) -> str:
        return f"{self.settings.url}/api/{path.lstrip('/')}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self.url(path), **kwargs)
        except requests.ConnectionError:
            raise CliError(
                f"Cannot reach {self.settings.url}: is Karmchari running there? "
                "(set KARMCHARI_URL)"
            ) from None
        except requests.Timeout:
            raise CliError(f"{self.settings.url} did not answer in time.") from None
        self._check(response)
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v})

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
        reconnecting (from the last offset) when the server closes a long stream."""
        while True:
            headers = {"Accept": "text/event-stream"}
            if offset:
                headers["Last-Event-ID"] = str(offset)
            try:
                response = self.session.get(
                    self.url(f"executions/{execution_id}/log/stream/"),
                    headers=headers,
                    params={"offset": offset},
                    stream=True,
                    timeout=(self.timeout, None),
                )
            except requests.ConnectionError:
                raise CliError(f"Lost the connection to {self.settings.url}.") from None
            self._check(response)
            with response:
                event, data = "message", ""
                for raw in response.iter_lines(decode_unicode=True):
                    line = raw or ""
                    if not line:
                        if data:
                            body = json.loads(data)
                            if event == "output":
                                offset = int(body["offset"]) + len(
                                    body["text"].encode()
                                )
                            yield {"event": event, **body}
                            if event == "end":
                                return
                        event, data = "message", ""
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                    elif line.startswith("id:") and line[3:].strip().isdigit():
                        offset = int(line[3:].strip())


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return json.dumps(body)[:300]
