"""compat/jobstreamer/: the JobStreamer control bus API, in EDN and JSON."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from agents.models import Agent
from compat import edn
from jobs.models import App, Execution, Job, Schedule

pytestmark = pytest.mark.django_db

EDN = "application/edn"
APP_BODY = """{
:name "batch-example"
:description "Batch example"
:classpath [
"file:///home/app/target/classes"
"file:///var/m2/repository/xxx/xxx.jar"
]
}"""
README_JOB = """{
:id "JOB-1"
:steps [
{
:id "STEP-1"
:batchlet {
:ref "example.Batchlet"
}
}
]
}"""
SHELL_JOB = '{:job/name "MyShell" :steps [{:id "s1" :batchlet {:command "echo hi"}}]}'


def send(client: Client, method: str, path: str, body: str = "", **extra: Any) -> Any:
    return getattr(client, method)(path, body, content_type=EDN, **extra)


def read(response: Any) -> Any:
    assert response["Content-Type"] == "application/edn;charset=UTF-8"
    return edn.loads(response.content)


@pytest.fixture
def app(curl: Client) -> str:
    response = send(curl, "post", "/apps", APP_BODY)
    assert response.status_code == 201, response.content
    return "batch-example"


def test_it_deploys_an_application_from_the_seed_payload(
    curl: Client, app: str
) -> None:
    stored = App.objects.get(name=app)
    assert stored.description == "Batch example"
    assert stored.meta["classpath"][0] == "file:///home/app/target/classes"
    (listed,) = read(curl.get("/apps"))
    assert listed["application/name"] == listed["name"] == app
    assert listed["classpath"] == listed["application/classpaths"]
    # The original's spelling is accepted too, and updates.
    body = (
        '{:application/name "batch-example" :application/description "New" '
        ":application/classpaths []}"
    )
    assert send(curl, "post", "/apps", body).status_code == 201
    assert App.objects.get(name=app).description == "New"


def test_it_registers_the_seed_job_as_a_stored_but_not_runnable_batch(
    curl: Client, app: str
) -> None:
    response = send(curl, "post", f"/{app}/jobs", README_JOB)
    assert response.status_code == 201
    assert read(response)["job/name"] == "JOB-1"
    job = Job.objects.get(app__name=app, name="JOB-1")
    assert job.kind == Job.Kind.BATCH
    assert job.spec["steps"][0]["batchlet"] == {"ref": "example.Batchlet"}
    listed = read(curl.get(f"/{app}/jobs"))
    # No offset asked: 0, as the original's (to-int offset 0) echoes it.
    assert listed["hits"] == 1 and (listed["limit"], listed["offset"]) == (20, 0)
    (item,) = listed["results"]
    assert item["job/id"] == "JOB-1" and item["job/restartable?"] is True
    detail = read(curl.get(f"/{app}/job/JOB-1"))
    assert detail["steps"][0]["id"] == "STEP-1"
    response = send(curl, "post", f"/{app}/job/JOB-1/executions")
    assert response.status_code == 400
    assert "cannot run" in read(response)["messages"][0]
    assert not Execution.objects.exists()


def test_it_pages_from_a_one_based_offset_and_past_the_end_to_an_empty_page(
    curl: Client, app: str
) -> None:
    for name in ("a", "b", "c"):
        send(
            curl, "post", f"/{app}/jobs", f'{{:job/name "{name}" :job/command "true"}}'
        )
    job = Job.objects.get(name="a")
    for _ in range(3):
        Execution.objects.create(job=job, status=Execution.Status.SUCCEEDED)
    for path in (f"/{app}/jobs", f"/{app}/job/a/executions"):
        page = read(curl.get(path, {"offset": 2, "limit": 1}))
        assert (len(page["results"]), page["hits"]) == (1, 3)
        for query in (
            {"offset": 4},
            {"offset": "9" * 30},
            {"offset": "9" * 19, "limit": "9" * 30},
        ):
            response = curl.get(path, query)
            assert response.status_code == 200, response.content
            page = read(response)
            assert (page["results"], page["hits"]) == ([], 3)
            assert page["offset"] == int(query["offset"])
        response = curl.get(path, {"offset": "9" * 5000})
        assert response.status_code == 400


def test_it_shows_a_job_as_the_seed_does(curl: Client, app: str) -> None:
    assert send(curl, "post", f"/{app}/jobs", SHELL_JOB).status_code == 201
    job = Job.objects.get(app__name=app, name="MyShell")
    assert (job.kind, job.spec) == (Job.Kind.SHELL, {"command": "echo hi"})
    body = '{:job/name "MyShell" :schedule/cron-notation "0 0 * * * ?"}'
    response = send(curl, "post", f"/{app}/job/MyShell/schedule", body)
    assert response.status_code == 201
    assert Schedule.objects.get(job=job).expression == "0 0 * * * ?"
    execution = Execution.objects.create(job=job, status=Execution.Status.PENDING)
    detail = read(curl.get(f"/{app}/job/MyShell"))
    assert detail["db/id"] == job.pk
    assert detail["job/name"] == "MyShell" and detail["job/restartable?"] is True
    assert detail["job/stats"] == {"total": 1, "success": 0, "failure": 0, "average": 0}
    assert detail["job/schedule"] == {
        "schedule/active?": True,
        "schedule/cron-notation": "0 0 * * * ?",
    }
    start = detail["job/next-execution"]["job-execution/start-time"]
    assert start > timezone.now() and (start.minute, start.second) == (0, 0)
    latest = detail["job/latest-execution"]
    assert latest["job-execution/batch-status"] == {"db/ident": "batch-status/queued"}
    created = latest["job-execution/create-time"]
    assert abs((created - execution.created).total_seconds()) < 0.001
    raw = curl.get(f"/{app}/job/MyShell").content.decode()
    assert ":db/ident :batch-status/queued" in raw and "#inst" in raw


def test_it_stops_resumes_and_deletes_a_schedule(curl: Client, app: str) -> None:
    send(curl, "post", f"/{app}/jobs", SHELL_JOB)
    send(
        curl,
        "post",
        f"/{app}/job/MyShell/schedule",
        '{:schedule/cron-notation "0 0 * * * ?"}',
    )
    assert curl.put(f"/{app}/job/MyShell/schedule/pause").status_code == 204
    assert (
        read(curl.get(f"/{app}/job/MyShell"))["job/schedule"]["schedule/active?"]
        is False
    )
    assert curl.put(f"/{app}/job/MyShell/schedule/resume").status_code == 204
    assert Schedule.objects.get().enabled
    # A new notation re-times the one schedule.
    send(
        curl,
        "put",
        f"/{app}/job/MyShell/schedule",
        '{:schedule/cron-notation "0 30 * * * ?"}',
    )
    assert Schedule.objects.get().expression == "0 30 * * * ?"
    assert curl.delete(f"/{app}/job/MyShell/schedule").status_code == 204
    assert not Schedule.objects.exists()
    assert "job/schedule" not in read(curl.get(f"/{app}/job/MyShell"))
    assert curl.put(f"/{app}/job/MyShell/schedule/pause").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        "{}",
        '{:schedule/cron-notation "every day"}',
        '{:schedule/cron-notation "0 0 25 * * ?"}',
    ],
)
def test_it_refuses_a_bad_schedule(curl: Client, app: str, body: str) -> None:
    send(curl, "post", f"/{app}/jobs", SHELL_JOB)
    response = send(curl, "post", f"/{app}/job/MyShell/schedule", body)
    assert response.status_code == 400
    assert read(response)["messages"]
    assert not Schedule.objects.exists()


def test_it_runs_and_lists_executions(curl: Client, app: str) -> None:
    send(curl, "post", f"/{app}/jobs", SHELL_JOB)
    response = send(
        curl, "post", f"/{app}/job/MyShell/executions", '{:date "2026-01-01"}'
    )
    assert response.status_code == 201
    created = read(response)
    execution = Execution.objects.get()
    assert execution.parameters == {"date": "2026-01-01"}
    assert execution.trigger == Execution.Trigger.COMPAT
    assert created["job-execution/execution-id"] == execution.pk
    assert created["job-execution/job-parameters"] == '{:date "2026-01-01"}'
    # Another run while this one is queued: 409, as JobStreamer.
    response = send(curl, "post", f"/{app}/job/MyShell/executions")
    assert response.status_code == 409
    assert Execution.objects.count() == 1
    listed = read(curl.get(f"/{app}/job/MyShell/executions"))
    assert listed["hits"] == 1
    assert listed["results"][0]["job-execution/execution-id"] == execution.pk
    one = read(curl.get(f"/{app}/job/MyShell/execution/{execution.pk}"))
    assert one["db/id"] == execution.pk
    assert curl.get(f"/{app}/job/MyShell/execution/999999").status_code == 404
    # stop = kill through the control bus.
    response = curl.put(f"/{app}/job/MyShell/execution/{execution.pk}/stop")
    assert response.status_code == 200
    execution.refresh_from_db()
    assert execution.status == Execution.Status.KILLED


def test_it_runs_a_new_execution_beside_a_paused_one(curl: Client, app: str) -> None:
    send(curl, "post", f"/{app}/jobs", SHELL_JOB)
    job = Job.objects.get(name="MyShell")
    paused = Execution.objects.create(job=job, status=Execution.Status.PAUSED)
    shown = read(curl.get(f"/{app}/job/MyShell/execution/{paused.pk}"))
    assert shown["job-execution/batch-status"] == {"db/ident": "batch-status/stopped"}
    # 409 only while the latest run is queued, starting, started or stopping.
    response = send(curl, "post", f"/{app}/job/MyShell/executions")
    assert response.status_code == 201, response.content
    assert job.executions.count() == 2
    assert send(curl, "post", f"/{app}/job/MyShell/executions").status_code == 409
    assert job.executions.count() == 2


@pytest.mark.parametrize(
    "body",
    [
        "",
        "{}",
        '{:application/name "x"}',
        '{:name "x" :description "d"}',
        '{:name "x" :classpath []}',
        '{:description "d" :classpath []}',
        '{:name "x" :description "" :classpath []}',
    ],
)
def test_it_refuses_an_app_without_name_description_or_classpaths(
    curl: Client, body: str
) -> None:
    response = send(curl, "post", "/apps", body)
    assert response.status_code == 400
    assert read(response)["messages"]
    assert not App.objects.exists()


@pytest.mark.parametrize(
    "path", ["/{app}/stats/x", "/{app}/job/x/y/z", "/nowhere/jobs/1", "/apps/x"]
)
def test_it_answers_an_unknown_route_as_duct_does(
    curl: Client, app: str, path: str
) -> None:
    for method in ("get", "post", "delete"):
        response = getattr(curl, method)(path.format(app=app))
        assert (response.status_code, response.content) == (404, b"Resource Not Found")
        assert response["Content-Type"].startswith("text/plain")


def test_it_updates_and_deletes_a_job(curl: Client, app: str) -> None:
    send(curl, "post", f"/{app}/jobs", SHELL_JOB)
    body = '{:job/name "MyShell" :job/command "echo bye"}'
    response = send(curl, "put", f"/{app}/job/MyShell", body)
    assert response.status_code == 200
    assert Job.objects.get(name="MyShell").spec == {"command": "echo bye"}
    # POSTing an existing name updates it too.
    send(curl, "post", f"/{app}/jobs", README_JOB.replace("JOB-1", "MyShell"))
    assert Job.objects.get(name="MyShell").kind == Job.Kind.BATCH
    assert curl.delete(f"/{app}/job/MyShell").status_code == 204
    assert not Job.objects.exists()
    assert curl.get(f"/{app}/job/MyShell").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        "{:steps []}",
        '{:job/name "bad name"}',
        '{:job/name "x"',
        "[1 2]",
        "{:job/name 5}",
        # PostgreSQL cannot store a NUL.
        '{:job/name "MyShell" :steps [{:id "s1" :batchlet {:command "echo \x00"}}]}',
    ],
)
def test_it_refuses_a_bad_job(curl: Client, app: str, body: str) -> None:
    response = send(curl, "post", f"/{app}/jobs", body)
    assert response.status_code == 400
    assert read(response)["messages"]
    assert not Job.objects.exists()


def test_it_stores_clojure_decimals_and_ratios_as_json_numbers(
    curl: Client, app: str
) -> None:
    body = '{:job/name "x" :timeout 1.5M :retries 3.0M :share 4/2 :huge 1e400M}'
    response = send(curl, "post", f"/{app}/jobs", body)
    assert response.status_code == 201, response.content
    stored = Job.objects.get(name="x").legacy["jobstreamer"]["definition"]
    assert stored["timeout"] == 1.5
    assert stored["retries"] == 3 and isinstance(stored["retries"], int)
    assert stored["share"] == 2 and isinstance(stored["share"], int)
    assert stored["huge"] == 10**400
    shown = read(curl.get(f"/{app}/job/x"))
    assert (shown["timeout"], shown["retries"], shown["huge"]) == (1.5, 3, 10**400)
    send(curl, "post", f"/{app}/jobs", '{:job/name "run" :job/command "true"}')
    response = send(curl, "post", f"/{app}/job/run/executions", "{:rate 1.5M}")
    assert response.status_code == 201, response.content
    assert Execution.objects.get().parameters == {"rate": 1.5}


@pytest.mark.parametrize(
    ("body", "media"),
    [
        ('{:job/name "x" :limit ##Inf}', EDN),
        ('{:job/name "x" :limit [##-Inf]}', EDN),
        ('{:job/name "x" :limit ##NaN}', EDN),
        ('{:job/name "x" :limit 1e5000M}', EDN),
        ('{:job/name "x" :limit 1/0}', EDN),
        ('{"job/name": "x", "limit": 1e400}', "application/json"),
        ('{"job/name": "x", "limit": NaN}', "application/json"),
        ('{"job/name": "x", "limit": {"a": -Infinity}}', "application/json"),
    ],
)
def test_it_refuses_numbers_json_cannot_hold(
    curl: Client, app: str, body: str, media: str
) -> None:
    response = curl.post(f"/{app}/jobs", body, content_type=media)
    assert response.status_code == 400
    (message,) = read(response)["messages"]
    assert message.startswith("IOException: ")
    assert not Job.objects.exists()


def test_it_refuses_execution_parameters_json_cannot_hold(
    curl: Client, app: str
) -> None:
    send(curl, "post", f"/{app}/jobs", '{:job/name "run" :job/command "true"}')
    response = send(curl, "post", f"/{app}/job/run/executions", "{:rate ##Inf}")
    assert response.status_code == 400
    assert read(response)["messages"][0].startswith("IOException: ")
    assert not Execution.objects.exists()


@pytest.mark.parametrize(
    ("body", "media"),
    [
        ('{:job/name "deep" :x %s}' % ("[" * 450 + "]" * 450), EDN),
        ('{:job/name "deep" :x %s}' % ("{:a " * 5000 + "1" + "}" * 5000), EDN),
        ('{"job/name": "deep", "x": %s}' % ("[" * 600 + "]" * 600), "application/json"),
        (
            '{"job/name": "deep", "x": %s}' % ("[" * 10**5 + "]" * 10**5),
            "application/json",
        ),
    ],
)
def test_it_refuses_a_body_nested_too_deeply_before_storing_it(
    curl: Client, app: str, body: str, media: str
) -> None:
    response = curl.post(f"/{app}/jobs", body, content_type=media)
    assert response.status_code == 400
    assert read(response)["messages"][0].startswith("IOException: ")
    assert not Job.objects.exists()
    assert curl.get(f"/{app}/job/deep").status_code == 404


def test_it_keeps_a_definition_nested_as_deep_as_allowed(
    curl: Client, app: str
) -> None:
    nested = "[" * (edn.MAX_DEPTH - 1) + "]" * (edn.MAX_DEPTH - 1)
    response = send(curl, "post", f"/{app}/jobs", f'{{:job/name "deep" :x {nested}}}')
    assert response.status_code == 201, response.content
    assert curl.get(f"/{app}/job/deep").status_code == 200


def test_it_shows_keys_that_are_no_edn_keyword_as_strings(
    curl: Client, app: str
) -> None:
    body = json.dumps({"job/name": "x", "my key": 1, "2nd": {"a b": [2]}})
    response = curl.post(f"/{app}/jobs", body, content_type="application/json")
    assert response.status_code == 201
    raw = curl.get(f"/{app}/job/x").content.decode()
    assert ':job/name "x"' in raw and '"my key" 1' in raw and '"2nd" {"a b" [2]}' in raw
    shown = edn.loads(raw)
    assert (shown["my key"], shown["2nd"]) == (1, {"a b": [2]})


def test_it_reads_a_surrogate_pair_escape_as_one_character(
    curl: Client, app: str
) -> None:
    body = '{:job/name "s" :desc "\\ud83d\\ude00"}'
    response = send(curl, "post", f"/{app}/jobs", body)
    assert response.status_code == 201, response.content
    definition = Job.objects.get().legacy["jobstreamer"]["definition"]
    assert definition["desc"] == "\U0001f600"
    lone = send(curl, "post", f"/{app}/jobs", '{:job/name "t" :desc "\\ud800"}')
    assert lone.status_code == 400
    assert Job.objects.count() == 1


def test_it_ignores_a_body_of_another_media_type(curl: Client, app: str) -> None:
    response = curl.post(f"/{app}/jobs", '{:job/name "x"}', content_type="text/plain")
    assert response.status_code == 400  # no body: no name
    assert not Job.objects.exists()


def test_it_answers_json_when_asked_and_406_when_nothing_fits(
    curl: Client, app: str
) -> None:
    response = curl.post(
        f"/{app}/jobs",
        json.dumps({"job/name": "J", "job/command": "true"}),
        content_type="application/json",
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json;charset=UTF-8"
    assert json.loads(response.content)["job/name"] == "J"
    assert curl.get(f"/{app}/jobs", HTTP_ACCEPT="text/html").status_code == 406
    browser = "text/html,application/xhtml+xml,*/*;q=0.8"
    assert read(curl.get(f"/{app}/jobs", HTTP_ACCEPT=browser))["hits"] == 1


def test_it_shows_agents_with_their_stats(curl: Client) -> None:
    agent = Agent.objects.create(
        name="celery@host",
        host="127.0.0.1",
        os_name="Linux",
        os_version="6.1",
        cpu_arch="x86_64",
        cpu_cores=4,
        memory_total=8281976832,
        memory_free=1070014464,
        swap_total=34359734272,
        swap_free=34325999616,
        process_cpu_load=0.02,
        cpu_time=13.05,
        system_cpu_load=0.07,
        load_average=[2.43, 2.0, 1.5],
        last_heartbeat=timezone.now(),
    )
    (listed,) = read(curl.get("/agents"))
    assert listed["agent/instance-id"] == agent.instance_id
    one = read(curl.get(f"/agent/{agent.instance_id}"))
    assert one == listed
    assert one["agent/name"] == "celery@host" and one["agent/cpu-core"] == 4
    assert one["command"] == "ready" and one["agent/jobs"] == {"running": 0}
    assert one["agent/stats"] == {
        "memory": {
            "physical": {"free": 1070014464, "total": 8281976832},
            "swap": {"free": 34325999616, "total": 34359734272},
        },
        "cpu": {
            "process": {"load": 0.02, "time": 13050000000},
            "system": {"load": 0.07, "load-average": 2.43},
        },
    }
    assert "#uuid" in curl.get(f"/agent/{agent.instance_id}").content.decode()
    assert curl.get(f"/agent/{uuid.uuid4()}").status_code == 404
    assert curl.get("/agent/not-a-uuid").status_code == 404


def test_it_prints_app_stats_as_the_seed(curl: Client, app: str) -> None:
    for name in ("a", "b", "c"):
        send(curl, "post", f"/{app}/jobs", f'{{:job/name "{name}"}}')
    response = curl.get(f"/{app}/stats")
    assert read(response) == {"agents": 0, "jobs": 3}
    assert response.content == b"{:agents 0 :jobs 3}"
    assert curl.get("/nowhere/stats").status_code == 404


def test_it_requires_credentials_unless_opened(client: Client, settings: Any) -> None:
    response = client.post("/apps", APP_BODY, content_type=EDN)
    assert (response.status_code, response.content) == (401, b"Unauthorized")
    assert not App.objects.exists()
    settings.KARMCHARI_COMPAT_OPEN = ["jobstreamer"]
    assert client.post("/apps", APP_BODY, content_type=EDN).status_code == 201


def test_it_sends_no_cors_headers_unless_configured(curl: Client, app: str) -> None:
    response = curl.get(f"/{app}/jobs", HTTP_ORIGIN="http://console.example")
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response
    assert curl.options(f"/{app}/jobs").status_code == 405


def test_it_answers_cors_as_the_original_when_configured(
    curl: Client, client: Client, app: str, settings: Any
) -> None:
    settings.KARMCHARI_JOBSTREAMER_CORS_ORIGIN = "http://console.example"
    for path in ("/apps", f"/{app}/jobs", f"/{app}/job/x/schedule", "/agents"):
        # A browser's preflight carries no credentials.
        response = client.options(
            path,
            HTTP_ORIGIN="http://console.example",
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        )
        assert (response.status_code, response.content) == (200, b"")
        assert response["Access-Control-Allow-Methods"] == "POST,GET,PUT,DELETE,OPTIONS"
        assert response["Access-Control-Allow-Origin"] == "http://console.example"
        assert response["Access-Control-Allow-Credentials"] == "true"
    for response in (
        curl.get(f"/{app}/jobs"),
        send(curl, "post", f"/{app}/jobs", '{:job/name "x"}'),
        client.get(f"/{app}/jobs"),  # 401
        curl.get(f"/{app}/job/missing"),  # 404
        curl.patch(f"/{app}/jobs"),  # 405
        curl.get(f"/{app}/stats/nothing-here"),  # duct's 404
    ):
        assert response["Access-Control-Allow-Origin"] == "http://console.example"
    settings.KARMCHARI_JOBSTREAMER_CORS_ORIGIN = "*"
    response = curl.get(f"/{app}/jobs")
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response


def test_it_leaves_reserved_paths_to_django(curl: Client) -> None:
    # /api/jobs is not the jobs of an app called "api": the native API serves it as
    # /api/jobs/ (karmchari_site.middleware).
    response = curl.get("/api/jobs")
    assert response.status_code == 200 and "results" in response.json()
    assert curl.get("/admin/stats").status_code in (301, 302, 404)


@pytest.mark.parametrize("inst", ['#inst "2016-07-01"', '#inst "2016"'])
def test_it_reads_a_date_only_inst_as_midnight_utc(
    curl: Client, app: str, inst: str
) -> None:
    """Clojure's #inst reader takes a date or a bare year, as midnight UTC."""
    body = f'{{:job/name "dated" :job/command "true" :job/since {inst}}}'
    assert send(curl, "post", f"/{app}/jobs", body).status_code == 201
    response = send(
        curl, "post", f"/{app}/job/dated/executions", f"{{:business-date {inst}}}"
    )
    assert response.status_code == 201, response.content
    [run] = Execution.objects.filter(job__name="dated")
    assert run.parameters["business-date"].startswith(inst.split('"')[1][:4])


