"""Dispatch: no-op executions per second against bare Celery no-op tasks per second.

One real Celery worker (prefork, same settings and concurrency for all) on a queue
and a Redis DB of the run's own. In alternating rounds it measures, in this order:

- celery: `bench.noop` tasks (defined here; each only INCRs a Redis counter so the
  run can see it finish) sent with one producer, until the worker has run them all;
- ours (no-op): `services.job_trigger` of a job whose runner does nothing (this
  worker maps `task` jobs to NoopRunner), from the service call until every
  execution is recorded finished in the database: the engine's whole path (create,
  send, claim, control listener, live log, finish, stats, dependants) and nothing else;
- floor: what any durably recorded run costs at least: insert a pending row, send a
  task that claims it and marks it finished (two conditional UPDATEs), nothing else,
  each a prepared statement on PostgreSQL;
- ours (shell): as ours (no-op) for a shell job `true` (adds fork/exec and supervision);

It also measures, in this process, the shell runner's overhead over a bare fork/exec:
`ShellRunner.run` of `true` against `subprocess.run(["/bin/true"])`.

    .venv/bin/python bench/dispatch.py            # 5 rounds: 2,000 tasks, 1,000 runs
    .venv/bin/python bench/dispatch.py --quick    # 3 rounds: 600 tasks, 300 runs

Each ratio is taken within a round (ours against the Celery run just before it, on
the same machine a few seconds apart) and the median over rounds is reported, with
the lowest and highest: this machine's speed drifts between rounds, and a ratio of
medians taken from different rounds mixes that drift in.

Targets (DESIGN.md "Quality bars"): ratio (no-op executions / Celery tasks) >= 0.5;
shell overhead <= 5 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from celery.signals import worker_process_init  # noqa: E402

from karmchari_site.celery import app  # noqa: E402

REDIS_DB = 13
COUNTER_ENV = "KARMCHARI_BENCH_COUNTER"
_redis: Any = None


class NoopRunner:
    """The smallest runner: nothing to run, so what is measured is the engine's own
    path (claim, control listener, live log, finish, stats, dependants)."""

    def validate(self, spec: Any) -> dict[str, Any]:
        return dict(spec)

    def run(self, spec: dict[str, Any], context: Any) -> Any:
        from jobs.runners import Outcome

        return Outcome(status="succeeded", exit_code=0)


@worker_process_init.connect
def install_noop_runner(**_: Any) -> None:
    """In this benchmark's worker only: `task` jobs run the no-op runner in place
    (none other exist here), so a no-op execution needs no second Celery task."""
    from jobs.services import executions

    real = executions.get_runner
    executions.get_runner = lambda kind: NoopRunner() if kind == "task" else real(kind)


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """The baseline: as little as a task can do and still be seen to have run."""
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(os.environ["REDIS_URL"])
    _redis.incr(os.environ[COUNTER_ENV])


@app.task(name="bench.claim_finish", ignore_result=True)
def claim_finish(execution_id: int) -> None:
    """The durable floor: the two writes any recorded run needs (a conditional claim
    and a finish), each one commit, as lean as they come: prepared statements on
    PostgreSQL, the ORM elsewhere; nothing else."""
    from django.db import connection
    from django.utils import timezone

    from jobs.models import Execution

    if connection.vendor != "postgresql":
        pending = Execution.objects.filter(pk=execution_id, status="pending")
        pending.update(status="running", started_at=timezone.now())
        running = Execution.objects.filter(pk=execution_id, status="running")
        running.update(status="succeeded", finished_at=timezone.now())
        return
    from jobs import pgsql

    table = Execution._meta.db_table
    for sql in (
        f"UPDATE {table} SET status = 'running', started_at = now() "
        "WHERE id = %s AND status = 'pending'",
        f"UPDATE {table} SET status = 'succeeded', finished_at = now() "
        "WHERE id = %s AND status = 'running'",
    ):
        pgsql._execute(sql, [execution_id], fetch=False)


def _until_finished(
    ids: list[int], job: Any, started_wall: float, started: float
) -> float:
    """Runs per second, from `started` to the database's stamp of the last end."""
    from django.db.models import Max

    from bench.lib.common import wait_until
    from jobs.models import Execution

    count = len(ids)
    # A range of ids, not a list of them, polled every 50 ms: watching costs the
    # database little while it works (the end is taken from its own stamp below).
    batch = Execution.objects.filter(job=job, pk__gte=min(ids), pk__lte=max(ids))

    def all_finished() -> bool:
        return batch.filter(status__in=Execution.FINAL_STATUSES).count() == count

    wait_until(all_finished, timeout=300, interval=0.05)
    elapsed = time.perf_counter() - started
    failed = batch.exclude(status=Execution.Status.SUCCEEDED).count()
    if failed:
        raise SystemExit(f"{failed} of {count} executions did not succeed")
    # The database's own stamp of the last finish is closer than our poll.
    last = batch.aggregate(last=Max("finished_at"))["last"]
    if last is not None:
        elapsed = min(elapsed, max(1e-6, last.timestamp() - started_wall))
    return count / elapsed


