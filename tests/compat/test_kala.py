"""compat/kala/: Kala's JSON API under /api/v1/."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Execution, Job, Schedule
from jobs.runners import Outcome

pytestmark = pytest.mark.django_db

COMMAND = (
    "bash /home/ajvb/gocode/src/github.com/ajvb/kala/examples/example-kala-commands/"
    "example-command.sh"
)
# The seed's schedule, moved from 2015 into the future (a past start is refused).
SCHEDULE = "R2/2099-06-04T19:25:16.828696-07:00/PT10S"
ZERO = "0001-01-01T00:00:00Z"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def post(client: Client, path: str, body: Any) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    # curl -d sends form encoding; Kala ignores the Content-Type.
    return client.post(path, data, content_type="application/x-www-form-urlencoded")


def create(client: Client, **job: Any) -> str:
    job.setdefault("name", "test_job")
    job.setdefault("command", "true")
    response = post(client, "/api/v1/job/", job)
    assert response.status_code == 201, response.content
    return str(json.loads(response.content)["id"])


def go(response: Any) -> Any:
    assert response["Content-Type"] == "application/json;charset=UTF-8"
    assert response.content.endswith(b"}\n")
    return json.loads(response.content)


def test_it_prints_what_the_seed_examples_print(curl: Client) -> None:
    # curl http://127.0.0.1:8000/api/v1/job/
    response = curl.get("/api/v1/job/")
    assert response.content == b'{"jobs":{}}\n'
    # curl .../api/v1/job/ -d '{"epsilon": "PT5S", "command": ..., "name": ..., ...}'
    response = post(
        curl,
        "/api/v1/job/",
        f'{{"epsilon": "PT5S", "command": "{COMMAND}", "name": "test_job", '
        f'"schedule": "{SCHEDULE}"}}',
    )
    assert response.status_code == 201
    job_id = go(response)["id"]
    assert UUID.fullmatch(job_id)
    assert response.content == f'{{"id":"{job_id}"}}\n'.encode()

    listed = go(curl.get("/api/v1/job/"))
    job = listed["jobs"][job_id]
    assert list(job)[:16] == [
        "name", "id", "command", "owner", "disabled", "dependent_jobs",
        "parent_jobs", "schedule", "retries", "epsilon", "success_count",
        "last_success", "error_count", "last_error", "last_attempted_run",
        "next_run_at",
    ]  # fmt: skip
    assert job == {
        "name": "test_job",
        "id": job_id,
        "command": COMMAND,
        "owner": "",
        "disabled": False,
        "dependent_jobs": None,
        "parent_jobs": None,
        "schedule": SCHEDULE,
        "retries": 0,
        "epsilon": "PT5S",
        "success_count": 0,
        "last_success": ZERO,
        "error_count": 0,
        "last_error": ZERO,
        "last_attempted_run": ZERO,
        "next_run_at": "2099-06-05T02:25:17Z",
        "metadata": {
            "success_count": 0,
            "last_success": ZERO,
            "error_count": 0,
            "last_error": ZERO,
            "last_attempted_run": ZERO,
        },
        "stats": None,
    }
    # curl http://127.0.0.1:8000/api/v1/job/<id>  (the seed omits the slash)
    assert go(curl.get(f"/api/v1/job/{job_id}")) == {"job": job}
    # curl http://127.0.0.1:8000/api/v1/job/<id> -X DELETE
    response = curl.delete(f"/api/v1/job/{job_id}")
    assert (response.status_code, response.content) == (204, b"")
    response = curl.get(f"/api/v1/job/{job_id}")
    assert (response.status_code, response.content) == (404, b"")


def test_it_keeps_a_percent_escape_in_a_body_curl_sent_as_a_form(
    curl: Client,
) -> None:
    """curl -d labels a JSON body as a form; Kala reads it as JSON, so `%00` in it
    is three characters, not a NUL to refuse."""
    job_id = create(curl, name="percent", command="printf '100%00'")
    assert Job.objects.get(uid=job_id).spec["command"] == "printf '100%00'"


def test_it_prints_job_stats_as_the_seed_shows(curl: Client) -> None:
    job_id = create(curl, schedule=SCHEDULE)
    # A job that never ran: Kala's null, not [].
    assert go(curl.get(f"/api/v1/job/stats/{job_id}/")) == {"job_stats": None}
    job = Job.objects.get(uid=job_id)
    execution = Execution.objects.create(job=job, status=Execution.Status.RUNNING)
    services.execution_finish(
        execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
    )
    execution.refresh_from_db()
    (stat,) = go(curl.get(f"/api/v1/job/stats/{job_id}/"))["job_stats"]
    ran_at = stat["ran_at"]
    assert stat == {
        "job_id": job_id,
        "ran_at": ran_at,
        "number_of_retries": 0,
        "success": True,
        "execution_duration": stat["execution_duration"],
        "JobId": job_id,
        "RanAt": ran_at,
        "NumberOfRetries": 0,
        "Success": True,
        "ExecutionDuration": stat["execution_duration"],
    }
    assert isinstance(stat["execution_duration"], int)
    assert ran_at.endswith("Z") and ran_at.startswith(str(datetime.now(UTC).year))
    detail = go(curl.get(f"/api/v1/job/{job_id}/"))["job"]
    assert detail["success_count"] == detail["metadata"]["success_count"] == 1
    assert detail["last_success"] != ZERO
    assert detail["stats"] == [stat]


def test_it_counts_each_attempt_and_one_stat_per_run(curl: Client) -> None:
    job_id = create(curl, schedule=SCHEDULE, retries=2)
    job = Job.objects.get(uid=job_id)
    assert (job.max_retries, job.retry_backoff) == (2, 0)
    previous = None
    for attempt in (1, 2, 3):
        execution = Execution.objects.create(
            job=job, status=Execution.Status.RUNNING, attempt=attempt, retry_of=previous
        )
        services.execution_finish(
            execution=execution, outcome=Outcome(status=Execution.Status.FAILED)
        )
        previous = execution
    stats = go(curl.get(f"/api/v1/job/stats/{job_id}/"))["job_stats"]
    assert [(s["number_of_retries"], s["success"]) for s in stats] == [(2, False)]
    detail = go(curl.get(f"/api/v1/job/{job_id}/"))["job"]
    assert (detail["error_count"], detail["success_count"]) == (3, 0)


def test_it_prints_app_stats_in_both_spellings(curl: Client) -> None:
    create(curl, schedule=SCHEDULE)
    create(curl, name="off", schedule=SCHEDULE, disabled=True)
    stats = go(curl.get("/api/v1/stats/"))["Stats"]
    assert {k: v for k, v in stats.items() if k not in ("created", "CreatedAt")} == {
        "active_jobs": 1,
        "disabled_jobs": 1,
        "jobs": 2,
        "error_count": 0,
        "success_count": 0,
        "next_run_at": "2099-06-05T02:25:17Z",
        "last_attempted_run": ZERO,
        "ActiveJobs": 1,
        "DisabledJobs": 1,
        "Jobs": 2,
        "ErrorCount": 0,
        "SuccessCount": 0,
        "NextRunAt": "2099-06-05T02:25:17Z",
        "LastAttemptedRun": ZERO,
    }
    assert stats["created"] == stats["CreatedAt"] != ZERO


def test_it_runs_a_job_without_schedule_at_once(curl: Client) -> None:
    job_id = create(curl, command="echo hi")
    job = Job.objects.get(uid=job_id)
    assert job.kind == Job.Kind.SHELL and job.spec == {"command": "echo hi"}
    assert not job.schedules.exists()
    (execution,) = job.executions.all()
    assert execution.trigger == Execution.Trigger.COMPAT
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["next_run_at"] == ZERO


def test_it_stores_schedule_epsilon_and_repeats(curl: Client) -> None:
    job_id = create(curl, schedule="R1/2099-01-01T00:00:00Z/PT10S", epsilon="PT5S")
    schedule = Schedule.objects.get(job__uid=job_id)
    assert schedule.kind == Schedule.Kind.INTERVAL
    assert schedule.epsilon == timedelta(seconds=5)
    assert schedule.next_run_at == datetime(2099, 1, 1, tzinfo=UTC)
    assert not Execution.objects.exists()  # it waits for its start
    # R1 = one repeat after the first run: two runs in all.
    start = datetime(2099, 1, 1, tzinfo=UTC)
    for seconds in (1, 11, 21, 31):
        services.schedules_fire_due(now=start + timedelta(seconds=seconds))
    assert Execution.objects.filter(job__uid=job_id).count() == 2


def test_it_accepts_a_start_without_offset_as_utc(curl: Client) -> None:
    job_id = create(curl, schedule="R/2099-01-01T10:00:00.5/P1W")
    schedule = Schedule.objects.get(job__uid=job_id)
    assert schedule.next_run_at == datetime(2099, 1, 1, 10, 0, 1, tzinfo=UTC)


def test_it_accepts_the_go_client_payload(curl: Client) -> None:
    # client.CreateJob marshals the whole Job struct.
    body = {
        "name": "from-go",
        "id": "",
        "command": "true",
        "owner": "ops@example.com",
        "disabled": False,
        "dependent_jobs": None,
        "parent_jobs": None,
        "schedule": SCHEDULE,
        "retries": 1,
        "epsilon": "",
        "next_run_at": ZERO,
        "metadata": {
            "success_count": 0,
            "last_success": ZERO,
            "error_count": 0,
            "last_error": ZERO,
            "last_attempted_run": ZERO,
        },
        "stats": None,
    }
    job_id = create(curl, **body)
    assert UUID.fullmatch(job_id)
    job = go(curl.get(f"/api/v1/job/{job_id}/"))["job"]
    assert (job["owner"], job["retries"], job["epsilon"]) == ("ops@example.com", 1, "")


def test_it_replaces_a_client_id_and_matches_keys_case_insensitively(
    curl: Client,
) -> None:
    mine = str(uuid.uuid4())
    response = post(
        curl, "/api/v1/job/", {"id": mine, "Name": "Capital", "COMMAND": "true"}
    )
    job_id = go(response)["id"]
    assert job_id != mine
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["name"] == "Capital"


def test_it_keeps_free_text_and_duplicate_names(curl: Client) -> None:
    first = create(curl, name="My nightly job")
    second = create(curl, name="My nightly job")
    names = {j["name"] for j in go(curl.get("/api/v1/job/"))["jobs"].values()}
    assert names == {"My nightly job"}
    assert Job.objects.get(uid=first).name != Job.objects.get(uid=second).name


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '{"name": "x", "command": "true"',
        {"name": "x"},
        {"command": "true"},
        {"name": "", "command": "true"},
        {"name": "x", "command": "true", "retries": "2"},
        {"name": "x", "command": "true", "retries": -1},
        {"name": "x", "command": "true", "retries": 1.5},
        {"name": "x", "command": "true", "disabled": "yes"},
        {"name": 5, "command": "true"},
        {"name": "x", "command": "true", "parent_jobs": "abc"},
        {"name": "x", "command": "true", "schedule": "R2/2099-01-01T00:00:00Z"},
        {"name": "x", "command": "true", "schedule": "5/2099-01-01T00:00:00Z/PT10S"},
        {"name": "x", "command": "true", "schedule": "Rx/2099-01-01T00:00:00Z/PT10S"},
        {"name": "x", "command": "true", "schedule": "R2/2099-01-01/PT10S"},
        {"name": "x", "command": "true", "schedule": "R2/2099-13-01T00:00:00Z/PT1S"},
        {"name": "x", "command": "true", "schedule": "R2/2015-06-04T19:25:16Z/PT10S"},
        {"name": "x", "command": "true", "schedule": "R2/2099-01-01T00:00:00Z/10S"},
        {"name": "x", "command": "true", "schedule": "R2/2099-01-01T00:00:00Z/PT0S"},
        {"name": "x", "command": "true", "schedule": SCHEDULE, "epsilon": "5s"},
        {"name": "x", "command": "true", "parent_jobs": [str(uuid.uuid4())]},
        {"name": "a\x00b", "command": "true"},  # PostgreSQL cannot store a NUL
        # Kala's interval regex is case-sensitive: no "P", no interval.
        {"name": "x", "command": "true", "schedule": "R2/2099-01-01T00:00:00Z/pt10s"},
        # strconv.ParseInt: beyond int64.
        {
            "name": "x",
            "command": "true",
            "schedule": "R99999999999999999999/2099-01-01T00:00:00Z/PT10S",
        },
        {"name": "x", "command": "true", "schedule": "R1.5/2099-01-01T00:00:00Z/PT1S"},
        # Go's decoder refuses wrong JSON types in every field it decodes.
        {"name": "x", "command": "true", "next_run_at": "garbage"},
        {"name": "x", "command": "true", "next_run_at": 5},
        {"name": "x", "command": "true", "next_run_at": "2099-02-30T00:00:00Z"},
        {"name": "x", "command": "true", "stats": "x"},
        {"name": "x", "command": "true", "stats": {}},
        {"name": "x", "command": "true", "stats": [5]},
        {"name": "x", "command": "true", "stats": [{"success": "yes"}]},
        {"name": "x", "command": "true", "stats": [{"execution_duration": 1.5}]},
        {"name": "x", "command": "true", "metadata": {"success_count": "x"}},
        {"name": "x", "command": "true", "metadata": {"Error_Count": -1}},
        {"name": "x", "command": "true", "metadata": {"last_success": "yesterday"}},
        {"name": "x", "command": "true", "retries": 2**64},
        # Go's ParseUint: no sign, no fraction or exponent.
        '{"name": "x", "command": "true", "retries": -0}',
        '{"name": "x", "command": "true", "retries": 4e4}',
        '{"name": "x", "command": "true", "retries": 40000.0}',
        '{"name": "x", "command": "true", "metadata": {"error_count": -0}}',
        # A UTF-8 byte order mark is an invalid character to Go's decoder.
        b"\xef\xbb\xbf" + json.dumps({"name": "x", "command": "true"}).encode(),
    ],
)
def test_it_refuses_bad_input_with_400_and_stores_nothing(
    curl: Client, body: Any
) -> None:
    response = post(curl, "/api/v1/job/", body)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.endswith(b"\n")
    assert not Job.objects.exists()
    assert not Execution.objects.exists()


def test_it_ignores_a_bad_epsilon_without_schedule_as_kala(curl: Client) -> None:
    job_id = create(curl, epsilon="garbage")
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["epsilon"] == "garbage"


def test_it_links_dependent_jobs_by_the_seed_rules(curl: Client) -> None:
    parent = create(curl, name="parent", schedule=SCHEDULE)
    other = create(curl, name="other", schedule=SCHEDULE)
    only_child = create(
        curl, name="child", parent_jobs=[parent], schedule="R/2099-01-01T00:00:00Z/PT1S"
    )
    shared = create(curl, name="shared", parent_jobs=[parent, other])
    child_job = Job.objects.get(uid=only_child)
    # A child runs after its parents only: no schedule, no run of its own.
    assert not child_job.schedules.exists() and not child_job.executions.exists()
    # Yet Kala shows the schedule it was sent (kept, never parsed).
    child_detail = go(curl.get(f"/api/v1/job/{only_child}/"))["job"]
    assert child_detail["schedule"] == "R/2099-01-01T00:00:00Z/PT1S"
    assert go(curl.get(f"/api/v1/job/{shared}/"))["job"]["schedule"] == ""
    detail = go(curl.get(f"/api/v1/job/{parent}/"))["job"]
    assert detail["dependent_jobs"] == [only_child, shared]
    assert go(curl.get(f"/api/v1/job/{shared}/"))["job"]["parent_jobs"] == [
        parent,
        other,
    ]
    # A parent's success runs its children (jobs/services/executions.py).
    execution = Execution.objects.create(
        job=Job.objects.get(uid=parent), status=Execution.Status.RUNNING
    )
    services.execution_finish(
        execution=execution, outcome=Outcome(status=Execution.Status.SUCCEEDED)
    )
    assert child_job.executions.get().trigger == Execution.Trigger.DEPENDENCY
    # Deleting a parent deletes the children that have no other parent.
    assert curl.delete(f"/api/v1/job/{parent}/").status_code == 204
    assert not Job.objects.filter(uid__in=[parent, only_child]).exists()
    assert go(curl.get(f"/api/v1/job/{shared}/"))["job"]["parent_jobs"] == [other]
    # Deleting a child leaves its parent.
    assert curl.delete(f"/api/v1/job/{shared}/").status_code == 204
    assert go(curl.get(f"/api/v1/job/{other}/"))["job"]["dependent_jobs"] is None


def test_it_starts_enables_and_disables(curl: Client) -> None:
    job_id = create(curl, schedule=SCHEDULE)
    for path in ("start", "disable", "start", "enable"):
        response = curl.post(f"/api/v1/job/{path}/{job_id}/")
        assert (response.status_code, response.content) == (204, b"")
    job = Job.objects.get(uid=job_id)
    assert job.enabled
    # The start while disabled ran nothing, as in Kala.
    assert job.executions.get().trigger == Execution.Trigger.COMPAT


# Every route that names one job by its id.
JOB_ROUTES = [
    ("get", "/api/v1/job/{}/"),
    ("delete", "/api/v1/job/{}/"),
    ("get", "/api/v1/job/stats/{}/"),
    ("post", "/api/v1/job/start/{}/"),
    ("post", "/api/v1/job/enable/{}/"),
    ("post", "/api/v1/job/disable/{}/"),
]


@pytest.mark.parametrize(("method", "path"), JOB_ROUTES)
@pytest.mark.parametrize(
    "job_id", ["13de9f64-1041-4639-b07b-088ca190e0e5", "not-a-uuid", "stats"]
)
def test_it_answers_404_with_an_empty_body_for_unknown_ids(
    curl: Client, method: str, path: str, job_id: str
) -> None:
    response = getattr(curl, method)(path.format(job_id))
    assert (response.status_code, response.content) == (404, b"")


def test_it_serves_the_slashless_forms_without_losing_a_post(curl: Client) -> None:
    response = post(curl, "/api/v1/job", {"name": "x", "command": "true"})
    assert response.status_code == 201
    job_id = go(response)["id"]
    assert curl.post(f"/api/v1/job/start/{job_id}").status_code == 204
    assert curl.get(f"/api/v1/job/stats/{job_id}").status_code == 200
    assert curl.get("/api/v1/stats").status_code == 200


def test_it_answers_405_on_a_wrong_method(curl: Client) -> None:
    job_id = create(curl, schedule=SCHEDULE)
    assert curl.put(f"/api/v1/job/{job_id}/").status_code == 405
    assert curl.get(f"/api/v1/job/start/{job_id}/").status_code == 405
    assert curl.delete("/api/v1/job/").status_code == 405


def test_it_requires_credentials_unless_opened(client: Client, settings: Any) -> None:
    response = post(client, "/api/v1/job/", {"name": "x", "command": "true"})
    assert response.status_code == 401
    assert not Job.objects.exists()
    settings.KARMCHARI_COMPAT_OPEN = ["kala"]
    assert client.get("/api/v1/job/").content == b'{"jobs":{}}\n'


def test_it_shows_a_kala_job_in_the_native_api_and_the_admin(
    curl: Client, api: APIClient, admin_client: Client
) -> None:
    job_id = create(curl, name="round-trip", schedule=SCHEDULE)
    jobs = api.get("/api/jobs/", {"app": "default"}).json()["results"]
    (native,) = [j for j in jobs if j["name"] == "round-trip"]
    assert native["kind"] == "shell" and native["spec"] == {"command": "true"}
    assert native["schedules"][0]["expression"] == SCHEDULE
    response = admin_client.get("/admin/jobs/job/")
    assert response.status_code == 200 and b"round-trip" in response.content
    # And back: a job disabled through the native API is disabled in Kala.
    assert api.post(f"/api/jobs/{native['id']}/disable/").status_code == 200
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["disabled"] is True


def test_it_lists_only_shell_jobs_of_the_compat_app(
    curl: Client, make_job: Any, make_app: Any, admin_user: User
) -> None:
    make_job(app=make_app("elsewhere"))
    make_job(app=make_app("default"), kind=Job.Kind.EXTERNAL, spec={})
    assert curl.get("/api/v1/job/").content == b'{"jobs":{}}\n'


@pytest.mark.parametrize("epsilon", ["P99999Y", "P999999999999D"])
def test_it_refuses_an_epsilon_too_large_to_count(curl: Client, epsilon: str) -> None:
    response = post(
        curl,
        "/api/v1/job/",
        {"name": "x", "command": "true", "schedule": SCHEDULE, "epsilon": epsilon},
    )
    assert response.status_code == 400, response.content
    assert f"bad epsilon {epsilon!r}".encode() in response.content
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("interval", "stored", "every"),
    [
        ("PT90S", "PT1M30S", timedelta(seconds=90)),
        # The weeks-only form is tried first, and searched: the 2D is never read.
        ("P1W2D", "P7D", timedelta(days=7)),
        # A Kala year is 365 days, even across 2096-02-29.
        ("P1Y", "P365D", timedelta(days=365)),
        # Searched, unanchored: P1D matches, the T adds nothing.
        ("P1DT", "P1D", timedelta(days=1)),
        ("xP1DT1H1M1Sx", "P1DT1H1M1S", timedelta(days=1, seconds=3661)),
    ],
)
def test_it_reads_intervals_as_kala_does(
    curl: Client, interval: str, stored: str, every: timedelta
) -> None:
    sent = f"R/2096-01-01T00:00:00Z/{interval}"
    job_id = create(curl, schedule=sent)
    schedule = Schedule.objects.get(job__uid=job_id)
    assert schedule.expression == f"R/2096-01-01T00:00:00Z/{stored}"
    start = datetime(2096, 1, 1, tzinfo=UTC)
    services.schedules_fire_due(now=start + timedelta(seconds=1))
    schedule.refresh_from_db()
    assert schedule.next_run_at == start + every
    # Kala echoes the schedule as sent.
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["schedule"] == sent


def test_it_counts_kala_months_from_the_current_date(curl: Client) -> None:
    # Kala's P1M is the length of the month after the current one (February 2098:
    # 28 days), fixed when the schedule is read.
    with time_machine.travel(datetime(2098, 1, 20, tzinfo=UTC), tick=False):
        job_id = create(curl, schedule="R/2098-06-01T00:00:00Z/P1M")
    schedule = Schedule.objects.get(job__uid=job_id)
    assert schedule.expression == "R/2098-06-01T00:00:00Z/P28D"


def test_it_reads_the_repeat_count_as_go_parse_int(curl: Client) -> None:
    job_id = create(curl, schedule="R+1/2099-01-01T00:00:00Z/PT10S")
    schedule = Schedule.objects.get(job__uid=job_id)
    assert schedule.expression == "R1/2099-01-01T00:00:00Z/PT10S"
    start = datetime(2099, 1, 1, tzinfo=UTC)
    for seconds in (1, 11, 21, 31):
        services.schedules_fire_due(now=start + timedelta(seconds=seconds))
    assert Execution.objects.filter(job__uid=job_id).count() == 2
    forever = create(curl, schedule="R-3/2099-01-01T00:00:00Z/PT10S")
    assert Schedule.objects.get(job__uid=forever).expression.startswith("R/")


def test_it_shows_a_natively_edited_schedule_as_stored(curl: Client) -> None:
    job_id = create(curl, schedule="R/2099-01-01T00:00:00Z/P1W")
    schedule = Schedule.objects.get(job__uid=job_id)
    services.schedule_update(schedule=schedule, expression="R/2099-01-01T00:00:00Z/P1D")
    detail = go(curl.get(f"/api/v1/job/{job_id}/"))["job"]
    assert detail["schedule"] == "R/2099-01-01T00:00:00Z/P1D"


def test_it_reads_epsilon_as_kala_reads_an_interval(curl: Client) -> None:
    # Searched like an interval: PT10X has a "P", so it is a zero epsilon.
    job_id = create(curl, schedule=SCHEDULE, epsilon="PT10X")
    assert Schedule.objects.get(job__uid=job_id).epsilon == timedelta(0)
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["epsilon"] == "PT10X"
    job_id = create(curl, schedule=SCHEDULE, epsilon="P1W2D")
    assert Schedule.objects.get(job__uid=job_id).epsilon == timedelta(days=7)


def test_it_accepts_null_and_well_typed_fields_kala_ignores(curl: Client) -> None:
    job_id = create(
        curl,
        next_run_at="2099-01-01T00:00:00.123+02:00",
        metadata={"success_count": None, "LAST_ERROR": ZERO, "other": "x"},
        stats=[None, {"job_id": "x", "ran_at": ZERO, "execution_duration": -5}],
    )
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["stats"] is None


@pytest.mark.parametrize(
    "value", ["1e400", "-1e400", "9" * 5000, "-0", '"\\u0000"', "[" * 2000 + "]" * 2000]
)
def test_it_accepts_any_valid_json_in_keys_kala_ignores(
    curl: Client, value: str
) -> None:
    """Go's decoder skips unknown keys whatever valid JSON they hold: numbers no
    double or Python int() holds, NUL, nesting past Python's recursion limit."""
    body = (
        f'{{"name": "n", "command": "true", "schedule": "{SCHEDULE}", '
        f'"x_extra": {value}, "metadata": {{"other": {value}}}, '
        f'"stats": [{{"more": {value}}}]}}'
    )
    response = post(curl, "/api/v1/job/", body)
    assert response.status_code == 201, response.content
    job_id = json.loads(response.content)["id"]
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["name"] == "n"


