"""Talking as liberator did: content negotiation, bodies, answers, CORS, routes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from compat import edn
from compat.security import (
    REALM,
    authorize,
)
from karmchari_site.text import reads_raw_body, unstorable_path

EDN = "application/edn"
JSON = "application/json"
MAX_BODY = 1 << 20
PAGE = 20


class Problem(Exception):
    """An answer other than success: status and messages."""

    def __init__(self, status: int, *messages: str) -> None:
        super().__init__("; ".join(messages))
        self.status = status
        self.messages = list(messages)


# --- Negotiation, bodies, answers -------------------------------------------------


def negotiate(request: HttpRequest) -> str | None:
    """EDN unless the client prefers JSON; None when it accepts neither (406)."""
    header = request.headers.get("Accept", "").strip()
    if not header:
        return EDN
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, media.lower()))
    for _, _, media in sorted(ranked):
        if media == JSON:
            return JSON
        if media in (EDN, "*/*", "application/*"):
            return EDN
    return None


def answer(request: HttpRequest, data: Any, status: int = 200) -> HttpResponse:
    media = negotiate(request) or EDN
    body = edn.dumps(data) if media == EDN else edn.to_json(data)
    return HttpResponse(body, status=status, content_type=f"{media};charset=UTF-8")


def _text(body: str, status: int) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain;charset=UTF-8")


def _no_content() -> HttpResponse:
    response = HttpResponse(b"", status=204)
    del response["Content-Type"]
    return response


def read_body(request: HttpRequest, *, keywords: bool = False) -> Any:
    """The EDN or JSON body; None for none, or for another media type (ignored, as
    JobStreamer does). With `keywords`, EDN keyword values stay Keywords."""
    media = (request.content_type or "").lower()
    if media not in (EDN, JSON):
        return None
    if len(request.body) > MAX_BODY:
        raise Problem(400, "The body is larger than 1 MiB.")
    if not request.body.strip():
        return None
    try:
        body = (
            edn.loads(request.body, keywords=keywords)
            if media == EDN
            else json.loads(request.body)
        )
    except edn.EdnError as exc:
        raise Problem(400, f"IOException: cannot read the EDN body: {exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Problem(400, f"IOException: cannot read the JSON body: {exc}") from None
    if found := unstorable_path(body):
        raise Problem(400, f"IOException: cannot read the body: {found[1]}")
    if why := edn.unstorable(body):
        raise Problem(400, f"IOException: cannot read the body: {why}")
    return body


def _body_map(request: HttpRequest, *, keywords: bool = False) -> dict[str, Any]:
    body = read_body(request, keywords=keywords)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise Problem(400, "The body must be a map.")
    return body


def _first(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if data.get(key) not in (None, ""):
            return data[key]
    return None


def _page(request: HttpRequest) -> tuple[int, int]:
    """limit (default 20) and offset (default 0, echoed as the original's `(to-int
    offset 0)`); JobStreamer's offset is 1-based (0 and 1 both start at the first
    item)."""
    try:
        limit = int(request.GET.get("limit", PAGE))
        offset = int(request.GET.get("offset", 0))
    except ValueError:
        raise Problem(400, "limit and offset must be whole numbers.") from None
    if limit < 0 or offset < 0:
        raise Problem(400, "limit and offset must not be negative.")
    return min(limit, 1000), offset


def _start(offset: int, hits: int) -> int:
    """Where a page starts: an offset past the end gives an empty page, and never
    reaches the database (SQLite and PostgreSQL refuse an OFFSET beyond 64 bits)."""
    return min(max(offset - 1, 0), hits)


View = Callable[..., HttpResponse]
CORS_METHODS = "POST,GET,PUT,DELETE,OPTIONS"  # as the original (compat-spec §3.1)


def _preflight() -> HttpResponse:
    """The original's answer to any OPTIONS while CORS is on: 200, before
    authentication (a browser sends no credentials with a preflight)."""
    response = HttpResponse(b"", status=200)
    del response["Content-Type"]
    response["Access-Control-Allow-Methods"] = CORS_METHODS
    response["Access-Control-Allow-Headers"] = "Content-Type, Accept, Authorization"
    response["Access-Control-Max-Age"] = "600"
    return response


def _with_cors(response: HttpResponse, origin: str) -> HttpResponse:
    """Every answer, errors included, names the allowed origin (browsers hide any
    answer that does not). Credentials may go with a named origin, never with *."""
    response["Access-Control-Allow-Origin"] = origin
    if origin != "*":
        response["Access-Control-Allow-Credentials"] = "true"
    return response


def _route(**methods: View) -> View:
    serve = _serve(**methods)

    @csrf_exempt
    @reads_raw_body
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        origin = settings.KARMCHARI_JOBSTREAMER_CORS_ORIGIN
        if not origin:
            return serve(request, **kwargs)
        if request.method == "OPTIONS":
            return _with_cors(_preflight(), origin)
        return _with_cors(serve(request, **kwargs), origin)

    return view


def _serve(**methods: View) -> View:
    allowed = ", ".join(sorted(methods))

    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        handler = methods.get(request.method or "")
        if handler is None:
            response = _text("Method not allowed.", 405)
            response["Allow"] = allowed
            return response
        if negotiate(request) is None:
            return _text("No acceptable resource available.", 406)
        verdict = authorize(request, "jobstreamer")
        if not verdict.allowed:
            response = _text(
                "Unauthorized" if verdict.status == 401 else "Permission denied",
                verdict.status,
            )
            if verdict.status == 401:
                response["WWW-Authenticate"] = REALM
            return response
        try:
            return handler(request, verdict.user, **kwargs)
        except Problem as problem:
            if problem.status == 404:
                return _text("Resource not found.", 404)
            if problem.status == 403:
                return _text("Permission denied", 403)
            # `:messages` as the original's validation answers; `:message` as its
            # other errors do (its console shows a refused schedule from it).
            return answer(
                request,
                {"messages": problem.messages, "message": str(problem)},
                problem.status,
            )

    return view


@csrf_exempt
def not_found_view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    """Any other path under JobStreamer's routes: duct's wrap-not-found answer, for
    every method (a CORS preflight too, while CORS is on)."""
    origin = settings.KARMCHARI_JOBSTREAMER_CORS_ORIGIN
    if origin and request.method == "OPTIONS":
        return _with_cors(_preflight(), origin)
    response = _text("Resource Not Found", 404)
    return _with_cors(response, origin) if origin else response
