"""/metrics in the Prometheus text format.

Everything is read at scrape time from where it is already true, so the figures are
right however many web and worker processes there are (no per-process counters):

- counts from the database: executions by job and status (one GROUP BY), active
  executions, enabled schedules, agents by status, notification deliveries that failed;
- histograms from Redis: run durations and scheduled-run start lag are added up in one
  Redis hash when they happen (HINCRBY from whichever worker saw them), and read back
  here. A Redis without persistence that restarts resets them, which Prometheus treats
  as a counter reset;
- queue depth from the broker (a passive queue declare per queue, Redis or RabbitMQ).

Access: a bearer token (KARMCHARI_METRICS_TOKEN) or a client address in
KARMCHARI_METRICS_ALLOW (addresses or networks). With neither set, /metrics answers 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django_redis import get_redis_connection
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from agents.models import Agent
from audit.middleware import client_address
from jobs.models import Execution, Job, Schedule

logger = logging.getLogger(__name__)

# Under the cache's prefix, so instances sharing one Redis keep their own.
_PREFIX = settings.CACHES["default"].get("KEY_PREFIX") or "karmchari"
DURATION_KEY = f"{_PREFIX}:metrics:duration"
LAG_KEY = f"{_PREFIX}:metrics:fire_lag"
# Seconds. Jobs run from well under a second to hours.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 21600)
# Seconds a scheduled run started after its slot.
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


# --- Recording (called when an execution starts or ends) -----------------------------


def _bucket(value: float, buckets: Sequence[float]) -> str:
    for index, bound in enumerate(buckets):
        if value <= bound:
            return str(index)
    return "inf"


def _observe(
    pipe: Any, key: str, label: str, value: float, buckets: Sequence[float]
) -> None:
    """Queue one observation of the histogram `label` in the Redis hash `key`."""
    pipe.hincrby(key, f"{label}|{_bucket(value, buckets)}", 1)
    pipe.hincrby(key, f"{label}|count", 1)
    pipe.hincrbyfloat(key, f"{label}|sum", value)


def metrics_observe_execution(*, execution: Execution, pipe: Any = None) -> None:
    """A claimed scheduled run adds its start lag; a finished run its duration.

    Into `pipe` (a Redis pipeline the caller sends) when given, else sent at once.
    Lost (and logged) when Redis is down: metrics never fail a run."""
    observation: tuple[str, str, float, Sequence[float]] | None = None
    if execution.is_finished:
        duration = execution.duration
        if duration is not None:
            observation = (
                DURATION_KEY,
                str(execution.job_id),
                duration,
                DURATION_BUCKETS,
            )
    elif (
        execution.status == Execution.Status.RUNNING
        and execution.scheduled_for is not None
        and execution.started_at is not None
    ):
        lag = max(0.0, (execution.started_at - execution.scheduled_for).total_seconds())
        observation = (LAG_KEY, "all", lag, LAG_BUCKETS)
    if observation is None:
        return
    if pipe is not None:
        _observe(pipe, *observation)
        return
    try:
        own = get_redis_connection("default").pipeline(transaction=False)
        _observe(own, *observation)
        own.execute()
    except Exception:
        logger.warning("could not record a metric in Redis", exc_info=True)


def metrics_forget_jobs(job_ids: Sequence[int]) -> None:
    """Drop deleted jobs' duration histograms, so the hash does not grow forever."""
    parts = [*map(str, range(len(DURATION_BUCKETS))), "inf", "count", "sum"]
    fields = [f"{job_id}|{part}" for job_id in job_ids for part in parts]
    if not fields:
        return
    try:
        get_redis_connection("default").hdel(DURATION_KEY, *fields)
    except Exception:
        logger.warning("could not forget deleted jobs' metrics", exc_info=True)


# --- Reading at scrape time ----------------------------------------------------------


def _histograms(key: str) -> dict[str, dict[str, float]]:
    raw = get_redis_connection("default").hgetall(key)
    result: dict[str, dict[str, float]] = defaultdict(dict)
    for field, value in raw.items():
        label, _, part = field.decode().rpartition("|")
        result[label][part] = float(value)
    return result


def _histogram_buckets(
    fields: dict[str, float], buckets: Sequence[float]
) -> list[tuple[str, float]]:
    cumulative, total = [], 0.0
    for index, bound in enumerate(buckets):
        total += fields.get(str(index), 0.0)
        cumulative.append((_bound(bound), total))
    cumulative.append(("+Inf", fields.get("count", 0.0)))
    return cumulative


def _bound(value: float) -> str:
    return str(float(value)) if not math.isinf(value) else "+Inf"


def _queue_depths(queues: set[str]) -> dict[str, int]:
    from karmchari_site.celery import app

    depths: dict[str, int] = {}
    with app.connection_for_read() as connection:
        for queue in sorted(queues):
            try:
                # A fresh channel each time: AMQP closes one on a missing queue.
                channel: Any = connection.channel()
                try:
                    declared = channel.queue_declare(queue=queue, passive=True)
                    depths[queue] = int(declared.message_count)
                finally:
                    channel.close()
            except Exception:
                logger.debug("queue %s has no depth to report", queue, exc_info=True)
    return depths


class KarmchariCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        jobs = {
            pk: (app, name)
            for pk, app, name in Job.objects.values_list("pk", "app__name", "name")
        }
        yield from self._executions(jobs)
        yield from self._histograms(jobs)
        yield from self._queues()
        agents = GaugeMetricFamily(
            "karmchari_agents", "Agents (workers) by status.", labels=["status"]
        )
        by_status = dict(
            Agent.objects.order_by()
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        for status in Agent.Status.values:
            agents.add_metric([status], by_status.get(status, 0))
        yield agents
        schedules = GaugeMetricFamily(
            "karmchari_schedules_enabled", "Enabled schedules of enabled jobs."
        )
        schedules.add_metric(
            [], Schedule.objects.filter(enabled=True, job__enabled=True).count()
        )
        yield schedules
        yield from _extra_metrics()

    def _executions(self, jobs: dict[int, tuple[str, str]]) -> Iterator[Metric]:
        # A gauge: retention deletes rows, and a counter may never go down.
        total = GaugeMetricFamily(
            "karmchari_executions_stored",
            "Executions by job and status still stored (retention deletes old ones).",
            labels=["app", "job", "status"],
        )
        active = GaugeMetricFamily(
            "karmchari_executions_active",
            "Executions pending, running or paused right now.",
            labels=["status"],
        )
        active_counts = dict.fromkeys(Execution.ACTIVE_STATUSES, 0)
        rows = (
            Execution.objects.order_by()
            .values_list("job_id", "status")
            .annotate(n=Count("id"))
        )
        for job_id, status, n in rows:
            if status in active_counts:
                active_counts[status] += n
            if job_id in jobs:
                total.add_metric([*jobs[job_id], status], n)
        for status, n in active_counts.items():
            active.add_metric([status], n)
        yield total
        yield active
        runs = CounterMetricFamily(
            "karmchari_job_runs",
            "Finished runs of each job by result, as its counters keep them (they "
            "only go up; retention does not touch them).",
            labels=["app", "job", "result"],
        )
        counters = Job.objects.values_list("pk", "success_count", "error_count")
        for job_id, successes, errors in counters:
            if job_id in jobs:
                runs.add_metric([*jobs[job_id], "success"], successes)
                runs.add_metric([*jobs[job_id], "error"], errors)
        yield runs

    def _histograms(self, jobs: dict[int, tuple[str, str]]) -> Iterator[Metric]:
        durations = HistogramMetricFamily(
            "karmchari_execution_duration_seconds",
            "Run time of finished executions (paused time excluded).",
            labels=["app", "job"],
        )
        lag = HistogramMetricFamily(
            "karmchari_fire_lag_seconds",
            "How long after its slot a scheduled execution started.",
        )
        try:
            by_job = _histograms(DURATION_KEY)
            lags = _histograms(LAG_KEY)
        except Exception:
            logger.warning("metrics: Redis unavailable; no histograms", exc_info=True)
            by_job, lags = {}, {}
        for label, fields in sorted(by_job.items()):
            if label.isdigit() and int(label) in jobs:
                durations.add_metric(
                    list(jobs[int(label)]),
                    _histogram_buckets(fields, DURATION_BUCKETS),
                    fields.get("sum", 0.0),
                )
        fields = lags.get("all", {})
        lag.add_metric(
            [], _histogram_buckets(fields, LAG_BUCKETS), fields.get("sum", 0)
        )
        yield durations
        yield lag

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "karmchari_queue_depth",
            "Messages waiting in each job queue of the broker.",
            labels=["queue"],
        )
        queues = set(Job.objects.values_list("queue", flat=True).distinct())
        for names in Agent.objects.values_list("queues", flat=True):
            queues.update(names or [])
        try:
            depths = _queue_depths(queues)
        except Exception:
            logger.warning("metrics: broker unavailable; no queue depth", exc_info=True)
            depths = {}
        for queue, n in sorted(depths.items()):
            depth.add_metric([queue], n)
        yield depth


def _extra_metrics() -> Iterator[Metric]:
    """Metrics of other parts (notifications), which import this module's names."""
    from jobs import notifications

    yield from notifications.notification_metrics()


# --- The view ------------------------------------------------------------------------


def _allowed(request: HttpRequest) -> bool:
    token = settings.KARMCHARI_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        # Bytes: compare_digest refuses str with non-ASCII characters (a 500).
        given = header.removeprefix("Bearer ").strip().encode("utf-8", "replace")
        return hmac.compare_digest(given, token.encode())
    # Behind the TLS proxy, the client the proxy saw, not the proxy: an allow-list
    # naming the proxy's host would let everyone through.
    address = client_address(request) or ""
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped:
        client = client.ipv4_mapped  # an IPv4 client on a dual-stack socket
    return any(
        client in ipaddress.ip_network(allowed, strict=False)
        for allowed in settings.KARMCHARI_METRICS_ALLOW
    )


def metrics_render() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KarmchariCollector())
    return generate_latest(registry)


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not settings.KARMCHARI_METRICS_TOKEN and not settings.KARMCHARI_METRICS_ALLOW:
        return HttpResponse(
            "Metrics are off: set KARMCHARI_METRICS_TOKEN or "
            "KARMCHARI_METRICS_ALLOW.\n",
            status=403,
            content_type="text/plain",
        )
    if not _allowed(request):
        response = HttpResponse(
            "A valid bearer token or an allowed address is needed.\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_render(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
