"""Text no database here can hold: NUL (U+0000) and lone surrogates (U+D800-U+DFFF);
and in parsed JSON, numbers that are not finite (`1e400` reads as infinity, which
neither jsonb nor SQLite's JSON accepts).

PostgreSQL text and jsonb refuse both (and psycopg cannot even encode a surrogate):
a query or a write carrying one fails with a DataError, which would answer 500, or,
for a run's output, leave the run unrecorded. Input is refused at the door with a
400 saying what and where: the URL, the query string and form bodies by
`RefuseUnstorableMiddleware`, JSON bodies by the API's parser (jobs/parsers.py) and
the compat adapters, other fields by the serializers' own validators. What a job
prints is not refused but kept readable: `storable()` turns each such character into
U+FFFD, as a decoder does with bytes it cannot read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "Text must not contain NUL (U+0000) characters."
    return f"Text must not contain surrogate characters (U+{ord(found.group()):04X})."


def unstorable_path(value: Any) -> tuple[list[str], str] | None:
    """Where the first unstorable text is in parsed data, and why: the keys (list
    positions as text) down to the string holding it ([] for the value itself); a
    key that is itself unstorable ends the path. None when all is storable."""
    stack: list[tuple[list[str], Any]] = [([], value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if why := unstorable(item):
                return path, why
        elif isinstance(item, float) and not math.isfinite(item):
            return path, "Numbers must be finite: this one is out of range."
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and (why := unstorable(key)):
                    return [*path, key], why
                stack.append(([*path, str(key)], child))
        elif isinstance(item, list | tuple):
            stack.extend(([*path, str(i)], child) for i, child in enumerate(item))
    return None


def storable(text: str) -> str:
    """`text` with each unstorable character replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text) if _UNSTORABLE.search(text) else text


V = TypeVar("V", bound=Callable[..., HttpResponse])


def reads_raw_body(view: V) -> V:
    """Mark a view that reads its body itself, whatever its Content-Type (the
    compat APIs: Kala decodes any body as JSON, JobStreamer ignores a form):
    RefuseUnstorableMiddleware does not read it as a form, where a `%00` in a JSON
    text sent by `curl -d` would be a NUL."""
    view.reads_raw_body = True  # type: ignore[attr-defined]
    return view


class RefuseUnstorableMiddleware:
    """400 for unstorable text in the path, the query string or a form body (the
    last only for views that read forms: not those marked `reads_raw_body`)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if why := unstorable(request.path):
            return self._refuse(why, "URL")
        if found := unstorable_path(dict(request.GET.lists())):
            return self._refuse(found[1], "query string")
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., HttpResponse],
        view_args: Any,
        view_kwargs: Any,
    ) -> HttpResponse | None:
        # Only url-encoded bodies: reading a multipart one here would consume the
        # stream the view parses (its fields are checked by their serializers).
        if request.content_type != "application/x-www-form-urlencoded" or getattr(
            view_func, "reads_raw_body", False
        ):
            return None
        try:
            found = unstorable_path(dict(request.POST.lists()))
        except RequestDataTooBig:
            # Reading the form here is the first read of the body: answer as the
            # API does for a JSON body (jobs.views), not with Django's HTML 400.
            why = (
                "The request body is too large: at most "
                f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
            )
            if request.path_info.startswith("/api/"):
                return JsonResponse({"detail": why}, status=413)
            return HttpResponse(why, status=413, content_type="text/plain")
        return self._refuse(found[1], "form body") if found else None

    @staticmethod
    def _refuse(why: str, where: str) -> HttpResponse:
        return HttpResponseBadRequest(
            f"{why} Found in the {where}.", content_type="text/plain"
        )
