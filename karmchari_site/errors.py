"""Error pages in each client's own terms: JSON for the native API, Go's plain text
for Kala's /api/v1/ (what its clients got from gorilla/mux), Django's pages elsewhere.

DRF answers errors inside its views; these are for what never reaches one: a path
that matches no route, or a failure outside a view.
"""

from __future__ import annotations

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
