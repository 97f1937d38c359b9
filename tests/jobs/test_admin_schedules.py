"""The operator console's schedule pages and form (jobs/admin/schedules.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from jobs import services
from jobs.admin.schedules import ScheduleAdmin
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


def test_it_says_what_is_wrong_in_the_schedule_form(
    make_job: Callable[..., Job],
) -> None:
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


def test_it_previews_an_expression_on_the_schedule_page_as_it_is_typed(
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


def _schedule_data(job: Job, **extra: object) -> dict[str, object]:
    """What the schedule add page posts, plus `extra`."""
    data: dict[str, object] = {
        "job": job.pk,
        "kind": "cron",
        "expression": "* * * * *",
        "timezone": "UTC",
        "misfire_policy": "skip",
        "jitter": "0",
        "enabled": "on",
    }
    data.update(extra)
    return data


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("epsilon", "-1 00:00:00", "Must not be negative."),
        ("epsilon", "400 00:00:00", "Must be at most 366 days."),
        # Would overflow the microseconds column on SQLite: a 500.
        ("epsilon", "999999999 00:00:00", "Must be at most 366 days."),
        ("jitter", "367 00:00:00", "Must be at most 366 days."),
        ("start_at_0", "9999-01-01", "Must be between 1971 and 9998."),
    ],
)
def test_it_refuses_the_delays_and_dates_the_api_refuses(
    field: str,
    value: str,
    why: str,
    admin_client: Client,
    make_job: Callable[..., Job],
) -> None:
    data = _schedule_data(make_job(), **{field: value})
    if field == "start_at_0":  # the admin's date and time boxes
        data["start_at_1"] = "00:00:00"

    response = admin_client.post("/admin/jobs/schedule/add/", data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors[field.removesuffix("_0")] == [why]
    assert not Schedule.objects.exists()


def test_it_refuses_a_schedule_that_can_never_fire(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    """As the API: a new schedule with no fire time after now (a one-shot in the
    past) is a mistake, not a dead row."""
    response = admin_client.post(
        "/admin/jobs/schedule/add/",
        _schedule_data(make_job(), kind="once", expression="2001-01-01T09:00:00"),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["expression"] == ["This schedule has no fire time after now."]
    assert not Schedule.objects.exists()


def test_it_keeps_a_schedule_that_no_longer_fires_editable(
    admin_client: Client, make_schedule: Callable[..., Schedule]
) -> None:
    """Only a new or re-timed schedule must fire: a finished one can still be
    disabled."""
    schedule = make_schedule("2001-01-01T09:00:00", kind="once")
    data = _schedule_data(
        schedule.job, kind="once", expression="2001-01-01T09:00:00", enabled=""
    )

    response = admin_client.post(f"/admin/jobs/schedule/{schedule.pk}/change/", data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule.refresh_from_db()
    assert not schedule.enabled


def test_it_refreshes_the_dashboard_when_schedules_are_deleted_in_bulk(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """The "Delete selected schedules" action goes through services.schedule_delete,
    as a schedule's delete page does: the dashboard forgets its fire times."""
    schedule = make_schedule("17 3 * * *", job=make_job(name="nightly-report"))
    listed = "<code>17 3 * * *</code>"
    assert listed in admin_client.get("/admin/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/jobs/schedule/",
            {
                "action": "delete_selected",
                "_selected_action": [schedule.pk],
                "post": "yes",
            },
        )

    assert response.status_code == 302
    assert not Schedule.objects.exists()
    assert listed not in admin_client.get("/admin/").content.decode()


def test_it_does_not_500_on_a_schedule_deleted_while_its_page_was_saved(
    admin_client: Client,
    make_schedule: Callable[..., Schedule],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schedule = make_schedule("0 9 * * *")
    real_save_form = ScheduleAdmin.save_form

    def deleted_meanwhile(self: ScheduleAdmin, *args: Any, **kwargs: Any) -> Any:
        Schedule.objects.filter(pk=schedule.pk).delete()
        return real_save_form(self, *args, **kwargs)

    monkeypatch.setattr(ScheduleAdmin, "save_form", deleted_meanwhile)
    response = admin_client.post(
        f"/admin/jobs/schedule/{schedule.pk}/change/",
        _schedule_data(schedule.job, expression="0 10 * * *"),
        follow=True,
    )

    assert response.redirect_chain[-1][0] == "/admin/jobs/schedule/"
    assert [str(m) for m in response.context["messages"]] == [
        "Schedule '0 10 * * * (UTC)' was deleted by someone else while you were "
        "editing it. Your changes were not saved."
    ]
    # The page's transaction was rolled back, the simulated delete with it.
    assert Schedule.objects.get().expression == "0 9 * * *"


def test_it_leaves_out_a_schedule_deleted_while_enabling_in_bulk(
    admin_client: Client,
    make_schedule: Callable[..., Schedule],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It was a 500, and the others were left unsaid."""
    doomed = make_schedule("0 9 * * *", enabled=False)
    kept = make_schedule("0 10 * * *", enabled=False)
    real_update = services.schedule_update

    def deleted_meanwhile(*, schedule: Schedule, **fields: Any) -> Schedule:
        Schedule.objects.filter(pk=doomed.pk).delete()
        return real_update(schedule=schedule, **fields)

    monkeypatch.setattr(services, "schedule_update", deleted_meanwhile)
    response = admin_client.post(
        "/admin/jobs/schedule/",
        {"action": "enable", "_selected_action": [doomed.pk, kept.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        f"Schedule #{doomed.pk} was deleted meanwhile. Left out.",
        "Enabled 1 schedule(s).",
    ]
    assert Schedule.objects.get().enabled
