from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from jobs import services
from jobs.models import App, Execution, Job, Schedule
from tests.tokens import make_token

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def sent() -> mock.MagicMock:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/apps/"),
        ("post", "/api/apps/"),
        ("get", "/api/jobs/"),
        ("post", "/api/jobs/"),
        ("post", "/api/jobs/1/run/"),
        ("delete", "/api/jobs/1/"),
        ("get", "/api/executions/"),
        ("get", "/api/schema/"),
    ],
)
def test_it_refuses_anonymous_requests_with_401(
    anon: APIClient, method: str, path: str
) -> None:
    response = getattr(anon, method)(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_it_issues_a_token_for_a_password(anon: APIClient, admin_user: User) -> None:
    response = anon.post(
        "/api/token/", {"username": "admin", "password": "password"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon.get("/api/jobs/").status_code == 200


def test_it_refuses_a_wrong_password(anon: APIClient, admin_user: User) -> None:
    response = anon.post("/api/token/", {"username": "admin", "password": "nope"})
    assert response.status_code == 400


def test_it_accepts_basic_auth(anon: APIClient, admin_user: User) -> None:
    anon.credentials(HTTP_AUTHORIZATION="Basic YWRtaW46cGFzc3dvcmQ=")  # admin:password
    assert anon.get("/api/apps/").status_code == 200


def test_it_refuses_writes_without_model_permission(anon: APIClient) -> None:
    user = User.objects.create_user("viewer", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    token = make_token(user)
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert anon.get("/api/jobs/").status_code == 200
    assert anon.post("/api/jobs/", {}).status_code == 403
    assert anon.get("/api/apps/").status_code == 403


def test_it_creates_an_app_and_a_job(api: APIClient) -> None:
    assert api.post("/api/apps/", {"name": "billing"}).status_code == 201
    response = api.post(
        "/api/jobs/",
        {
            "app": "billing",
            "name": "invoices",
            "spec": {"command": "echo hi", "env": {"MODE": "fast"}},
            "timeout": 30,
            "tags": ["nightly"],
        },
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["app"] == "billing"
    assert body["kind"] == "shell"
    assert body["spec"] == {"command": "echo hi", "env": {"MODE": "fast"}}
    assert body["stats"]["success_count"] == 0
    assert Job.objects.get(pk=body["id"]).timeout == 30


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"name": "x", "spec": {"command": "ls"}}, "app", "required"),
        ({"app": "nope", "name": "x", "spec": {"command": "ls"}}, "app", "not exist"),
        ({"app": "default", "name": "x", "spec": {}}, "spec", "non-empty command"),
        ({"app": "default", "name": "x bad", "spec": {"command": "ls"}}, "name", ""),
        (
            {"app": "default", "name": "x", "kind": "http", "spec": {}},
            "spec",
            "An absolute http",
        ),
        (
            {"app": "default", "name": "x", "kind": "cobol", "spec": {}},
            "kind",
            "not a valid choice",
        ),
        (
            {"app": "default", "name": "x", "spec": {"command": "ls"}, "timeout": 0},
            "timeout",
            "greater than or equal to 1",
        ),
    ],
)
def test_it_answers_bad_job_input_with_field_errors(
    api: APIClient,
    make_app: Callable[..., App],
    payload: dict,
    field: str,
    message: str,
) -> None:
    make_app("default")
    response = api.post("/api/jobs/", payload)
    assert response.status_code == 400
    assert field in response.json()
    assert message in str(response.json()[field])
    assert not Job.objects.exists()


def test_it_refuses_a_duplicate_job_name(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job(name="dup")
    response = api.post(
        "/api/jobs/", {"app": job.app.name, "name": "dup", "spec": {"command": "ls"}}
    )
    assert response.status_code == 400
    assert Job.objects.count() == 1


def test_it_refuses_a_max_concurrent_below_one_on_update(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    # The database's check constraint answered 500 (found by the API fuzz).
    job = make_job(max_concurrent=2)
    response = api.patch(f"/api/jobs/{job.pk}/", {"max_concurrent": 0})
    assert response.status_code == 400
    assert "greater than or equal to 1" in str(response.json()["max_concurrent"])
    job.refresh_from_db()
    assert job.max_concurrent == 2


def test_it_refuses_a_reserved_app_name(api: APIClient) -> None:
    response = api.post("/api/apps/", {"name": "admin"})
    assert response.status_code == 400
    assert "reserved" in str(response.json())


def test_it_answers_404_for_unknown_ids(api: APIClient) -> None:
    assert api.get("/api/jobs/999/").status_code == 404
    assert api.post("/api/jobs/999/run/").status_code == 404
    assert api.get("/api/executions/999/").status_code == 404
    assert api.get("/api/apps/nope/").status_code == 404


def test_it_updates_a_job_partially(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    response = api.patch(f"/api/jobs/{job.pk}/", {"spec": {"command": "date"}})
    assert response.status_code == 200
    job.refresh_from_db()
    assert job.spec == {"command": "date"}
    response = api.patch(f"/api/jobs/{job.pk}/", {"spec": {"cwd": "rel"}})
    assert response.status_code == 400
    job.refresh_from_db()
    assert job.spec == {"command": "date"}


def test_it_runs_a_job_and_answers_202(
    api: APIClient,
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/jobs/{job.pk}/run/", {"parameters": {"n": 1}})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["parameters"] == {"n": 1}
    sent.assert_called_once_with(
        (body["id"],), queue="celery", countdown=None, producer=mock.ANY
    )


def test_it_answers_409_when_running_a_disabled_job(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job(enabled=False)
    response = api.post(f"/api/jobs/{job.pk}/run/")
    assert response.status_code == 409
    assert "disabled" in response.json()["detail"]


def test_it_enables_and_disables(api: APIClient, make_job: Callable[..., Job]) -> None:
    job = make_job()
    assert api.post(f"/api/jobs/{job.pk}/disable/").json()["enabled"] is False
    assert api.post(f"/api/jobs/{job.pk}/enable/").json()["enabled"] is True


def test_it_answers_409_when_deleting_an_app_with_jobs(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    response = api.delete(f"/api/apps/{job.app.name}/")
    assert response.status_code == 409
    assert job.name in response.json()["detail"]
    assert App.objects.filter(pk=job.app_id).exists()


def test_it_filters_executions_by_job_and_status(
    api: APIClient,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    one, two = make_job(), make_job()
    make_execution(one, status="succeeded")
    failed = make_execution(one, status="failed")
    make_execution(two, status="failed")
    response = api.get(f"/api/executions/?job={one.pk}&status=failed")
    assert [row["id"] for row in response.json()["results"]] == [failed.pk]
    assert "output" not in response.json()["results"][0]


def test_it_shows_output_on_the_execution_detail(
    api: APIClient, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(output="hello\n", error="warn\n")
    body = api.get(f"/api/executions/{execution.pk}/").json()
    assert (body["output"], body["error"]) == ("hello\n", "warn\n")


def test_it_refuses_a_bad_status_filter(api: APIClient) -> None:
    response = api.get("/api/executions/?status=exploded")
    assert response.status_code == 400
    assert "status" in response.json()


def test_it_lists_jobs_in_constant_queries(
    api: APIClient,
    make_job: Callable[..., Job],
    django_assert_num_queries: Callable,
) -> None:
    for _ in range(5):
        make_job()
    # auth token + count + page + schedules + parents + children + secrets + online
    # queues
    api.get("/api/jobs/")  # first use of the token records its last use
    with django_assert_num_queries(8):
        assert len(api.get("/api/jobs/").json()["results"]) == 5


def test_it_warns_when_no_live_agent_consumes_the_jobs_queue(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    from agents.models import Agent

    job = make_job(queue="reports")
    [warning] = api.get(f"/api/jobs/{job.pk}/").json()["warnings"]
    assert "No live agent consumes queue 'reports'" in warning
    Agent.objects.create(name="w1@host", queues=["reports"], status="online")
    assert api.get(f"/api/jobs/{job.pk}/").json()["warnings"] == []


def test_it_lists_executions_in_constant_queries(
    api: APIClient,
    make_execution: Callable[..., Execution],
    django_assert_num_queries: Callable,
) -> None:
    for _ in range(5):
        make_execution()
    # auth token + page (cursor pagination does no count)
    api.get("/api/executions/")  # first use of the token records its last use
    with django_assert_num_queries(2):
        assert len(api.get("/api/executions/").json()["results"]) == 5


def test_it_serves_a_valid_openapi_schema(api: APIClient) -> None:
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    response = api.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    assert "/api/jobs/{id}/run/" in schema["paths"]


def test_it_serves_the_interactive_docs_without_a_cdn(api: APIClient) -> None:
    response = api.get("/api/docs/")
    assert response.status_code == 200
    assert b"cdn." not in response.content


# --- Schedules -----------------------------------------------------------------------


def test_it_creates_a_schedule_with_its_next_run(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    response = api.post(
        "/api/schedules/",
        {
            "job": job.pk,
            "kind": "cron",
            "expression": "0 9 * * MON-FRI",
            "timezone": "Europe/Berlin",
        },
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["next_run_at"] is not None
    assert body["description"]
    nested = api.get(f"/api/jobs/{job.pk}/").json()["schedules"]
    assert [s["id"] for s in nested] == [body["id"]]


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"expression": "61 * * * *"}, "expression", "minute"),
        ({"expression": "0 0 12 ? * 9"}, "expression", "day-of-week"),
        ({"expression": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "Mars"),
        (
            {"kind": "interval", "expression": "R5/2026-01-01T00:00:00Z/PX"},
            "expression",
            "PX",
        ),
        ({"kind": "once", "expression": "tomorrow"}, "expression", "tomorrow"),
        ({"kind": "weekly", "expression": "x"}, "kind", "not a valid choice"),
        (
            {
                "expression": "* * * * *",
                "start_at": "2026-02-01T00:00:00Z",
                "end_at": "2026-01-01T00:00:00Z",
            },
            "end_at",
            "after start_at",
        ),
    ],
)
def test_it_refuses_bad_schedules_saying_what_is_wrong(
    api: APIClient,
    make_job: Callable[..., Job],
    payload: dict,
    field: str,
    message: str,
) -> None:
    response = api.post("/api/schedules/", {"job": make_job().pk, **payload})
    assert response.status_code == 400
    assert message in str(response.json()[field])
    assert not Schedule.objects.exists()


def test_it_previews_a_saved_schedule_with_offsets(
    api: APIClient, make_schedule: Callable[..., Schedule]
) -> None:
    schedule = make_schedule("0 9 * * *", timezone="Europe/Berlin")
    response = api.get(
        f"/api/schedules/{schedule.pk}/preview/?n=3&after=2026-03-27T12:00:00Z"
    )
    assert response.status_code == 200
    # Across the spring-forward night: 09:00 local stays 09:00, the offset changes.
    assert response.json()["fire_times"] == [
        "2026-03-28T09:00:00+01:00",
        "2026-03-29T09:00:00+02:00",
        "2026-03-30T09:00:00+02:00",
    ]


def test_it_previews_an_unsaved_expression(api: APIClient) -> None:
    response = api.get(
        "/api/schedules/preview/",
        {
            "kind": "cron",
            "expression": "0 0 12 ? * 2",
            "timezone": "UTC",
            "after": "2026-11-23T00:00:00Z",
            "n": 2,
        },
    )
    assert response.status_code == 200, response.json()
    assert response.json()["fire_times"] == [
        "2026-11-23T12:00:00+00:00",
        "2026-11-30T12:00:00+00:00",
    ]


def test_it_refuses_a_bad_preview(api: APIClient) -> None:
    response = api.get("/api/schedules/preview/?expression=banana&n=0")
    assert response.status_code == 400
    assert "n" in response.json()
    response = api.get("/api/schedules/preview/?expression=banana")
    assert response.status_code == 400
    assert "expression" in response.json()


def test_it_recomputes_next_run_when_the_expression_changes(
    api: APIClient, make_schedule: Callable[..., Schedule]
) -> None:
    # At 06:00, both 09:00 and 10:00 are still to come today (between 09:00 and
    # 10:00 the one would be tomorrow's and the other today's).
    with time_machine.travel(datetime(2026, 3, 1, 6, 0, tzinfo=UTC), tick=False):
        schedule = make_schedule("0 9 * * *")
        before = schedule.next_run_at
        response = api.patch(
            f"/api/schedules/{schedule.pk}/", {"expression": "0 10 * * *"}
        )
    assert response.status_code == 200
    schedule.refresh_from_db()
    assert schedule.next_run_at == before + timedelta(hours=1)


def test_it_lists_schedules_in_constant_queries(
    api: APIClient,
    make_schedule: Callable[..., Schedule],
    django_assert_num_queries: Callable,
) -> None:
    for _ in range(5):
        make_schedule()
    api.get("/api/schedules/")  # first use of the token records its last use
    with django_assert_num_queries(3):
        assert len(api.get("/api/schedules/").json()["results"]) == 5


def test_it_downloads_the_output_as_a_text_file(
    api: APIClient, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(output="hello\n", error="oops\n", status="failed")
    response = api.get(
        f"/api/executions/{execution.pk}/output/", HTTP_ACCEPT="text/plain"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="{execution.job.name}-{execution.pk}.log"'
    )
    assert response.content == b"hello\n\n--- stderr ---\noops\n"
    missing = execution.pk + 1  # never a fixed id: ids grow across a PostgreSQL run
    assert api.get(f"/api/executions/{missing}/output/").status_code == 404


def test_it_deletes_a_parent_with_the_children_left_without_one(
    api: APIClient,
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    parent, orphan, shared, other = (
        make_job(name=name) for name in ("parent", "orphan", "shared", "other")
    )
    orphan.parents.set([parent])
    shared.parents.set([parent, other])
    running = Execution.objects.create(
        job=orphan, status=Execution.Status.RUNNING, worker="w1"
    )
    with (
        mock.patch("jobs.control.publish") as publish,
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert api.delete(f"/api/jobs/{parent.pk}/").status_code == 204
    assert set(Job.objects.values_list("name", flat=True)) == {"shared", "other"}
    # The orphan's run was told to stop (its row went with its job).
    told = [call.kwargs for call in publish.call_args_list]
    assert {"execution_id": running.pk, "desired_state": "kill", "worker": "w1"} in told


@pytest.mark.parametrize(
    "url", ["/api/jobs/?limit=", "/api/apps/?limit=", "/api/executions/?page_size="]
)
def test_it_caps_an_absurd_page_size(
    api: APIClient, make_execution: Callable[..., Execution], url: str
) -> None:
    make_execution()
    response = api.get(url + "9223372036854775808")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 1


def test_it_makes_a_new_schedule_cron_unless_told_and_refuses_one_that_cannot_fire(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    made = api.post("/api/schedules/", {"job": job.pk, "expression": "0 * * * *"})
    assert (made.status_code, made.json()["kind"]) == (201, "cron")
    far = api.post(
        "/api/schedules/",
        {"job": job.pk, "kind": "cron", "expression": "0 0 12 1 1 ? 2080"},
    )
    assert far.json()["next_run_at"] == "2080-01-01T12:00:00Z"  # past 50 years
    for body, field in (
        ({"kind": "once", "expression": "2020-01-01T00:00:00Z"}, "expression"),
        ({"kind": "interval", "expression": "R2/2020-01-01T00:00:00Z/PT1H"}, None),
        ({"expression": "* * * * *", "end_at": "2020-01-01T00:00:00Z"}, "end_at"),
        ({"expression": "* * * * *", "jitter": "999999999 00:00:00"}, "jitter"),
        ({"expression": "* * * * *", "epsilon": "400 00:00:00"}, "epsilon"),
    ):
        refused = api.post("/api/schedules/", {"job": job.pk, **body}, format="json")
        assert refused.status_code == 400, (body, refused.json())
        assert field is None or field in refused.json()


def test_it_previews_what_a_saved_schedule_will_fire(
    api: APIClient, make_schedule: Callable[..., Schedule]
) -> None:
    from django.utils import timezone

    start = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(
        hours=5
    )
    schedule = make_schedule(
        "0 * * * *",
        start_at=start,
        end_at=start + timedelta(hours=7),
        repetitions_left=2,
    )
    times = api.get(f"/api/schedules/{schedule.pk}/preview/?n=5").json()["fire_times"]
    assert times == [start.isoformat(), (start + timedelta(hours=1)).isoformat()]
    extreme = api.get(
        "/api/schedules/preview/?expression=*+*+*+*+*&timezone=Asia/Tokyo"
        "&after=9999-12-31T23:00:00Z"
    )
    assert extreme.status_code == 400
    assert "after" in extreme.json()


@pytest.mark.parametrize("disabled", ["schedule", "job"])
def test_it_previews_a_disabled_schedule_as_firing_nothing(
    api: APIClient, make_schedule: Callable[..., Schedule], disabled: str
) -> None:
    """As the admin shows ("Disabled."): it will fire nothing until enabled."""
    schedule = make_schedule("0 * * * *")
    target = schedule if disabled == "schedule" else schedule.job
    type(target).objects.filter(pk=target.pk).update(enabled=False)
    body = api.get(f"/api/schedules/{schedule.pk}/preview/").json()
    assert body["fire_times"] == []
    assert body["description"]


# --- Bad input: an answer in 4xx, never a 500 ---------------------------------------


def _cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("position", ["abc", "1.5"])
def test_it_answers_a_cursor_with_a_non_numeric_position_without_a_500(
    api: APIClient, make_execution: Callable[..., Execution], position: str
) -> None:
    # A hand-edited or corrupted cursor (p= is the last id seen): DRF puts it in
    # `id__lt=<position>` unchecked, and Django's int() of it raises ValueError.
    make_execution()
    response = api.get("/api/executions/", {"cursor": _cursor(f"p={position}")})
    assert response.status_code in (400, 404), response.content[:200]
    assert "cursor" in response.json()["detail"].lower()


def test_it_refuses_a_non_finite_number_in_run_parameters(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    # 1e400 is valid JSON; Python reads it as float("inf"), which neither SQLite's
    # JSON_VALID check nor PostgreSQL's jsonb accepts (a 500, IntegrityError /
    # DataError).
    job = make_job()
    response = api.post(
        f"/api/jobs/{job.pk}/run/",
        '{"parameters": {"size": 1e400}}',
        content_type="application/json",
    )
    assert response.status_code == 400, response.content[:200]
    assert "parameters" in response.json()
    assert not Execution.objects.exists()


@pytest.mark.parametrize("grace", ["999999999 00:00:00", "-1 00:00:00"])
def test_it_refuses_a_ping_grace_out_of_range(
    api: APIClient, make_job: Callable[..., Job], grace: str
) -> None:
    # The schedule's epsilon and jitter are checked (0 to 366 days); ping_grace is
    # not: a huge one is a 500 on SQLite (microseconds past 64 bits) and, stored on
    # PostgreSQL, makes jobs.pings.pings_close_late overflow on `scheduled_for +
    # ping_grace`; a negative one closes every run as late at once.
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    response = api.patch(f"/api/jobs/{job.pk}/", {"ping_grace": grace})
    assert response.status_code == 400, response.content[:200]
    assert "ping_grace" in response.json()
    job.refresh_from_db()
    assert job.ping_grace is None


def test_it_refuses_a_schedule_start_whose_local_time_is_past_year_9999(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    # 9999-12-31T20:00Z is 10000-01-01T10:00 in Kiritimati (+14): computing the
    # next fire time overflows (jobs/schedules next_after: astimezone).
    job = make_job()
    response = api.post(
        "/api/schedules/",
        {
            "job": job.pk,
            "expression": "* * * * *",
            "timezone": "Pacific/Kiritimati",
            "start_at": "9999-12-31T20:00:00Z",
        },
    )
    assert response.status_code == 400, response.content[:200]
    assert not Schedule.objects.exists()


def test_it_acts_on_the_app_named_in_a_slashless_url_with_a_dot(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    # App names may hold a dot, and /api/... without its trailing slash is served
    # as with it (docs/api.md). But /api/apps/report.json resolves as it is through
    # the router's format-suffix route: app "report", rendered as JSON.
    make_app("report")
    make_app("report.json")
    response = api.delete("/api/apps/report.json")
    assert response.status_code == 204
    assert list(App.objects.values_list("name", flat=True)) == ["report"]


def test_it_gets_an_app_with_a_dot_in_its_name_without_the_trailing_slash(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("nightly.api")
    response = api.get("/api/apps/nightly.api")
    assert response.status_code == 200, response.content[:200]
    assert response.json()["name"] == "nightly.api"


@pytest.mark.parametrize("value", ["maybe", "2", "on"])
def test_it_does_not_ignore_a_bad_enabled_filter(
    api: APIClient, make_job: Callable[..., Job], value: str
) -> None:
    # ?status=bogus and ?kind=bogus answer 400; ?enabled=0 (or anything but
    # true/false) is silently dropped and answers every job, enabled or not.
    make_job(name="on")
    make_job(name="off", enabled=False)
    response = api.get("/api/jobs/", {"enabled": value})
    assert response.status_code == 400, [j["name"] for j in response.json()["results"]]


def test_it_honours_the_search_parameter_its_schema_documents_for_schedules(
    api: APIClient, make_schedule: Callable[..., Schedule]
) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    parameters = {
        p["name"]
        for p in schema.json()["paths"]["/api/schedules/"]["get"]["parameters"]
    }
    make_schedule()
    found = api.get("/api/schedules/", {"search": "no-such-schedule"}).json()
    # Either the schema does not offer `search`, or searching narrows the list.
    assert "search" not in parameters or found["count"] == 0, found["count"]


def test_it_answers_a_name_taken_meanwhile_with_a_client_error(
    api: APIClient,
) -> None:
    # Two clients create the same app at once: both pass the serializer's unique
    # check, the second INSERT violates the UNIQUE index. Simulated by a row
    # inserted between validation and save.
    create = services.app_create

    def racing(**kwargs: object) -> App:
        App.objects.create(name="ops")  # the other request, committed first
        return create(**kwargs)  # type: ignore[arg-type]

    with mock.patch("jobs.views.services.app_create", side_effect=racing):
        response = api.post("/api/apps/", {"name": "ops"})
    assert response.status_code in (400, 409), response.content[:200]


def test_it_answers_a_job_name_taken_meanwhile_with_a_client_error(
    api: APIClient, make_app: Callable[..., App], admin_user: User
) -> None:
    app = make_app("ops")
    create = services.job_create

    def racing(**kwargs: object) -> Job:
        Job.objects.create(app=app, name="nightly", spec={"command": "true"})
        return create(**kwargs)  # type: ignore[arg-type]

    with mock.patch("jobs.views.services.job_create", side_effect=racing):
        response = api.post(
            "/api/jobs/",
            {"app": "ops", "name": "nightly", "spec": {"command": "true"}},
        )
    assert response.status_code in (400, 409), response.content[:200]