def test_it_refuses_a_job_name_longer_than_the_database_holds(
    curl: Client, app: str
) -> None:
    name = "j" * 201
    body = f'{{:job/name "{name}" :job/command "true"}}'
    response = send(curl, "post", f"/{app}/jobs", body)
    assert response.status_code == 400
    assert b"longer than 200 characters" in response.content
    assert not Job.objects.filter(name=name).exists()


TYPED_JOB = (
    '{:job/name "typed" :job/command "true" :level :log/debug '
    ':since #inst "2016-07-01T10:20:30.123Z" :owner #uuid "{uid}" '
    ':steps [{:id :s1 :on [:completed #inst "2016"]}] :label ":not-a-keyword"}'
)


def test_it_shows_keyword_inst_and_uuid_values_back_as_sent(
    curl: Client, app: str
) -> None:
    uid = uuid.uuid4()
    body = TYPED_JOB.replace("{uid}", str(uid))
    created = send(curl, "post", f"/{app}/jobs", body)
    assert created.status_code == 201, created.content
    for response in (created, curl.get(f"/{app}/job/typed")):
        raw = response.content.decode()
        shown = edn.loads(raw, keywords=True)
        assert shown["level"] == edn.Keyword("log/debug")
        assert shown["since"] == datetime(2016, 7, 1, 10, 20, 30, 123000, tzinfo=UTC)
        assert shown["owner"] == uid and f'#uuid "{uid}"' in raw
        step = shown["steps"][0]
        assert step["id"] == edn.Keyword("s1")
        assert step["on"] == [
            edn.Keyword("completed"),
            datetime(2016, 1, 1, tzinfo=UTC),
        ]
        # A string that looks like a keyword stays a string.
        assert shown["label"] == ":not-a-keyword"
    # The job is still the shell job its command makes; /api/ sees plain JSON.
    job = Job.objects.get(name="typed")
    assert (job.kind, job.spec) == (Job.Kind.SHELL, {"command": "true"})
    assert job.legacy["jobstreamer"]["definition"]["level"] == "log/debug"
    # JSON answers are unchanged: names, ISO instants and uuids as strings.
    answer = json.loads(
        curl.get(f"/{app}/job/typed", HTTP_ACCEPT="application/json").content
    )
    assert answer["level"] == "log/debug"
    assert answer["since"] == "2016-07-01T10:20:30.123Z"
    assert answer["owner"] == str(uid)
    assert answer["steps"] == [
        {"id": "s1", "on": ["completed", "2016-01-01T00:00:00.000Z"]}
    ]
    # An update keeps the types it sends, and only those.
    put = send(curl, "put", f"/{app}/job/typed", '{:job/command "true" :level "x"}')
    assert put.status_code == 200, put.content
    shown = edn.loads(curl.get(f"/{app}/job/typed").content, keywords=True)
    assert shown["level"] == "x" and "since" not in shown


