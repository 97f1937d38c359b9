"""Go's wire format, as Kala speaks it: its errors, times, JSON and plain
answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.http import HttpResponse

GO_ZERO = "0001-01-01T00:00:00Z"
CONTENT_TYPE = "application/json;charset=UTF-8"
INIT_ERROR = "Error occured when initializing the job"  # sic: Kala's spelling


class KalaError(Exception):
    """A bad request: 400 with this text/plain body."""


class KalaDenied(Exception):
    """Per-app access hides the Kala app from the caller: 403, as the route answers
    a caller without the permission."""


# --- Encoding ---------------------------------------------------------------------


def go_time(value: datetime | None) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros trimmed, in UTC."""
    if value is None:
        return GO_ZERO
    moment = value.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


# What Go's encoder escapes beyond JSON's minimum: HTML characters, and the line and
# paragraph separators (JavaScript cannot hold them raw in a string).
_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def go_json(data: Any, status: int = 200) -> HttpResponse:
    """json.NewEncoder: compact, HTML characters and U+2028/U+2029 escaped, a final
    newline."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES:
        body = body.replace(char, escaped)
    return HttpResponse(body + "\n", status=status, content_type=CONTENT_TYPE)


def plain(body: str, status: int) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


def empty(status: int) -> HttpResponse:
    response = HttpResponse(b"", status=status)
    del response["Content-Type"]
    return response