@pytest.mark.parametrize(
    ("member", "field"),
    [
        ('"retries": 1e400', "Job.retries of type uint"),
        ('"retries": 1' + "0" * 5000, "Job.retries of type uint"),
        ('"metadata": {"error_count": 1e400}', "Metadata.metadata.error_count"),
        ('"stats": [{"execution_duration": 1e400}]', "JobStat.stats.execution"),
    ],
)
def test_it_refuses_a_number_a_field_kala_reads_cannot_hold_as_go_does(
    curl: Client, member: str, field: str
) -> None:
    response = post(
        curl, "/api/v1/job/", f'{{"name": "n", "command": "true", {member}}}'
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    body = response.content.decode()
    assert body.startswith("json: cannot unmarshal number ") and body.endswith("\n")
    assert f"into Go struct field {field}" in body
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "spelling",
    [
        str.upper,
        lambda s: s.replace("-", ""),
        lambda s: "{" + s + "}",
        lambda s: "urn:uuid:" + s,
    ],
)
@pytest.mark.parametrize(("method", "path"), JOB_ROUTES)
def test_it_knows_an_id_only_in_its_own_spelling(
    curl: Client, spelling: Any, method: str, path: str
) -> None:
    job_id = create(curl, schedule=SCHEDULE)
    response = getattr(curl, method)(path.format(spelling(job_id)))
    assert (response.status_code, response.content) == (404, b"")
    job = Job.objects.get(uid=job_id)
    assert job.enabled and not job.executions.exists()
    response = post(
        curl,
        "/api/v1/job/",
        {"name": "c", "command": "true", "parent_jobs": [spelling(job_id)]},
    )
    assert response.status_code == 400