def test_it_shows_run_parameters_back_as_sent(curl: Client, app: str) -> None:
    send(curl, "post", f"/{app}/jobs", '{:job/name "run" :job/command "true"}')
    uid = uuid.uuid4()
    body = f'{{:mode :full :at #inst "2016-07-01T00:00:00Z" :id #uuid "{uid}" :n "x"}}'
    response = send(curl, "post", f"/{app}/job/run/executions", body)
    assert response.status_code == 201, response.content
    execution = Execution.objects.get()
    for shown in (
        read(response),
        read(curl.get(f"/{app}/job/run/execution/{execution.pk}")),
    ):
        text = shown["job-execution/job-parameters"]
        assert edn.loads(text, keywords=True) == {
            "mode": edn.Keyword("full"),
            "at": datetime(2016, 7, 1, tzinfo=UTC),
            "id": uid,
            "n": "x",
        }
    assert execution.parameters["mode"] == "full"
    # The same string in JSON: an EDN text, as the original's pr-str.
    answer = json.loads(
        curl.get(
            f"/{app}/job/run/execution/{execution.pk}", HTTP_ACCEPT="application/json"
        ).content
    )
    assert ":mode :full" in answer["job-execution/job-parameters"]
    # The name the types are kept under is no parameter a client may send.
    execution.status = Execution.Status.SUCCEEDED
    execution.save(update_fields=["status"])
    reserved = json.dumps({"jobstreamer/edn-types": []})
    response = curl.post(
        f"/{app}/job/run/executions", reserved, content_type="application/json"
    )
    assert response.status_code == 400
    assert Execution.objects.count() == 1


