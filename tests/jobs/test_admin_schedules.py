"""The operator console's schedule pages and form (jobs/admin/schedules.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from jobs.models import Job, Schedule
from tests.jobs.conftest import NumQueries, staff

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


def test_it_lists_schedules_with_their_meaning_in_constant_queries(
    admin_client: Client,
    make_schedule: Callable[..., Schedule],
    django_assert_num_queries: NumQueries,
) -> None:
    for _ in range(3):
        make_schedule("*/5 * * * *")
    admin_client.get("/admin/jobs/schedule/")
    # session, user, time zone filter choices, 2 counts, page
    with django_assert_num_queries(6):
        response = admin_client.get("/admin/jobs/schedule/")
    assert response.content.decode().count("every 5 minutes of every hour") == 3


def test_the_schedule_form_says_what_is_wrong(make_job: Callable[..., Job]) -> None:
    from jobs.admin import ScheduleForm

    job = make_job()
    base = {"job": job.pk, "kind": "cron", "timezone": "UTC", "enabled": "on"}
    base |= {"misfire_policy": "run_once", "jitter": "0"}
    form = ScheduleForm(data={**base, "expression": "61 * * * *"})
    assert not form.is_valid()
    assert "minute" in str(form.errors["expression"]).lower()
    assert "61" in str(form.errors["expression"])
    form = ScheduleForm(
        data={**base, "expression": "* * * * *", "timezone": "Mars/Base"}
    )
    assert not form.is_valid()
    assert "Mars/Base" in str(form.errors["timezone"])


def test_the_schedule_page_previews_an_expression_as_it_is_typed(
    admin_client: Client, make_schedule: Callable[..., Schedule]
) -> None:
    schedule = make_schedule("0 12 * * *")
    page = admin_client.get(f"/admin/jobs/schedule/{schedule.pk}/change/").content
    assert b"/admin/jobs/schedule/preview/" in page and b'class="k-fire"' in page
    answer = admin_client.get(
        "/admin/jobs/schedule/preview/",
        {"kind": "cron", "expression": "*/10 * * * *", "timezone": "UTC"},
    ).json()
    assert answer["description"] == "cron: every 10 minutes of every hour (UTC)"
    assert len(answer["fires"]) == 5
    bad = admin_client.get(
        "/admin/jobs/schedule/preview/", {"kind": "cron", "expression": "* * *"}
    ).json()
    assert "expected 5 fields" in bad["error"] and "got 3" in bad["error"]
    assert staff().get("/admin/jobs/schedule/preview/").status_code == 403
