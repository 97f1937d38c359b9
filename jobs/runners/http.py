"""HTTP jobs: one request; the job succeeds when the status is one it expects.

The request runs in a thread so the supervise loop can still act on a kill; a killed
request's thread is abandoned and ends at its own timeout.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from jobs.runners import Outcome, RunContext, SpecError

logger = logging.getLogger(__name__)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_TIMEOUT = 30.0


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