def test_it_shows_sets_back_as_sets(curl: Client, app: str) -> None:
    body = (
        '{:job/name "tagged" :job/command "true" :tags #{:nightly "db"} '
        ":steps [{:id :s1 :on #{:completed}}]}"
    )
    created = send(curl, "post", f"/{app}/jobs", body)
    assert created.status_code == 201, created.content
    for response in (created, curl.get(f"/{app}/job/tagged")):
        raw = response.content.decode()
        assert ":on #{:completed}" in raw
        shown = edn.loads(raw, keywords=True)
        assert isinstance(shown["tags"], edn.EdnSet)
        assert set(shown["tags"]) == {edn.Keyword("nightly"), "db"}
    # Stored as JSON lists (what /api/ shows); JSON answers have arrays.
    job = Job.objects.get(name="tagged")
    assert sorted(job.legacy["jobstreamer"]["definition"]["tags"]) == ["db", "nightly"]
    answer = json.loads(
        curl.get(f"/{app}/job/tagged", HTTP_ACCEPT="application/json").content
    )
    assert answer["steps"] == [{"id": "s1", "on": ["completed"]}]
    # A run's parameters keep theirs too, in :job-execution/job-parameters.
    response = send(
        curl, "post", f"/{app}/job/tagged/executions", '{:only #{"a"} :none #{}}'
    )
    assert response.status_code == 201, response.content
    execution = Execution.objects.get()
    assert execution.parameters["only"] == ["a"]
    text = read(curl.get(f"/{app}/job/tagged/execution/{execution.pk}"))[
        "job-execution/job-parameters"
    ]
    # (Key order aside: PostgreSQL's jsonb keeps its own.)
    assert '#{"a"}' in text and ":none #{}" in text
    parameters = edn.loads(text, keywords=True)
    assert isinstance(parameters["none"], edn.EdnSet) and parameters["only"] == ["a"]


