"""/metrics, scraped and parsed with the Prometheus client's own parser."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.test.utils import override_settings
from django.utils import timezone
from django_redis import get_redis_connection
from prometheus_client.parser import text_string_to_metric_families

from agents.models import Agent
from jobs import metrics, services
from jobs.models import App, Execution, Job
from jobs.runners import Outcome
from tests.integration.conftest import Processes, processes, queue  # noqa: F401
from tests.waiting import wait_for

TOKEN = "scrape-me"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def fresh_histograms() -> Iterator[None]:
    redis = get_redis_connection("default")
    redis.delete(metrics.DURATION_KEY, metrics.LAG_KEY)
    yield
    redis.delete(metrics.DURATION_KEY, metrics.LAG_KEY)


def scrape(client: Client, **headers: str) -> Samples:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def finish(execution: Execution, status: str, seconds: float) -> None:
    start = timezone.now() - timedelta(seconds=seconds)
    Execution.objects.filter(pk=execution.pk).update(
        status=Execution.Status.RUNNING, started_at=start
    )
    execution.refresh_from_db()
    services.execution_finish(execution=execution, outcome=Outcome(status=status))


@pytest.mark.django_db
def test_it_is_off_until_a_token_or_an_allow_list_is_set(client: Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 403
    assert b"KARMCHARI_METRICS_TOKEN" in response.content


@pytest.mark.django_db
@override_settings(KARMCHARI_METRICS_TOKEN=TOKEN)
def test_it_refuses_a_wrong_token(client: Client) -> None:
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
@override_settings(KARMCHARI_METRICS_ALLOW=["10.0.0.0/8"])
def test_it_admits_listed_networks_only(client: Client) -> None:
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.1").status_code == 401


@pytest.mark.django_db
@override_settings(KARMCHARI_METRICS_TOKEN=TOKEN)
def test_it_counts_executions_durations_agents_and_queue_depth(
    client: Client,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable,
    queue: str,  # noqa: F811
) -> None:
    app = make_app("ops")
    # A queue of its own (the fixture): a broker that outlives test runs (RabbitMQ)
    # keeps the messages of earlier runs.
    job = make_job(app=app, name="backup", queue=queue)
    with django_capture_on_commit_callbacks(execute=True):
        for status, seconds in [("succeeded", 0.3), ("succeeded", 20), ("failed", 2)]:
            finish(Execution.objects.create(job=job), status, seconds)
        services.job_trigger(job=job)  # pending, and its task waits in the queue
    Agent.objects.create(name="w1@host", status=Agent.Status.ONLINE)
    Agent.objects.create(name="w2@host", status=Agent.Status.OFFLINE)

    samples = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    labels = (("app", "ops"), ("job", "backup"))
    assert (
        samples[("karmchari_executions_stored", (*labels, ("status", "succeeded")))]
        == 2
    )
    assert (
        samples[("karmchari_executions_stored", (*labels, ("status", "failed")))] == 1
    )
    assert samples[("karmchari_executions_active", (("status", "pending"),))] == 1
    duration = "karmchari_execution_duration_seconds"
    assert samples[(f"{duration}_count", labels)] == 3
    assert samples[(f"{duration}_bucket", (*labels, ("le", "0.5")))] == 1
    assert samples[(f"{duration}_bucket", (*labels, ("le", "5.0")))] == 2
    assert samples[(f"{duration}_bucket", (*labels, ("le", "+Inf")))] == 3
    assert 22 < samples[(f"{duration}_sum", labels)] < 23
    assert samples[("karmchari_agents", (("status", "online"),))] == 1
    assert samples[("karmchari_agents", (("status", "offline"),))] == 1
    depth = ("karmchari_queue_depth", (("queue", queue),))
    assert samples[depth] == 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@override_settings(KARMCHARI_METRICS_TOKEN=TOKEN)
def test_it_adds_up_runs_from_several_worker_processes(
    client: Client,
    processes: Processes,  # noqa: F811
    queue: str,  # noqa: F811
    make_app: Callable[..., App],
) -> None:
    # Durations are kept per job id in Redis; ids of rolled-back test jobs come back
    # on SQLite, so start from empty histograms.
    get_redis_connection("default").delete(metrics.DURATION_KEY, metrics.LAG_KEY)
    processes.worker(queue, concurrency=3)
    app = make_app("it")
    job = services.job_create(
        app=app,
        name="quick",
        spec={"command": "true"},
        queue=queue,
        overlap_policy=Job.OverlapPolicy.ALLOW_ALL,
    )
    for _ in range(9):
        services.job_trigger(job=job)
    wait_for(
        lambda: Execution.objects.filter(job=job, status="succeeded").count() == 9,
        timeout=60,
    )
    workers = set(Execution.objects.filter(job=job).values_list("pid", flat=True))
    assert len(workers) == 9  # nine runs, spread over the pool's processes

    samples = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    labels = (("app", "it"), ("job", "quick"))
    assert samples[("karmchari_execution_duration_seconds_count", labels)] == 9
    assert (
        samples[("karmchari_executions_stored", (*labels, ("status", "succeeded")))]
        == 9
    )


@pytest.mark.django_db
@override_settings(KARMCHARI_METRICS_TOKEN=TOKEN)
def test_it_refuses_a_non_ascii_token_with_401() -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-m\xe9")
    assert response.status_code == 401


@pytest.mark.django_db
@override_settings(KARMCHARI_METRICS_ALLOW=["10.0.0.0/8"])
def test_it_admits_a_listed_ipv4_client_seen_on_a_dual_stack_socket(
    client: Client,
) -> None:
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.0.0.5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:11.0.0.5").status_code == 401


@pytest.mark.django_db
@override_settings(
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    KARMCHARI_METRICS_ALLOW=["127.0.0.1"],
)
def test_it_checks_the_client_behind_the_proxy_not_the_proxy(client: Client) -> None:
    """Behind the TLS proxy the allow-list is checked against the client the proxy
    saw (as the audit log and login limits do): listing the proxy's own host let
    every client through."""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    through_proxy = client.get(
        "/metrics",
        REMOTE_ADDR="127.0.0.1",
        HTTP_X_FORWARDED_FOR="203.0.113.9",
        HTTP_X_FORWARDED_PROTO="https",
    )
    assert through_proxy.status_code == 401


@pytest.mark.django_db
@override_settings(KARMCHARI_METRICS_TOKEN=TOKEN)
def test_it_counts_runs_with_counters_retention_cannot_lower(
    client: Client,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    from jobs import retention

    job = make_job(app=make_app("ops"), name="backup", keep_succeeded=2)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(5):
            finish(Execution.objects.create(job=job), "succeeded", 1)
    labels = (("app", "ops"), ("job", "backup"))
    runs = ("karmchari_job_runs_total", (*labels, ("result", "success")))
    stored = ("karmchari_executions_stored", (*labels, ("status", "succeeded")))
    before = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert (before[runs], before[stored]) == (5, 5)

    # Past the minute a run that has just ended is kept for.
    later = timezone.now() + retention.JUST_ENDED + timedelta(seconds=1)
    assert retention.executions_prune(now=later) == 3

    after = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert (after[runs], after[stored]) == (5, 2)  # the stored count is a gauge
    families = text_string_to_metric_families(
        client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    )
    kinds = {family.name: family.type for family in families}
    assert kinds["karmchari_executions_stored"] == "gauge"
    assert kinds["karmchari_notifications_failed"] == "gauge"
    assert kinds["karmchari_job_runs"] == "counter"


def test_it_keeps_its_redis_keys_under_the_cache_prefix(settings: Any) -> None:
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    assert f"{prefix}:metrics:duration" == metrics.DURATION_KEY
    assert f"{prefix}:metrics:fire_lag" == metrics.LAG_KEY
    assert f"{prefix}:schedules:changed" == services.SCHEDULE_CHANNEL


@pytest.mark.django_db
def test_it_forgets_the_histogram_of_a_deleted_job(
    make_job: Callable[..., Job], django_capture_on_commit_callbacks: Callable
) -> None:
    job = make_job()
    with django_capture_on_commit_callbacks(execute=True):
        finish(Execution.objects.create(job=job), "succeeded", 2)
    redis = get_redis_connection("default")
    mine = f"{job.pk}|".encode()

    def fields() -> list[bytes]:
        return [f for f in redis.hkeys(metrics.DURATION_KEY) if f.startswith(mine)]

    assert fields()
    with django_capture_on_commit_callbacks(execute=True):
        services.job_delete(job=job)
    assert fields() == []
