"""NUL characters: refused in requests, replaced in what runs print.

PostgreSQL text (and jsonb) cannot hold U+0000: a query or a write carrying one
fails with a DataError, which would answer 500 (or, for a run's output, leave the run
unrecorded). Input is refused at the door with a 400 saying why: the URL, the query
string and form bodies here, JSON bodies by the API's parser (jobs/parsers.py) and the
compat adapters, multipart fields by the serializers' own validators. Output a job
prints is not refused but kept readable: `replace_nul()` turns each NUL into U+FFFD,
as a decoder does with bytes it cannot read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

NUL = "\x00"
REFUSED = "Text must not contain NUL (U+0000) characters."


def contains_nul(value: Any) -> bool:
    """Whether a string anywhere in parsed data (keys too) holds a NUL."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def replace_nul(text: str) -> str:
    return text.replace(NUL, "\ufffd") if NUL in text else text


class RefuseNulMiddleware:
    """400 for a NUL in the path, the query string or a form-encoded body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        where = self._where(request)
        if where:
            return HttpResponseBadRequest(
                f"{REFUSED} Found in the {where}.", content_type="text/plain"
            )
        return self.get_response(request)

    @staticmethod
    def _where(request: HttpRequest) -> str:
        if NUL in request.path:
            return "URL"
        if contains_nul(dict(request.GET.lists())):
            return "query string"
        # Only url-encoded bodies: reading a multipart one here would consume the
        # stream the view parses (its fields are checked by their serializers).
        form = request.content_type == "application/x-www-form-urlencoded"
        if form and contains_nul(dict(request.POST.lists())):
            return "form body"
        return ""
