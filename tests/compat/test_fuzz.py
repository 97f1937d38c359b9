"""hypothesis against the three compat APIs: whatever a client sends (bodies of any
shape in JSON, EDN or form encoding, any path segment), the answer is never a 5xx.
A one-off run of 300 examples per test on PostgreSQL found nothing; CI runs a few."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fuzz]

FORM = "application/x-www-form-urlencoded"
EDN = "application/edn"
FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))

# Values the APIs parse (schedules, times, commands) and values that break parsers.
TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "true",
            "R/2099-01-01T00:00:00Z/PT1S",
            "R2/2099-06-04T19:25:16.828696-07:00/PT10S",
            "R-1/2099-01-01T00:00:00Z/PT1S",
            "R/9999-12-31T23:59:59Z/PT1S",
            "R/2099-01-01T00:00:00+99:00/PT1S",
            "P1Y2M",
            "0001-01-01T00:00:00Z",
            "0 0 31 2 *",
            "x" * 300,
            "\x00",
            "\ud800",
            "1e400",
        ]
    ),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)
    ),
    max_leaves=6,
)
KALA_KEYS = st.sampled_from(
    [
        "name",
        "id",
        "command",
        "owner",
        "disabled",
        "parent_jobs",
        "schedule",
        "retries",
        "epsilon",
        "next_run_at",
        "metadata",
        "stats",
        "type",
    ]
)
EDN_KEYS = st.sampled_from(
    [
        ":name",
        ":description",
        ":classpath",
        ":id",
        ":job/name",
        ":steps",
        ":batchlet",
        ":command",
        ":ref",
        ":job/schedule",
        ":schedule/cron-notation",
        ":job/exclusive?",
        ":job/time-limit",
        ":job/retry-limit",
        ":job/properties",
    ]
)
EDN_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(EDN_KEYS, inner, max_size=4)
    ),
    max_leaves=8,
)


def edn_text(value: Any) -> str:
    """EDN for a value built by EDN_VALUE (keys are keywords already)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + " ".join(edn_text(item) for item in value) + "]"
    return "{" + " ".join(f"{k} {edn_text(v)}" for k, v in value.items()) + "}"


def no_5xx(response: Any, what: str) -> None:
    assert response.status_code < 500, (what, response.content[:500])


@FUZZ
@given(body=st.dictionaries(st.one_of(KALA_KEYS, TEXT), VALUE, max_size=8))
def test_it_never_answers_5xx_in_kala(curl: Client, body: dict[str, Any]) -> None:
    data = json.dumps(body)
    created = curl.post("/api/v1/job/", data, content_type=FORM)
    no_5xx(created, data)
    if created.status_code == 201:
        job_id = created.json()["id"]
        for path in ("", "stats/", "start/", "disable/", "enable/"):
            url = f"/api/v1/job/{path}{job_id}/"
            no_5xx(curl.get(url), f"GET {url} of {data}")
            no_5xx(curl.post(url), f"POST {url} of {data}")
        no_5xx(curl.get("/api/v1/stats/"), f"stats with {data}")
        no_5xx(curl.delete(f"/api/v1/job/{job_id}/"), f"DELETE of {data}")


@FUZZ
@given(
    segment=TEXT,
    method=st.sampled_from(["get", "post", "put", "delete"]),
    route=st.sampled_from(
        [
            "/api/v1/job/{}/",
            "/api/v1/job/stats/{}",
            "/api/v1/job/start/{}/",
            "/agent/{}",
            "/{}/jobs",
            "/{}/stats",
            "/app/job/{}/",
            "/app/job/{}/schedule",
            "/app/job/{}/executions",
            "/app/job/name/execution/{}/",
        ]
    ),
)
def test_it_never_answers_5xx_to_any_path_segment(
    curl: Client, segment: str, method: str, route: str
) -> None:
    # As a client sends it: UTF-8, percent-encoded (a lone surrogate as its bytes).
    url = route.format(quote(segment.encode("utf-8", "surrogatepass"), safe=""))
    no_5xx(getattr(curl, method)(url), f"{method} {url}")


@FUZZ
@given(app=EDN_VALUE, job=EDN_VALUE, schedule=EDN_VALUE, as_json=st.booleans())
def test_it_never_answers_5xx_in_jobstreamer(
    curl: Client, app: Any, job: Any, schedule: Any, as_json: bool
) -> None:
    kind, encode = (
        ("application/json", lambda v: json.dumps(v)) if as_json else (EDN, edn_text)
    )
    curl.post(
        "/apps", '{:name "fuzz" :description "d" :classpath []}', content_type=EDN
    )
    shell = '{:job/name "j" :steps [{:id "s" :batchlet {:command "true"}}]}'
    curl.post("/fuzz/jobs", shell, content_type=EDN)
    for method, url, body in [
        ("post", "/apps", encode(app)),
        ("post", "/fuzz/jobs", encode(job)),
        ("put", "/fuzz/job/j", encode(job)),
        ("post", "/fuzz/job/j/schedule", encode(schedule)),
        ("put", "/fuzz/job/j/schedule", encode(schedule)),
        ("post", "/fuzz/job/j/executions", encode(schedule)),
        ("get", "/fuzz/job/j/executions", ""),
        ("put", "/fuzz/job/j/schedule/pause", ""),
        ("get", "/fuzz/stats", ""),
        ("delete", "/fuzz/job/j", ""),
    ]:
        no_5xx(getattr(curl, method)(url, body, content_type=kind), f"{url} {body}")


@FUZZ
@given(
    fields=st.dictionaries(st.sampled_from(["type", "id", "command"]), TEXT),
    url=st.sampled_from(["/registerJob", "/jobState"]),
)
def test_it_never_answers_5xx_in_karmchari(
    curl: Client, fields: dict[str, str], url: str
) -> None:
    form = urlencode(fields, encoding="utf-8", errors="surrogatepass")
    no_5xx(curl.post(url, form, content_type=FORM), f"{url} {form}")
    body = json.dumps(fields)
    no_5xx(curl.post(url, body, content_type="application/json"), f"{url} {body}")
