"""Error pages in each client's own terms: JSON for the native API, Go's plain text
for Kala's /api/v1/ (what its clients got from gorilla/mux), Django's pages elsewhere.

DRF answers errors inside its views; these are for what never reaches one: a path
that matches no route, or a failure outside a view. With DEBUG on (`make run`)
Django shows its own pages instead of the handlers; ApiNotFoundMiddleware keeps the
API's 404 in its clients' terms there too.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

KALA_PREFIX = "/api/v1/"


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    path = request.path_info
    if path.startswith(KALA_PREFIX):
        response = HttpResponse(
            b"404 page not found\n",
            status=404,
            content_type="text/plain; charset=utf-8",
        )
        response["X-Content-Type-Options"] = "nosniff"
        return response
    if path.startswith("/api/"):
        return JsonResponse(
            {"detail": f"Not found: no API endpoint at {path}."}, status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path_info.startswith("/api/") and not request.path_info.startswith(
        KALA_PREFIX
    ):
        return JsonResponse(
            {"detail": "Server error; it has been logged. Please retry later."},
            status=500,
        )
    return defaults.server_error(request)


class ApiNotFoundMiddleware:
    """With DEBUG on, Django answers a path that matches no route with its HTML
    debug page, not handler404: under /api/ answer as page_not_found does."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            settings.DEBUG
            and response.status_code == 404
            and request.path_info.startswith("/api/")
            and response.get("Content-Type", "").startswith("text/html")
        ):
            return page_not_found(request, Exception("no route"))
        return response
