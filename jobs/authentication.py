"""API authentication with brute-force protection.

DRF's token and basic authentication, plus a per-address count of failed attempts in
the cache: after KARMCHARI_AUTH_FAILURE_LIMIT failures within
KARMCHARI_AUTH_FAILURE_WINDOW seconds, that address gets 429 for every further
attempt with those credentials until the window passes, right or wrong, so guessing
does not pay. The compat routes use the same classes. With Redis down the count is
lost and the check lets requests through (fail open) rather than lock everyone out.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework import authentication, exceptions
from rest_framework.request import Request

logger = logging.getLogger(__name__)


def _address(request: Request) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown")


class FailureLimitMixin:
    keyword: str

    def authenticate(self, request: Request) -> Any:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return super().authenticate(request)  # type: ignore[misc]
        key = f"authfail:{_address(request)}"
        window = settings.KARMCHARI_AUTH_FAILURE_WINDOW
        if (cache.get(key) or 0) >= settings.KARMCHARI_AUTH_FAILURE_LIMIT:
            raise exceptions.Throttled(
                wait=window,
                detail="Too many failed authentication attempts from this address.",
            )
        try:
            return super().authenticate(request)  # type: ignore[misc]
        except exceptions.AuthenticationFailed:
            cache.add(key, 0, timeout=window)
            try:
                failures = cache.incr(key)
            except ValueError:  # expired between add and incr
                failures = 1
            if failures == settings.KARMCHARI_AUTH_FAILURE_LIMIT:
                logger.warning(
                    "authentication: %s failed %d times; refusing it for %ss",
                    _address(request),
                    failures,
                    window,
                )
            raise


class TokenAuthentication(FailureLimitMixin, authentication.TokenAuthentication):
    """`Authorization: Token <key>`, checked against the hashed API tokens."""

    keyword = "Token"

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        from jobs.tokens import token_authenticate

        token = token_authenticate(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return token.user, token


class BasicAuthentication(FailureLimitMixin, authentication.BasicAuthentication):
    keyword = "Basic"
