"""Where a no-op execution's time goes, next to bare Celery and the durable floor.

bench/dispatch.py gives the ratio; this says what it is made of, in one run:

- CPU per run by process (psutil), during rounds of bare Celery no-op tasks, the
  durable floor and our no-op executions on one real worker (bench/dispatch.py's
  worker, tasks and runner): this process (the producer), the worker's main process,
  its pool processes, everything else on the machine (PostgreSQL, Redis, the
  kernel), and the share of the machine's CPU left idle;
- on PostgreSQL on this host, the database's own CPU per statement (its backend's
  CPU time in /proc): the trigger's INSERT, our claim and end (jobs/pgsql.py), and
  the floor's two bare UPDATEs.

    .venv/bin/python bench/dispatch_parts.py            # 2 rounds of 1,500 runs
    .venv/bin/python bench/dispatch_parts.py --quick    # 1 round of 500 runs

Figures are milliseconds per run (per statement for `pg_*`). Ends with one line of
key=value figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench import dispatch  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def cpu_per_run(
    label: str, runs: int, work: Callable[[], float], worker_pid: int
) -> dict[str, float]:
    """Milliseconds of CPU per run by process group while `work` runs."""
    main = psutil.Process(worker_pid)
    groups = {
        "producer": [psutil.Process()],
        "worker_main": [main],
        "worker_pool": main.children(recursive=True),
    }
    before = {name: _cpu_seconds(members) for name, members in groups.items()}
    busy, wall = _busy_seconds(), time.perf_counter()
    rate = work()
    wall, busy = time.perf_counter() - wall, _busy_seconds() - busy
    figures = {
        name: (_cpu_seconds(members) - before[name]) / runs * 1000
        for name, members in groups.items()
    }
    figures["rest"] = busy / runs * 1000 - sum(figures.values())
    figures["total"] = busy / runs * 1000
    figures["idle_share"] = max(0.0, 1 - busy / (wall * psutil.cpu_count()))
    figures["per_s"] = rate
    shown = " ".join(f"{name}={value:.2f}" for name, value in figures.items())
    print(f"{label}: {shown}", flush=True)
    return figures


def _backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def statement_costs(job: Any, count: int) -> dict[str, float]:
    """PostgreSQL CPU (ms) per statement, from its backend's own CPU time."""
    from django.db import connection
    from django.utils import timezone

    from jobs import pgsql
    from jobs.models import Execution

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    if not Path(f"/proc/{backend}/stat").exists():
        print("PostgreSQL is not on this host: statement costs skipped")
        return {}
    table = pgsql._quote(Execution._meta.db_table)
    floor_claim = (
        f"UPDATE {table} SET status = 'running', started_at = now() "
        "WHERE id = %s AND status = 'pending'"
    )
    floor_end = (
        f"UPDATE {table} SET status = 'succeeded', finished_at = now() "
        "WHERE id = %s AND status = 'running'"
    )

    def ours_end(execution: Execution) -> None:
        ended = {"status": "succeeded", "exit_code": 0, "output": "", "error": ""}
        ended |= {"reason": "", "finished_at": timezone.now()}
        pgsql.finish(execution=execution, ended=ended, duration=0.001)

    def timed(each: Callable[[Any], Any], items: list[Any]) -> tuple[float, list[Any]]:
        start = _backend_cpu(backend)
        results = [each(item) for item in items]
        return (_backend_cpu(backend) - start) / len(items) * 1000, results

    def claim(row: Execution) -> Execution | None:
        return pgsql.claim(execution_id=row.pk, worker="parts", now=timezone.now())

    samples: dict[str, list[float]] = {}
    for _ in range(3):
        rows = [Execution(job=job) for _ in range(count)]
        samples.setdefault("pg_insert", []).append(timed(pgsql.insert, rows)[0])
        cost, claimed = timed(claim, rows)
        samples.setdefault("pg_claim", []).append(cost)
        samples.setdefault("pg_end", []).append(timed(ours_end, claimed)[0])
        rows = [Execution(job=job) for _ in range(count)]
        for row in rows:
            pgsql.insert(row)
        ids = [row.pk for row in rows]
        for name, sql in (("pg_floor_claim", floor_claim), ("pg_floor_end", floor_end)):

            def bare(pk: int, sql: str = sql) -> int:
                return int(pgsql._execute(sql, [pk], fetch=False))

            samples.setdefault(name, []).append(timed(bare, ids)[0])
    costs = {name: statistics.median(values) for name, values in samples.items()}
    print(" ".join(f"{name}={value:.3f}" for name, value in costs.items()))
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    rounds, runs = (1, 500) if args.quick else (2, 1500)

    from bench.lib.common import Worker, bench_environment, setup_django

    key = f"bench-parts-{os.getpid()}"
    queue = f"bench-parts-{uuid.uuid4().hex[:8]}"
    with bench_environment("dispatch_parts", dispatch.REDIS_DB) as env:
        env[dispatch.COUNTER_ENV] = key
        os.environ[dispatch.COUNTER_ENV] = key
        vendor = setup_django()
        import redis
        from django.conf import settings

        from jobs.models import App, Job

        counter = redis.Redis.from_url(settings.REDIS_URL)
        job = Job.objects.create(
            app=App.objects.create(name="bench"),
            name="noop",
            kind=Job.Kind.TASK,
            spec={"task": "bench.noop"},
            queue=queue,
            overlap_policy=Job.OverlapPolicy.ALLOW_ALL,
        )
        figures: dict[str, list[float]] = {}
        worker = Worker(
            app="bench.dispatch:app",
            queue=queue,
            concurrency=args.concurrency,
            env=env,
            log=Path(settings.DATA_DIR) / "worker.log",
        )
        try:
            dispatch.run_celery(50, queue, counter, key)
            dispatch.run_floor(20, job)
            dispatch.run_ours(20, job)
            worker.check()
            pid = worker.process.pid
            for _ in range(rounds):
                for label, work in (
                    ("celery", lambda: dispatch.run_celery(runs, queue, counter, key)),
                    ("floor", lambda: dispatch.run_floor(runs, job)),
                    ("ours", lambda: dispatch.run_ours(runs, job)),
                ):
                    for name, value in cpu_per_run(label, runs, work, pid).items():
                        figures.setdefault(f"{label}_{name}", []).append(value)
            worker.check()
        finally:
            worker.stop()
            counter.delete(key)
        costs = statement_costs(job, runs) if vendor == "postgresql" else {}

    result = {name: statistics.median(values) for name, values in figures.items()}
    result |= costs
    print(f"database={vendor} worker concurrency={args.concurrency}")
    print(" ".join(f"{name}={value:.3g}" for name, value in result.items()))


if __name__ == "__main__":
    main()
