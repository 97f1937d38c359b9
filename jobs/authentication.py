"""Authentication with brute-force protection, for the API and the admin login.

DRF's token and basic authentication, plus counts of failed attempts in the cache,
kept per client address and per identity tried from it (a username, or one token):

- after KARMCHARI_AUTH_FAILURE_LIMIT failures for one identity from an address within
  KARMCHARI_AUTH_FAILURE_WINDOW seconds, that identity gets 429 from that address,
  right password or not, until the window passes, so guessing does not pay;
- after KARMCHARI_AUTH_FAILURE_ADDRESS_LIMIT failures from an address for any
  identities, the whole address does (guessing across many usernames or tokens).

So a script with a stale password behind an office's NAT locks out its own user, not
the office. The compat routes use the same classes, and the admin's login form the
same counts (`admin_login_limited`). With Redis down the counts are lost and the
check lets requests through (fail open) rather than lock everyone out.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import hashlib
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
REFUSED_IDENTITY = (
    "Too many failed authentication attempts for these credentials from this address."
)


def _address(request: HttpRequest | Request) -> str:
    from audit.middleware import client_address

    # Behind the trusted proxy, the client's address, not the proxy's.
    http = request._request if isinstance(request, Request) else request
    return client_address(http) or "unknown"


def user_identity(username: str) -> str:
    """What a password attempt is counted against: the username, case-folded (so
    varying its case does not buy fresh attempts)."""
    return f"user:{username.casefold()}"


def _keys(address: str, identity: str) -> tuple[str, str]:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return f"authfail:{address}", f"authfail:{address}:{digest}"


def failures_exceeded(address: str, identity: str) -> str | None:
    """Why attempts for `identity` from `address` are refused for now, or None."""
    address_key, identity_key = _keys(address, identity)
    counts = cache.get_many([address_key, identity_key])
    if counts.get(address_key, 0) >= settings.KARMCHARI_AUTH_FAILURE_ADDRESS_LIMIT:
        return REFUSED
    if counts.get(identity_key, 0) >= settings.KARMCHARI_AUTH_FAILURE_LIMIT:
        return REFUSED_IDENTITY
    return None


def _count(key: str, window: int) -> int:
    cache.add(key, 0, timeout=window)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        return 1
    return int(count or 0)  # None: Redis is down (its errors are ignored)


def failure_record(address: str, identity: str, *, what: str) -> None:
    """Count one failed attempt for `identity` from `address`."""
    window = settings.KARMCHARI_AUTH_FAILURE_WINDOW
    address_key, identity_key = _keys(address, identity)
    if _count(identity_key, window) == settings.KARMCHARI_AUTH_FAILURE_LIMIT:
        logger.warning(
            "%s: %s failed %d times from %s; refusing it there for %ss",
            what,
            identity.split(":", 1)[0],
            settings.KARMCHARI_AUTH_FAILURE_LIMIT,
            address,
            window,
        )
    if _count(address_key, window) == settings.KARMCHARI_AUTH_FAILURE_ADDRESS_LIMIT:
        logger.warning(
            "%s: %s failed %d times; refusing the address for %ss",
            what,
            address,
            settings.KARMCHARI_AUTH_FAILURE_ADDRESS_LIMIT,
            window,
        )


class FailureLimitMixin:
    keyword: str

    def identity(self, credentials: bytes) -> str:
        """What this attempt is counted against, from the header's credentials."""
        raise NotImplementedError

    def authenticate(self, request: Request) -> Any:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return super().authenticate(request)  # type: ignore[misc]
        address = _address(request)
        identity = self.identity(header[1] if len(header) > 1 else b"")
        if refused := failures_exceeded(address, identity):
            raise exceptions.Throttled(
                wait=settings.KARMCHARI_AUTH_FAILURE_WINDOW, detail=refused
            )
        try:
            return super().authenticate(request)  # type: ignore[misc]
        except exceptions.AuthenticationFailed:
            failure_record(address, identity, what="authentication")
            raise


class TokenAuthentication(FailureLimitMixin, authentication.TokenAuthentication):
    """`Authorization: Token <key>`, checked against the hashed API tokens."""

    keyword = "Token"

    def identity(self, credentials: bytes) -> str:
        # Counted per token: a client holding a revoked one locks out only itself.
        return "token:" + hashlib.sha256(credentials).hexdigest()

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        from jobs.tokens import token_authenticate

        token = token_authenticate(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return token.user, token


class BasicAuthentication(FailureLimitMixin, authentication.BasicAuthentication):
    keyword = "Basic"

    def identity(self, credentials: bytes) -> str:
        try:
            decoded = base64.b64decode(credentials, validate=True)
            username = decoded.decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return "malformed"  # DRF refuses it; such attempts share one count
        return user_identity(username)


def password_login_limited(
    request: Request, username: str, check: Callable[[], Any]
) -> Any:
    """`check()` (a username and password check that raises DRF's ValidationError
    when they are wrong) under the same counts as the API and the admin login:
    refused with 429 while that username or the address is over the limit, right
    password or not, and a failure counted against it."""
    address = _address(request)
    identity = user_identity(username)
    if refused := failures_exceeded(address, identity):
        raise exceptions.Throttled(
            wait=settings.KARMCHARI_AUTH_FAILURE_WINDOW, detail=refused
        )
    try:
        return check()
    except exceptions.ValidationError:
        failure_record(address, identity, what="token request")
        raise


LoginView = Callable[..., HttpResponse]


def admin_login_limited(login: LoginView) -> LoginView:
    """The admin's login view under the same counts as the API: a refused form counts
    as a failure of its username; once that username (or the whole address) is over
    the limit, every sign-in for it answers 429 with the login page and the reason,
    right password or not."""

    @functools.wraps(login)
    def view(request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if request.method != "POST":
            return login(request, extra_context)
        address = _address(request)
        identity = user_identity(str(request.POST.get("username", "")))
        if refused := failures_exceeded(address, identity):
            # The page as for a GET, its form carrying the reason.
            as_get = copy.copy(request)
            as_get.method = "GET"
            response = login(as_get, extra_context)
            context = getattr(response, "context_data", None)
            if context is not None and "form" in context:
                form = context["form"]  # unbound: add_error() would clean it first
                form.errors[NON_FIELD_ERRORS] = form.error_class(
                    [refused], error_class="nonfield", renderer=form.renderer
                )
            response.status_code = 429
            response["Retry-After"] = str(settings.KARMCHARI_AUTH_FAILURE_WINDOW)
            return response
        response = login(request, extra_context)
        # A sign-in redirects; a refused form comes back (even to a user already
        # signed in, guessing someone else's password).
        if not response.has_header("Location"):
            failure_record(address, identity, what="admin login")
        return response

    return view