def run_floor(count: int, job: Any) -> float:
    """Rows per second: insert a pending execution (one prepared INSERT on
    PostgreSQL) and send `bench.claim_finish`."""
    from django.db import connection

    from jobs import pgsql
    from jobs.models import Execution

    started_wall, started = time.time(), time.perf_counter()
    ids = []
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            execution = Execution(job=job)
            if connection.vendor == "postgresql":
                pgsql.insert(execution)
            else:
                execution.save(force_insert=True)
            ids.append(execution.pk)
            claim_finish.apply_async(
                (execution.pk,), queue=job.queue, producer=producer
            )
    return _until_finished(ids, job, started_wall, started)


def run_celery(count: int, queue: str, counter: Any, key: str) -> float:
    """Tasks per second: first send to the counter reaching `count`."""
    from bench.lib.common import wait_until

    counter.delete(key)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            noop.apply_async(queue=queue, producer=producer)
    wait_until(lambda: int(counter.get(key) or 0) >= count, timeout=120)
    return count / (time.perf_counter() - started)


def run_ours(count: int, job: Any) -> float:
    """Executions per second: first service call to the last recorded finish."""
    from jobs import services

    started_wall, started = time.time(), time.perf_counter()
    ids = [services.job_trigger(job=job).pk for _ in range(count)]
    return _until_finished(ids, job, started_wall, started)


def shell_overhead(samples: int) -> dict[str, float]:
    """Median milliseconds of ShellRunner.run("true") and of a bare /bin/true."""
    from jobs.runners import RunContext
    from jobs.runners.shell import ShellRunner

    runner = ShellRunner()
    spec = runner.validate({"command": "true"})
    context = RunContext(execution_id=0, job_name="bench", app_name="bench", timeout=0)
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(samples):  # interleaved, so both see the same machine
        t = time.perf_counter()
        outcome = runner.run(spec, context)
        ours.append((time.perf_counter() - t) * 1000)
        assert outcome.status == "succeeded", outcome
        t = time.perf_counter()
        subprocess.run(["/bin/true"], check=True)
        bare.append((time.perf_counter() - t) * 1000)
    return {
        "shell_ms": statistics.median(ours),
        "bare_true_ms": statistics.median(bare),
        "shell_overhead_ms": statistics.median(ours) - statistics.median(bare),
        "shell_overhead_mean_ms": statistics.fmean(ours) - statistics.fmean(bare),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    rounds, n_celery, n_ours, n_shell = (
        (3, 600, 300, 100) if args.quick else (5, 2000, 1000, 500)
    )

    from bench.lib.common import Worker, bench_environment, setup_django

    key = f"bench-dispatch-{os.getpid()}"
    queue = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
    with bench_environment("dispatch", REDIS_DB) as env:
        env[COUNTER_ENV] = key
        os.environ[COUNTER_ENV] = key
        vendor = setup_django()
        import redis
        from django.conf import settings

        from jobs.models import App, Job

        counter = redis.Redis.from_url(settings.REDIS_URL)
        bench_app = App.objects.create(name="bench")
        noop_job, shell_job = (
            Job.objects.create(
                app=bench_app,
                name=name,
                kind=kind,
                spec=spec,
                queue=queue,
                overlap_policy=Job.OverlapPolicy.ALLOW_ALL,
            )
            for name, kind, spec in (
                ("noop", Job.Kind.TASK, {"task": "bench.noop"}),
                ("true", Job.Kind.SHELL, {"command": "true"}),
            )
        )
        worker = Worker(
            app="bench.dispatch:app",
            queue=queue,
            concurrency=args.concurrency,
            env=env,
            log=Path(settings.DATA_DIR) / "worker.log",
        )
        rates: dict[str, list[float]] = {
            "celery": [],
            "noop": [],
            "floor": [],
            "shell": [],
        }
        try:
            # Warm up every path (worker start, pool, connections) before timing.
            run_celery(50, queue, counter, key)
            run_floor(20, noop_job)
            run_ours(20, noop_job)
            run_ours(20, shell_job)
            worker.check()
            for i in range(rounds):
                rates["celery"].append(run_celery(n_celery, queue, counter, key))
                rates["noop"].append(run_ours(n_ours, noop_job))
                rates["floor"].append(run_floor(n_ours, noop_job))
                rates["shell"].append(run_ours(n_ours, shell_job))
                print(
                    f"round {i + 1}: "
                    + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()),
                    flush=True,
                )
            worker.check()
        finally:
            worker.stop()
            counter.delete(key)
        shell = shell_overhead(n_shell)

    def ratios(name: str) -> list[float]:
        """Per round: `name`'s rate over that round's Celery rate."""
        return [
            ours / celery
            for ours, celery in zip(rates[name], rates["celery"], strict=True)
        ]

    figures = {
        "ours_per_s": statistics.median(rates["noop"]),
        "celery_per_s": statistics.median(rates["celery"]),
        "ratio": statistics.median(ratios("noop")),
        "ratio_min": min(ratios("noop")),
        "ratio_max": max(ratios("noop")),
        "floor_per_s": statistics.median(rates["floor"]),
        "floor_ratio": statistics.median(ratios("floor")),
        "ours_shell_per_s": statistics.median(rates["shell"]),
        "shell_ratio": statistics.median(ratios("shell")),
        **shell,
        "concurrency": args.concurrency,
    }
    print(f"database={vendor} worker concurrency={args.concurrency}")
    print(" ".join(f"{k}={v:.3g}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
