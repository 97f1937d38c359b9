"""HTTP jobs: one request; the job succeeds when the status is one it expects.

The request runs in a thread so the supervise loop can still act on a kill or on the
timeout, which bounds the whole request (a body trickling in, a hanging DNS lookup),
not each read as requests' own timeout does. A request given up on is abandoned: a
body still coming in is cut (urllib3 shuts the socket down), anything else ends at
requests' timeout in its thread.

`${NAME}` in the url, a header value or the body (any string of a JSON body) is the
job's secret NAME, filled in as the request is sent; `$${NAME}` is a literal `${NAME}`.
A placeholder naming no secret fails the run rather than send an empty value.

Redirects are followed unless `expected_status` names a 3xx (which following would
hide); the spec's headers go only to the spec's host: a redirect elsewhere drops them,
as requests does with Authorization, since they may carry secrets.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from jobs.runners import Outcome, RunContext, SpecError

logger = logging.getLogger(__name__)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_TIMEOUT = 30.0
# As a job's own timeout; far more overflows what a socket or a thread can wait.
MAX_TIMEOUT = 2**31 - 1
# A JSON body needs a handful of levels; deeper ones would only strain what recurses
# over the stored spec (rendering it, the database's JSON functions).
MAX_BODY_DEPTH = 64
# ${NAME}, or $${NAME} (group 1 is then "$"): the escape for a literal ${NAME}.
PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
# RFC 7230 3.2: a name is a token; a value is visible characters (obs-text too, as
# http.client sends values in ISO-8859-1) with spaces or tabs between them: no line
# breaks or other controls, nothing beyond U+00FF, no whitespace around it.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HEADER_VALUE = re.compile(
    r"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
)


def has_placeholder(text: str) -> bool:
    return any(not match.group(1) for match in PLACEHOLDER.finditer(text))


def spec_map_text(
    spec: dict[str, Any], change: Callable[[str, str], str]
) -> dict[str, Any]:
    """The spec with `change(where, text)` applied to what may hold placeholders: the
    url, each header value and every string of the body (not JSON keys)."""
    changed = dict(spec)
    if isinstance(spec.get("url"), str):
        changed["url"] = change("url", spec["url"])
    headers = spec.get("headers")
    if isinstance(headers, dict):
        changed["headers"] = {
            name: change(f"headers.{name}", value) if isinstance(value, str) else value
            for name, value in headers.items()
        }
    if spec.get("body") is not None:
        changed["body"] = _map_strings(spec["body"], "body", change)
    return changed


def _map_strings(value: Any, where: str, change: Callable[[str, str], str]) -> Any:
    """JSON `value` rebuilt with `change(where, text)` on each string, in document
    order. Without recursion: a stored body may nest deeper than the recursion limit
    (older jobs), and the job list reads every spec."""
    top: list[Any] = [None]
    # (item, where, the new container that gets it, its key or index there)
    stack: list[tuple[Any, str, Any, Any]] = [(value, where, top, 0)]
    children: list[tuple[Any, str, Any, Any]]
    while stack:
        item, where, parent, key = stack.pop()
        if isinstance(item, dict):
            parent[key] = mapping = dict.fromkeys(item)
            children = [(v, f"{where}.{k}", mapping, k) for k, v in item.items()]
        elif isinstance(item, list):
            parent[key] = array = [None] * len(item)
            children = [(v, f"{where}[{i}]", array, i) for i, v in enumerate(item)]
        else:
            parent[key] = change(where, item) if isinstance(item, str) else item
            continue
        stack.extend(reversed(children))
    return top[0]


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON `value` nests more than `limit` arrays and objects."""
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            if level == limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return False


def fill_text(
    text: str, secrets: Mapping[str, str], *, where: str = "", strict: bool = True
) -> str:
    """`text` with each ${NAME} replaced by the secret NAME and each $${ unescaped.
    SpecError names a placeholder with no secret (strict), else it stays as it is."""

    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        name = match.group(2)
        if name in secrets:
            return secrets[name]
        if strict:
            raise SpecError({where: f"${{{name}}} names no secret of this job."})
        return match.group(0)

    return PLACEHOLDER.sub(one, text)


