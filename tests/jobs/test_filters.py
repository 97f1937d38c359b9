"""The API's filters (jobs/filters.py): instants are compared in UTC, whatever offset
they are written with."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from rest_framework.test import APIClient

from jobs.models import Execution, Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_runs(make_job: Callable[..., Job]) -> tuple[Execution, Execution]:
    job = make_job()
    early, late = Execution.objects.create(job=job), Execution.objects.create(job=job)
    Execution.objects.filter(pk=early.pk).update(
        created=datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    )
    Execution.objects.filter(pk=late.pk).update(
        created=datetime(2030, 1, 2, 12, 0, tzinfo=UTC)
    )
    return early, late


def ids(api: APIClient, query: str) -> list[int]:
    response = api.get(f"/api/executions/?{query}")
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


@pytest.mark.parametrize(
    "instant",
    [
        "2030-01-02T00:00:00Z",
        "2030-01-02T05:30:00+05:30",
        # Beyond PostgreSQL's ±15:59 (Python and ISO 8601 allow ±23:59): the same
        # instant, not a database error.
        "2030-01-01T00:21:00-23:39",
    ],
)
def test_it_compares_created_in_utc_whatever_the_offset(
    api: APIClient, two_runs: tuple[Execution, Execution], instant: str
) -> None:
    early, late = two_runs
    assert ids(api, f"created_before={quote(instant)}") == [early.pk]
    assert ids(api, f"created_after={quote(instant)}") == [late.pk]


def test_it_refuses_an_instant_beyond_year_9999_in_utc(api: APIClient) -> None:
    response = api.get(
        "/api/executions/?created_after=" + quote("9999-12-31T23:59:59-14:00")
    )
    assert response.status_code == 400
    assert response.json() == {
        "created_after": ["Enter a date and time within years 1 to 9999."]
    }
