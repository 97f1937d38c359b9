"""Load: N executions queued at once, two worker processes drain them (beat running,
as in production) while an operator keeps using the API and the admin.

Every execution must end `succeeded`, run exactly once (its command appends its id to
a file), and be the only row of its run (no retry, no second attempt); no request to
the web server may fail or time out. The latencies seen meanwhile (p50/p95/p99 per
endpoint), the drain rate and the duplicate tasks beat's outbox sweep sent are logged
and, with KARMCHARI_LOAD_REPORT=path, appended to that file as one JSON line.

    KARMCHARI_LOAD_EXECUTIONS=5000 KARMCHARI_LOAD_REPORT=load.jsonl \\
      .venv/bin/python -m pytest tests/chaos/test_load.py --log-cli-level INFO

The default size is small enough for CI (both of its runs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from amqp.exceptions import ChannelError
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Max, Min

from jobs import services
from jobs.models import Execution, Job
from karmchari_site.celery import app as celery_app
from tests.chaos.conftest import free_port
from tests.integration.conftest import Processes
from tests.tokens import make_token
from tests.waiting import wait_for

logger = logging.getLogger(__name__)

FINAL = Execution.FINAL_STATUSES

EXECUTIONS = int(os.environ.get("KARMCHARI_LOAD_EXECUTIONS", "1000"))
WORKERS = 2
# Pool processes per worker: the machine this was sized on has two cores.
CONCURRENCY = int(os.environ.get("KARMCHARI_LOAD_CONCURRENCY", "2"))
# The drain must go at least this fast (executions per second) or the test fails: a
# bound against a stall, a fifth of the slowest rate measured on two shared cores
# (docs/reliability.md).
MIN_RATE = 10.0
DRAIN_SECONDS = 60 + EXECUTIONS / MIN_RATE
# One request taking longer than this is a failure: the console did not answer.
REQUEST_TIMEOUT = 10.0
# Between two requests of the prober: an operator clicking around, not a flood.
PROBE_PAUSE = 0.05

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True),
    # Two bounded waits (the drain, then any duplicates left queued) and start-up.
    pytest.mark.timeout(2 * DRAIN_SECONDS + 120),
]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass
class Probe:
    name: str
    session: requests.Session
    url: str


@dataclass
class Prober:
    """Times GET requests, one at a time round the probes, until stopped. Anything
    but a 200 (a 5xx, a redirect to the login page, a timeout, a reset connection)
    is a failure."""

    probes: list[Probe]
    # Per probe: (seconds since `epoch` when the request was sent, its latency).
    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # When the measured period began (perf_counter), set once the load starts; the
    # requests sent before it are a warm-up.
    epoch: float = math.inf
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for probe in self.probes:
                self._probe(probe)
                if self.stop.wait(PROBE_PAUSE):
                    return

    def _probe(self, probe: Probe) -> None:
        started = time.perf_counter()
        try:
            response = probe.session.get(
                probe.url, timeout=REQUEST_TIMEOUT, allow_redirects=False
            )
        except requests.RequestException as exc:
            self.failures.append(f"{probe.name}: {exc!r}")
            return
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            self.failures.append(
                f"{probe.name}: HTTP {response.status_code} {response.text[:300]!r}"
            )
            return
        self.latencies.setdefault(probe.name, []).append(
            (started - self.epoch, elapsed)
        )

    def summary(self) -> dict[str, dict[str, float]]:
        """Percentiles per probe of the requests sent since `epoch`, and when the
        slowest was sent (seconds since `epoch`), to tell what it met."""
        figures = {}
        for name, everything in sorted(self.latencies.items()):
            samples = [sample for sample in everything if sample[0] >= 0]
            if not samples:
                continue
            values = [latency for _, latency in samples]
            slowest_at, slowest = max(samples, key=lambda sample: sample[1])
            figures[name] = {
                "requests": len(values),
                "p50_ms": round(percentile(values, 0.50) * 1000, 1),
                "p95_ms": round(percentile(values, 0.95) * 1000, 1),
                "p99_ms": round(percentile(values, 0.99) * 1000, 1),
                "max_ms": round(slowest * 1000, 1),
                "max_at_s": round(slowest_at, 2),
            }
        return figures


def start_web(processes: Processes) -> str:
    port = free_port()
    web = processes.web(port)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if web.poll() is not None:
            raise AssertionError(f"the web server exited:\n{processes.logs()}")
        try:
            return requests.get(f"{base}/admin/login/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(answers, timeout=60, interval=0.2)
    return base


def admin_session(base: str, user: User, password: str) -> requests.Session:
    """A browser's session, logged in through the admin's login form."""
    session = requests.Session()
    login = f"{base}/admin/login/"
    session.get(login, timeout=REQUEST_TIMEOUT)
    response = session.post(
        login,
        data={
            "username": user.get_username(),
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": login},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 200 and "Log out" in response.text, response.text
    return session


def start_workers(processes: Processes, queue: str) -> list[str]:
    """Two separate `celery worker` processes on the queue, both ready to consume;
    answers their node names."""
    names = [f"load{i}-{queue}" for i in range(1, WORKERS + 1)]
    workers = [
        processes.worker(queue, concurrency=CONCURRENCY, name=name) for name in names
    ]
    logs = [processes.log_dir / f"worker-{name}.log" for name in names]

    def ready() -> bool:
        check_alive(processes, workers)
        return all(" ready." in log.read_text(errors="replace") for log in logs)

    wait_for(ready, timeout=60, interval=0.2)
    return names


def check_alive(processes: Processes, children: list[Any]) -> None:
    if any(child.poll() is not None for child in children):
        raise AssertionError(f"a process exited under load:\n{processes.logs()}")


def queue_all(job: Job, count: int) -> list[int]:
    """Create every execution in one transaction; their tasks are sent when it
    commits, all in one burst, before anything waits for them."""
    with transaction.atomic():
        return [services.job_trigger(job=job).pk for _ in range(count)]


def queued(queue: str) -> int:
    """Messages waiting in the broker queue (not those a worker holds)."""
    with celery_app.connection_for_write() as conn:
        channel: Any = conn.default_channel  # kombu's stubs lack queue_declare
        try:
            return int(channel.queue_declare(queue, passive=True)[1])
        except ChannelError as exc:
            # Kombu's Redis transport has no empty queues: an empty list is no key.
            if str(exc.reply_code) == "404":
                return 0
            raise


def broker_kind() -> str:
    scheme = urlsplit(settings.CELERY_BROKER_URL).scheme
    return "embedded redis" if settings.EMBEDDED_REDIS else scheme


def report(figures: dict[str, Any]) -> None:
    logger.info("load: %s", json.dumps(figures, indent=2))
    path = os.environ.get("KARMCHARI_LOAD_REPORT")
    if path:
        with Path(path).open("a") as out:
            out.write(json.dumps(figures) + "\n")


def test_it_drains_a_burst_with_two_workers_while_the_api_and_admin_answer(
    processes: Processes,
    queue: str,
    tmp_path: Path,
    admin_user: User,
    make_job: Callable[..., Job],
) -> None:
    runs = tmp_path / "runs"
    job = make_job(
        f'echo "$KARMCHARI_EXECUTION_ID" >> {runs}',
        queue=queue,
        overlap_policy=Job.OverlapPolicy.ALLOW_ALL,
    )
    base = start_web(processes)
    names = start_workers(processes, queue)
    # Beat too, as in production: its housekeeping (agent liveness, the outbox
    # sweep) runs through the load.
    processes.beat()
    children = [process for process, _ in processes.running]

    api = requests.Session()
    api.headers["Authorization"] = f"Token {make_token(admin_user).key}"
    admin = admin_session(base, admin_user, "password")
    prober = Prober(
        [
            Probe("api executions", api, f"{base}/api/executions/?job={job.pk}"),
            Probe("api job", api, f"{base}/api/jobs/{job.pk}/"),
            Probe("api stats", api, f"{base}/api/stats/"),
            Probe("admin executions", admin, f"{base}/admin/jobs/execution/"),
        ]
    )

    # The console is in use before the burst: first requests (a token's first use is
    # recorded, a write) are not what is measured.
    def warmed_up() -> bool:
        assert prober.failures == []
        return len(prober.latencies) == len(prober.probes)

    thread = threading.Thread(target=prober.run, name="load-prober", daemon=True)
    batch = Execution.objects.filter(job=job)
    try:
        thread.start()
        wait_for(warmed_up, timeout=30)
        queued_at = datetime.now(tz=UTC)
        started = prober.epoch = time.perf_counter()
        ids = queue_all(job, EXECUTIONS)
        queue_seconds = time.perf_counter() - started

        def drained() -> bool:
            check_alive(processes, children)
            return batch.filter(status__in=FINAL).count() >= EXECUTIONS

        try:
            wait_for(drained, timeout=DRAIN_SECONDS, interval=0.5)
        except AssertionError as exc:
            counts = Counter(batch.values_list("status", flat=True))
            raise AssertionError(f"{exc}; statuses {dict(counts)}") from None
    finally:
        prober.stop.set()
        thread.join(timeout=REQUEST_TIMEOUT + 5)
    # Tasks still queued now are duplicates (every execution has ended); the claim
    # makes them no-ops, but anything queued behind them waits until they are gone.
    left_in_queue = queued(queue)
    drained_at = time.perf_counter()

    def emptied() -> bool:
        check_alive(processes, children)
        return queued(queue) == 0

    wait_for(emptied, timeout=DRAIN_SECONDS, interval=0.5)
    queue_empty_seconds = time.perf_counter() - drained_at

    rows = list(
        batch.values("pk", "status", "attempt", "retry_of", "worker", "started_at")
    )
    span = batch.aggregate(first=Min("started_at"), last=Max("finished_at"))
    drain_seconds = (span["last"] - queued_at).total_seconds()
    # Each run appends its execution id to `runs`: what really ran, and how often.
    ran = Counter(int(line) for line in runs.read_text().split())
    succeeded = {row["pk"] for row in rows if row["status"] == "succeeded"}
    lost = sorted(pk for pk in ids if pk not in succeeded or pk not in ran)
    duplicates = sorted(pk for pk, times in ran.items() if times > 1)
    strangers = sorted(set(ran) - set(ids))
    extra_rows = sorted({row["pk"] for row in rows} - set(ids))
    retried = [
        row["pk"] for row in rows if row["attempt"] != 1 or row["retry_of"] is not None
    ]
    per_worker = Counter(row["worker"].split("@")[0] for row in rows)
    figures = {
        "date": queued_at.date().isoformat(),
        "database": connection.vendor,
        "broker": broker_kind(),
        "executions": EXECUTIONS,
        "workers": WORKERS,
        "concurrency_per_worker": CONCURRENCY,
        "queue_seconds": round(queue_seconds, 2),
        "drain_seconds": round(drain_seconds, 2),
        "executions_per_second": round(EXECUTIONS / drain_seconds, 1),
        "run_seconds": round((span["last"] - span["first"]).total_seconds(), 2),
        "statuses": dict(Counter(row["status"] for row in rows)),
        "per_worker": dict(per_worker),
        "lost": len(lost),
        "duplicates": len(duplicates),
        "extra_rows": len(extra_rows),
        # Tasks beat's outbox sweep sent again for executions still pending after
        # KARMCHARI_OUTBOX_SECONDS: in a backlog, waiting in the queue looks like
        # a lost message (docs/reliability.md).
        "outbox_resent": sum(
            int(count)
            for count in re.findall(
                r"outbox: re-sent (\d+)", (processes.log_dir / "beat.log").read_text()
            )
        ),
        "left_in_queue": left_in_queue,
        "queue_empty_seconds": round(queue_empty_seconds, 2),
        # Deliveries the claim refused: their execution had already run.
        "redelivered": sum(
            log.read_text(errors="replace").count("is not pending; nothing to run")
            for log in processes.log_dir.glob("worker-*.log")
        ),
        "request_failures": len(prober.failures),
        "endpoints": prober.summary(),
    }
    report(figures)

    assert prober.failures == []
    assert lost == []
    assert duplicates == []
    assert strangers == []
    assert extra_rows == []  # no retry or other run of this job
    assert retried == []
    assert len(rows) == EXECUTIONS
    # Both workers took a share, and nobody else ran any.
    assert set(per_worker) == set(names)
    # Each was asked, and answered, while the burst drained.
    assert set(figures["endpoints"]) == {probe.name for probe in prober.probes}
    # Concurrent ends were all folded into the job's counters.
    job.refresh_from_db()
    assert (job.success_count, job.error_count) == (EXECUTIONS, 0)