def test_it_lists_jobs_with_their_latest_and_next_executions(
    curl: Client, app: str, django_assert_num_queries: Any
) -> None:
    """As the original's default `with=execution`: its console shows them, and
    stops, abandons or restarts the latest run from the list."""
    for name in ("a", "b", "c"):
        send(curl, "post", f"/{app}/jobs", f'{{:job/name "{name}" :job/command "x"}}')
    send(
        curl,
        "post",
        f"/{app}/job/a/schedule",
        '{:schedule/cron-notation "0 0 * * * ?"}',
    )
    a, b = Job.objects.get(name="a"), Job.objects.get(name="b")
    Execution.objects.create(job=a, status=Execution.Status.SUCCEEDED)
    latest = Execution.objects.create(job=a, status=Execution.Status.FAILED)
    Execution.objects.create(job=b, status=Execution.Status.PENDING)
    # The user, the app, the count, the page, its schedules, its latest runs: as
    # many for 3 jobs as for 300.
    with django_assert_num_queries(6):
        response = curl.get(f"/{app}/jobs")
    results = {item["job/name"]: item for item in read(response)["results"]}
    shown = results["a"]["job/latest-execution"]
    assert shown["db/id"] == latest.pk
    assert shown["job-execution/batch-status"] == {"db/ident": "batch-status/failed"}
    start = results["a"]["job/next-execution"]["job-execution/start-time"]
    assert start == Schedule.objects.get(job=a).next_run_at
    assert results["b"]["job/latest-execution"]["job-execution/batch-status"] == {
        "db/ident": "batch-status/queued"
    }
    assert "job/next-execution" not in results["b"]
    assert "job/latest-execution" not in results["c"]


