"""HTTP jobs: one request; the job succeeds when the status is one it expects.

The request runs in a thread so the supervise loop can still act on a kill; a killed
request's thread is abandoned and ends at its own timeout.

`${NAME}` in the url, a header value or the body (any string of a JSON body) is the
job's secret NAME, filled in as the request is sent; `$${NAME}` is a literal `${NAME}`.
A placeholder naming no secret fails the run rather than send an empty value.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from jobs.runners import Outcome, RunContext, SpecError

logger = logging.getLogger(__name__)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_TIMEOUT = 30.0
# ${NAME}, or $${NAME} (group 1 is then "$"): the escape for a literal ${NAME}.
PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def has_placeholder(text: str) -> bool:
    return any(not match.group(1) for match in PLACEHOLDER.finditer(text))


def spec_map_text(
    spec: dict[str, Any], change: Callable[[str, str], str]
) -> dict[str, Any]:
    """The spec with `change(where, text)` applied to what may hold placeholders: the
    url, each header value and every string of the body (not JSON keys)."""

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, str):
            return change(where, value)
        if isinstance(value, dict):
            return {k: walk(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

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
        changed["body"] = walk(spec["body"], "body")
    return changed


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
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            errors["url"] = "An absolute http:// or https:// URL is required."
        headers = spec.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            errors["headers"] = "Must be an object of name: value strings."
        body = spec.get("body")
        if body is not None and not isinstance(body, str | dict | list):
            errors["body"] = "Must be a string (sent as is) or JSON (sent as JSON)."
        timeout = spec.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or timeout <= 0
        ):
            errors["timeout"] = "Must be a positive number of seconds."
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
        except SpecError as exc:
            return Outcome(status="failed", reason=f"Not sent: {exc}")
        timeout = float(spec.get("timeout") or context.timeout or DEFAULT_TIMEOUT)
        if context.timeout:
            timeout = min(timeout, float(context.timeout))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(_request, spec, timeout)
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
                except requests.Timeout:
                    return Outcome(
                        status="timed_out", reason=f"No answer within {timeout:g}s."
                    )
                except requests.RequestException as exc:
                    return Outcome(status="failed", reason=f"Request failed: {exc}")
        finally:
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


def _request(spec: dict[str, Any], timeout: float) -> tuple[int, str, str]:
    body = spec.get("body")
    started = time.monotonic()
    with requests.request(
        spec["method"],
        spec["url"],
        headers=spec.get("headers"),
        data=body if isinstance(body, str) else None,
        json=body if isinstance(body, dict | list) else None,
        timeout=timeout,
        stream=True,
        allow_redirects=True,
    ) as response:
        limit: int = settings.KARMCHARI_HTTP_BODY_LIMIT
        data = bytearray()
        for chunk in response.iter_content(8192):
            data += chunk
            if len(data) > limit:
                break
            if time.monotonic() - started > timeout:
                raise requests.Timeout(f"Body not read within {timeout:g}s.")
        text = bytes(data[:limit]).decode(response.encoding or "utf-8", "replace")
        if len(data) > limit:
            text += f"\n[... cut at {limit} bytes ...]"
        return response.status_code, response.reason or "", text