def fill_placeholders(
    spec: dict[str, Any], secrets: Mapping[str, str], *, strict: bool = True
) -> dict[str, Any]:
    """The spec as it is sent: fill_text on everything that may hold placeholders."""
    return spec_map_text(
        spec,
        lambda where, text: fill_text(text, secrets, where=where, strict=strict),
    )


def placeholder_names(spec: dict[str, Any]) -> set[str]:
    """The secret names the spec's placeholders ask for."""
    names: set[str] = set()

    def collect(where: str, text: str) -> str:
        names.update(m.group(2) for m in PLACEHOLDER.finditer(text) if not m.group(1))
        return text

    spec_map_text(spec, collect)
    return names


def escape_placeholders(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with every would-be placeholder escaped, so it sends what it says
    (migration 0013: specs written before placeholders existed)."""
    return spec_map_text(
        spec, lambda where, text: PLACEHOLDER.sub(lambda m: "$" + m.group(0), text)
    )


def _url_error(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        # A placeholder may stand for the port: the request checks it once filled.
        if parts.hostname and not has_placeholder(parts.netloc):
            parts.port  # noqa: B018 (raises ValueError when out of 0-65535)
    except ValueError as exc:
        return f"Not a valid URL ({exc})."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "An absolute http:// or https:// URL is required."
    return None


def _header_error(headers: Mapping[str, str]) -> str | None:
    """Why the first header that HTTP cannot carry cannot be sent, or None. Says
    nothing of the value: once filled in, it may be a secret."""
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name):
            return (
                f"{name!r} is not a header name: letters, digits and "
                "!#$%&'*+-.^_`|~ only."
            )
        if not HEADER_VALUE.fullmatch(value):
            return (
                f"The value of {name} cannot be sent: it must be one line of "
                "ISO-8859-1 text (no character beyond U+00FF, no control "
                "characters) without leading or trailing whitespace."
            )
    return None


class HttpRunner:
    def validate(self, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise SpecError({"spec": "Must be an object with a 'url'."})
        errors: dict[str, str] = {}
        allowed = {"method", "url", "headers", "body", "timeout", "expected_status"}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            errors["spec"] = f"Unknown keys for an http job: {', '.join(unknown)}."
        method = spec.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            errors["method"] = f"Use one of {', '.join(METHODS)}."
        url = spec.get("url")
        if not isinstance(url, str):
            errors["url"] = "An absolute http:// or https:// URL is required."
        elif why := _url_error(url):
            errors["url"] = why
        headers = spec.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            errors["headers"] = "Must be an object of name: value strings."
        elif why := _header_error(headers):
            errors["headers"] = why
        body = spec.get("body")
        if body is not None and not isinstance(body, str | dict | list):
            errors["body"] = "Must be a string (sent as is) or JSON (sent as JSON)."
        elif _deeper_than(body, MAX_BODY_DEPTH):
            errors["body"] = f"Nested deeper than {MAX_BODY_DEPTH} levels."
        timeout = spec.get("timeout")
        # Written so that NaN is refused too.
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_TIMEOUT
        ):
            errors["timeout"] = (
                f"Must be a positive number of seconds, at most {MAX_TIMEOUT}."
            )
        expected = spec.get("expected_status", [])
        if not isinstance(expected, list) or not all(
            isinstance(code, int) and 100 <= code <= 599 for code in expected
        ):
            errors["expected_status"] = "Must be a list of HTTP status codes."
        if errors:
            raise SpecError(errors)
        cleaned: dict[str, Any] = {"method": method.upper(), "url": url}
        if headers:
            cleaned["headers"] = headers
        if body is not None:
            cleaned["body"] = body
        if timeout is not None:
            cleaned["timeout"] = timeout
        if expected:
            cleaned["expected_status"] = expected
        return cleaned

    def run(self, spec: dict[str, Any], context: RunContext) -> Outcome:
        try:
            spec = fill_placeholders(spec, context.secrets)
            if why := _header_error(spec.get("headers", {})):
                raise SpecError({"headers": why})
        except SpecError as exc:
            return Outcome(status="failed", reason=f"Not sent: {exc}")
        timeout = float(spec.get("timeout") or context.timeout or DEFAULT_TIMEOUT)
        # MAX_TIMEOUT too for a spec stored before it was enforced.
        timeout = min(timeout, float(context.timeout or MAX_TIMEOUT), MAX_TIMEOUT)
        deadline = time.monotonic() + timeout
        opened: list[requests.Response] = []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(_request, spec, timeout, opened)
        try:
            while True:
                try:
                    response = future.result(timeout=0.1)
                    break
                except concurrent.futures.TimeoutError:
                    if context.poll() == "kill":
                        return Outcome(
                            status="killed", reason="Killed on request (abandoned)."
                        )
                    if time.monotonic() >= deadline:
                        return Outcome(
                            status="timed_out",
                            reason=f"No complete answer within {timeout:g}s.",
                        )
                except requests.Timeout:
                    return Outcome(
                        status="timed_out", reason=f"No answer within {timeout:g}s."
                    )
                except requests.RequestException as exc:
                    return Outcome(status="failed", reason=f"Request failed: {exc}")
        finally:
            if not future.done():
                _abandon(opened)
            pool.shutdown(wait=False, cancel_futures=True)
        status, reason, body = response
        output = f"HTTP {status} {reason}\n\n{body}"
        context.on_output(output.encode())
        expected = spec.get("expected_status")
        ok = status in expected if expected else 200 <= status < 300
        if ok:
            return Outcome(status="succeeded", exit_code=status, output=output)
        wanted = ", ".join(map(str, expected)) if expected else "2xx"
        return Outcome(
            status="failed",
            exit_code=status,
            output=output,
            reason=f"HTTP status {status}, expected {wanted}.",
        )


class CrossOriginBodyRedirect(requests.RequestException):
    """A 307/308 redirect to another origin would send the body there again."""


class _Session(requests.Session):
    """A session that sends the spec's headers and body to the spec's origin only:
    requests drops Authorization on a redirect to another host (or scheme or port),
    and this drops the rest of them likewise, since any may carry a secret. A 307 or
    308 redirect would send the body there too (secrets are filled into it): that
    is refused, not followed."""

    def __init__(self, spec_headers: Mapping[str, str]) -> None:
        super().__init__()
        self.spec_headers = spec_headers

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        old_url, new_url = response.request.url, prepared_request.url
        # types-requests leaves these two untyped.
        strip = self.should_strip_auth(old_url, new_url)  # type: ignore[no-untyped-call]
        if strip and prepared_request.body is not None:
            raise CrossOriginBodyRedirect(
                f"not following a {response.status_code} redirect to another origin "
                f"({new_url}): it would send the request body there"
            )
        if strip:
            for name in self.spec_headers:
                prepared_request.headers.pop(name, None)
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]


def _request(
    spec: dict[str, Any], timeout: float, opened: list[requests.Response]
) -> tuple[int, str, str]:
    body = spec.get("body")
    headers = spec.get("headers", {})
    expected = spec.get("expected_status", [])
    with (
        _Session(headers) as session,
        session.request(
            spec["method"],
            spec["url"],
            headers=headers,
            data=body if isinstance(body, str) else None,
            json=body if isinstance(body, dict | list) else None,
            timeout=timeout,
            stream=True,
            allow_redirects=not any(300 <= code < 400 for code in expected),
        ) as response,
    ):
        opened.append(response)
        limit: int = settings.KARMCHARI_HTTP_BODY_LIMIT
        data = bytearray()
        for chunk in response.iter_content(8192):
            data += chunk
            if len(data) > limit:
                break
        text = _decode(bytes(data[:limit]), response.headers.get("Content-Type", ""))
        if len(data) > limit:
            text += f"\n[... cut at {limit} bytes ...]"
        return response.status_code, response.reason or "", text


def _abandon(opened: list[requests.Response]) -> None:
    """Cut the body a given-up request is still reading, so its thread ends now
    rather than when an endless stream does."""
    for response in opened:
        # ended or released meanwhile: nothing to cut
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            response.raw.shutdown()


def _decode(data: bytes, content_type: str) -> str:
    """The body as text: UTF-8 unless the Content-Type names another charset.
    (requests would read any text/* without one as ISO-8859-1, HTTP/1.1's old
    default.)"""
    message = Message()
    message["Content-Type"] = content_type
    try:
        return data.decode(message.get_content_charset() or "utf-8", "replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", "replace")
