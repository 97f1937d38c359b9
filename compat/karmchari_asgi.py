"""An ASGI application serving only the original Karmchari's routes.

`python manage.py karmchari_server` runs it on the original's port (51463), so old
clients that hard-code the port keep working while the rest of Karmchari stays on its
own port. Any other path gets Go's `404 page not found`, and an unclean one (`//`,
`.` or `..` elements) gorilla/mux's 301 to its clean form, as the original.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "karmchari_site.settings")

PATHS = frozenset({"/registerJob", "/jobState"})
_django = get_asgi_application()


def clean_path(path: str) -> str:
    """gorilla/mux's cleanPath: Go's path.Clean, keeping a trailing slash."""
    if not path.startswith("/"):
        path = "/" + path
    # POSIX keeps a leading "//"; Go does not.
    clean = posixpath.normpath(re.sub("/{2,}", "/", path))
    if path.endswith("/") and clean != "/":
        clean += "/"
    return clean


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope.get("path") in PATHS:
        await _django(scope, receive, send)
        return
    path = scope.get("path") or "/"
    clean = clean_path(path)
    # Not to "/\\host/": browsers read a backslash as a slash, so that Location
    # would send the client to another site (Go's redirect did).
    if clean != path and "\\" not in clean:
        query = scope.get("query_string") or b""
        location = clean.encode() + (b"?" + query if query else b"")
        await send(
            {
                "type": "http.response.start",
                "status": 301,
                "headers": [(b"location", location), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"404 page not found\n"
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"x-content-type-options", b"nosniff"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
