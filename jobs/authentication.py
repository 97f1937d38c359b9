"""Authentication with brute-force protection, for the API and the admin login.

DRF's token and basic authentication, plus a per-address count of failed attempts in
the cache: after KARMCHARI_AUTH_FAILURE_LIMIT failures within
KARMCHARI_AUTH_FAILURE_WINDOW seconds, that address gets 429 for every further
attempt with those credentials until the window passes, right or wrong, so guessing
does not pay. The compat routes use the same classes, and the admin's login form the
same count (`admin_login_limited`). With Redis down the count is lost and the check
lets requests through (fail open) rather than lock everyone out.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpRequest, HttpResponse
from rest_framework import authentication, exceptions
from rest_framework.request import Request

logger = logging.getLogger(__name__)

REFUSED = "Too many failed authentication attempts from this address."


def _address(request: HttpRequest | Request) -> str:
    from audit.middleware import client_address

    # Behind the trusted proxy, the client's address, not the proxy's.
    http = request._request if isinstance(request, Request) else request
    return client_address(http) or "unknown"


def _key(address: str) -> str:
    return f"authfail:{address}"


def failures_exceeded(address: str) -> bool:
    """Whether this address has used up its failed attempts for the window."""
    return bool(
        (cache.get(_key(address)) or 0) >= settings.KARMCHARI_AUTH_FAILURE_LIMIT
    )


def failure_record(address: str, *, what: str) -> int:
    """Count one failed attempt from this address; answers the count so far."""
    window = settings.KARMCHARI_AUTH_FAILURE_WINDOW
    cache.add(_key(address), 0, timeout=window)
    try:
        failures = int(cache.incr(_key(address)))
    except ValueError:  # expired between add and incr
        failures = 1
    if failures == settings.KARMCHARI_AUTH_FAILURE_LIMIT:
        logger.warning(
            "%s: %s failed %d times; refusing it for %ss",
            what,
            address,
            failures,
            window,
        )
    return failures


class FailureLimitMixin:
    keyword: str

    def authenticate(self, request: Request) -> Any:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return super().authenticate(request)  # type: ignore[misc]
        address = _address(request)
        if failures_exceeded(address):
            raise exceptions.Throttled(
                wait=settings.KARMCHARI_AUTH_FAILURE_WINDOW, detail=REFUSED
            )
        try:
            return super().authenticate(request)  # type: ignore[misc]
        except exceptions.AuthenticationFailed:
            failure_record(address, what="authentication")
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


LoginView = Callable[..., HttpResponse]


def admin_login_limited(login: LoginView) -> LoginView:
    """The admin's login view under the same per-address count as the API: a refused
    form counts as a failure; once the address is over the limit, every sign-in from
    it answers 429 with the login page and the reason, right password or not."""

    @functools.wraps(login)
    def view(request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if request.method != "POST":
            return login(request, extra_context)
        address = _address(request)
        if failures_exceeded(address):
            # The page as for a GET, its form carrying the reason.
            as_get = copy.copy(request)
            as_get.method = "GET"
            response = login(as_get, extra_context)
            context = getattr(response, "context_data", None)
            if context is not None and "form" in context:
                form = context["form"]  # unbound: add_error() would clean it first
                form.errors[NON_FIELD_ERRORS] = form.error_class(
                    [REFUSED], error_class="nonfield", renderer=form.renderer
                )
            response.status_code = 429
            response["Retry-After"] = str(settings.KARMCHARI_AUTH_FAILURE_WINDOW)
            return response
        response = login(request, extra_context)
        # A sign-in redirects; a refused form comes back (even to a user already
        # signed in, guessing someone else's password).
        if not response.has_header("Location"):
            failure_record(address, what="admin login")
        return response

    return view
