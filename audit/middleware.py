"""Records every unsafe request (POST, PUT, PATCH, DELETE) after it is answered.

Bodies are not stored: they may carry passwords and secrets. The user is the one the
view authenticated (DRF hands token and basic-auth users down to the Django request).
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from audit.services import audit_record

SAFE = {"GET", "HEAD", "OPTIONS", "TRACE"}


def client_address(request: HttpRequest) -> str | None:
    """The client's address: behind the trusted proxy (KARMCHARI_BEHIND_TLS_PROXY),
    the last X-Forwarded-For entry, the one the proxy itself added; entries before it
    come from the client and can be anything."""
    if settings.SECURE_PROXY_SSL_HEADER:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[-1].strip() or None
    return request.META.get("REMOTE_ADDR") or None


class AuditMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.method not in SAFE:
            audit_record(
                user=getattr(request, "user", None),
                method=request.method or "",
                path=request.get_full_path(),
                status=response.status_code,
                address=client_address(request),
                user_agent=request.META.get("HTTP_USER_AGENT", ""),
            )
        return response