def test_it_shows_the_definition_as_edn_notation(curl: Client, app: str) -> None:
    """The original's :job/edn-notation, which its console reads the job from."""
    body = '{:job/name "n" :job/command "true" :level :log/debug}'
    send(curl, "post", f"/{app}/jobs", body)
    shown = read(curl.get(f"/{app}/job/n"))
    notation = edn.loads(shown["job/edn-notation"], keywords=True)
    assert notation == {
        "job/name": "n",
        "job/command": "true",
        "level": edn.Keyword("log/debug"),
    }
    # Sent back whole (a read-modify-write), it is not nested in itself.
    put = send(curl, "put", f"/{app}/job/n", edn.dumps(shown))
    assert put.status_code == 200, put.content
    again = read(curl.get(f"/{app}/job/n"))
    assert "job/edn-notation" not in edn.loads(again["job/edn-notation"])


def test_it_answers_a_refusal_with_message_and_messages(curl: Client, app: str) -> None:
    """`:messages` as the original's validation, `:message` as its other errors
    (its console shows a refused schedule from `:message`)."""
    send(curl, "post", f"/{app}/jobs", SHELL_JOB)
    response = send(
        curl,
        "post",
        f"/{app}/job/MyShell/schedule",
        '{:schedule/cron-notation "not cron"}',
    )
    assert response.status_code == 400
    shown = read(response)
    assert shown["messages"] and shown["message"] == shown["messages"][0]


def test_it_shows_a_whole_average_as_an_integer(curl: Client, app: str) -> None:
    send(curl, "post", f"/{app}/jobs", SHELL_JOB)
    Job.objects.filter(name="MyShell").update(success_count=2, duration_total=3.0)
    raw = curl.get(f"/{app}/job/MyShell").content.decode()
    assert ":average 1500}" in raw or ":average 1500 " in raw
    Job.objects.filter(name="MyShell").update(success_count=3, duration_total=1.0)
    assert read(curl.get(f"/{app}/job/MyShell"))["job/stats"]["average"] == Fraction(
        1000, 3
    )