def test_it_accepts_a_blank_command_as_kala_does(curl: Client) -> None:
    job_id = create(curl, command=" ", schedule=SCHEDULE)
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["command"] == " "
    # Kala crashed running it (nothing to exec); here its runs fail.
    assert Job.objects.get(uid=job_id).spec == {"command": "exit 127"}


def test_it_escapes_line_separators_as_go_does(curl: Client) -> None:
    job_id = create(curl, name="a\u2028b\u2029c<", schedule=SCHEDULE)
    raw = curl.get(f"/api/v1/job/{job_id}/").content
    assert b'"name":"a\\u2028b\\u2029c\\u003c"' in raw
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["name"] == "a\u2028b\u2029c<"


def test_it_recomputes_the_next_run_from_a_manual_start(curl: Client) -> None:
    # Kala: next = last attempted run + interval, so a manual start moves the grid.
    t0 = datetime(2098, 1, 1, tzinfo=UTC)
    sent = "R3/2098-01-01T00:00:00Z/PT1H"
    with time_machine.travel(t0 - timedelta(minutes=1), tick=False):
        job_id = create(curl, schedule=sent)
        # Before the first slot Kala waits for the start: nothing moves.
        assert curl.post(f"/api/v1/job/start/{job_id}/").status_code == 204
        assert Schedule.objects.get().next_run_at == t0
    services.schedules_fire_due(now=t0 + timedelta(seconds=1))
    with time_machine.travel(t0 + timedelta(minutes=10), tick=False):
        assert curl.post(f"/api/v1/job/start/{job_id}/").status_code == 204
    detail = go(curl.get(f"/api/v1/job/{job_id}/"))["job"]
    assert detail["next_run_at"] == "2098-01-01T01:10:00Z"  # not the old 01:00
    assert detail["schedule"] == sent
    # The runs left are kept: three after the first scheduled one (R3 = 4 runs).
    schedule = Schedule.objects.get()
    assert schedule.expression == "R2/2098-01-01T01:10:00Z/PT1H"
    for hours in (1, 2, 3, 4, 5):
        slot = t0 + timedelta(hours=hours, minutes=10, seconds=1)
        services.schedules_fire_due(now=slot)
    fired = Execution.objects.filter(trigger=Execution.Trigger.SCHEDULE)
    assert fired.count() == 4


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "application/json"]
)
def test_it_reads_bytes_that_are_no_utf8_as_go_does(
    curl: Client, content_type: str
) -> None:
    """Go's decoder makes each byte that is no UTF-8 a U+FFFD (a truncated sequence
    one per byte), as it does with an escaped lone surrogate half."""
    body = b'{"name": "caf\xe9 \xe2\x82!", "command": "echo \\ud800 \xff"}'
    response = curl.post("/api/v1/job/", body, content_type=content_type)
    assert response.status_code == 201, response.content
    job = go(curl.get(f"/api/v1/job/{json.loads(response.content)['id']}/"))["job"]
    assert job["name"] == "caf\ufffd \ufffd\ufffd!"
    assert job["command"] == "echo \ufffd \ufffd"
    lone = create(curl, name="lone \ud800", command="true")
    assert go(curl.get(f"/api/v1/job/{lone}/"))["job"]["name"] == "lone \ufffd"
    # Outside a string such a byte is an invalid character, to Go too.
    response = curl.post(
        "/api/v1/job/", b'{"name": "x"}\xff', content_type=content_type
    )
    assert response.status_code == 400
    assert Job.objects.count() == 2


@pytest.mark.parametrize("retries", [32766, 32767, 40000, 2**31, 2**64 - 1])
def test_it_takes_any_go_uint_of_retries_and_shows_it_back(
    curl: Client, retries: int
) -> None:
    """Kala's retries are a Go uint: any is accepted and shown back; Karmchari
    makes at most 32766 (a run's attempt number must fit its field)."""
    job_id = create(curl, schedule=SCHEDULE, retries=retries)
    job = Job.objects.get(uid=job_id)
    assert job.max_retries == min(retries, 32766)
    raw = curl.get(f"/api/v1/job/{job_id}/").content
    assert f'"retries":{retries},'.encode() in raw
    listed = go(curl.get("/api/v1/job/"))["jobs"][job_id]
    assert listed["retries"] == retries
    # Edited natively, the job shows what it has.
    services.job_update(job=job, max_retries=5)
    assert go(curl.get(f"/api/v1/job/{job_id}/"))["job"]["retries"] == 5
