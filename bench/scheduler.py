"""Karmchari's beat scheduler against django-celery-beat's DatabaseScheduler.

Same PostgreSQL, same number of schedules (cron "0 0 1 1 *", never due during the
run), same in-memory broker, one run. For each size it measures, in a fresh process
per scheduler: start-up (constructor + first tick), idle tick time (nothing due), the
process RSS, and fire lag (slot time -> task published, from Celery's
before_task_publish signal) for a burst of 1,000 one-shot schedules due at once.

    python bench/scheduler.py            # 10,000 and 100,000 schedules
    python bench/scheduler.py --quick    # 10,000 only, under a minute

DATABASE_URL may name the PostgreSQL server (default postgres://postgres@127.0.0.1:
5432/); a database of the run's own is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BURST = 1000
IDLE_EXPR = "0 0 1 1 *"


def setup_django() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.lib.scheduler_settings"
    import django

    django.setup()


# --- Parent: database and data ---------------------------------------------------


def admin_url(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", "", ""))


def create_database(base: str) -> str:
    import psycopg

    name = f"karmchari_bench_{os.getpid()}"
    with psycopg.connect(admin_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def populate(n: int, burst: int) -> None:
    """n idle schedules plus `burst` schedules (timed by set_burst), in both systems.

    Idle: "M H 1 1 *" with M and H spread over the day, so django-celery-beat's
    filter that loads only crontabs within two hours of now works as it would on
    a real mix. Burst: hourly schedules whose next slot set_burst() moves to the
    burst time (an interval with last_run_at an hour before, for
    django-celery-beat).
    """
    from django.db import connection
    from django_celery_beat.models import (
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
        PeriodicTasks,
    )

    from jobs import schedules
    from jobs.models import App, Execution, Job, Schedule

    Execution.objects.all().delete()
    Schedule.objects.all().delete()
    Job.objects.all().delete()
    PeriodicTask.objects.all().delete()
    CrontabSchedule.objects.all().delete()
    now = datetime.now(UTC)
    app, _ = App.objects.get_or_create(name="bench")
    jobs = Job.objects.bulk_create(
        (
            Job(
                app=app,
                name=f"j{i}",
                spec={"command": "true"},
                overlap_policy="allow_all",
            )
            for i in range(n + burst)
        ),
        batch_size=5000,
    )
    idle = [f"{i % 60} {i % 24} 1 1 *" for i in range(n)]
    placeholder = now + timedelta(days=1)
    burst_expr = f"R/{placeholder.isoformat()}/PT1H"
    Schedule.objects.bulk_create(
        [
            Schedule(
                job=job,
                kind="cron",
                expression=expr,
                next_run_at=schedules.next_fire("cron", expr, "UTC", now),
            )
            for job, expr in zip(jobs[:n], idle, strict=True)
        ]
        + [
            Schedule(
                job=job, kind="interval", expression=burst_expr, next_run_at=placeholder
            )
            for job in jobs[n:]
        ],
        batch_size=5000,
    )
    crontabs = {
        (m, h): CrontabSchedule.objects.create(
            minute=str(m), hour=str(h), day_of_month="1", month_of_year="1"
        )
        for m in range(60)
        for h in range(24)
    }
    hourly = IntervalSchedule.objects.create(
        every=3600, period=IntervalSchedule.SECONDS
    )
    PeriodicTask.objects.bulk_create(
        [
            PeriodicTask(
                name=f"p{i}", task="bench.noop", crontab=crontabs[(i % 60, i % 24)]
            )
            for i in range(n)
        ]
        + [
            PeriodicTask(
                name=f"b{i}",
                task="bench.noop",
                interval=hourly,
                last_run_at=placeholder,
            )
            for i in range(burst)
        ],
        batch_size=5000,
    )
    PeriodicTasks.update_changed()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def set_burst(burst_at: datetime) -> None:
    """Make the burst schedules fall due at burst_at, and forget earlier runs."""
    from django_celery_beat.models import PeriodicTask, PeriodicTasks

    from jobs.models import Execution, Schedule

    Execution.objects.all().delete()
    Schedule.objects.filter(kind="interval").update(
        enabled=True,
        expression=f"R/{burst_at.isoformat()}/PT1H",
        next_run_at=burst_at,
        last_run_at=None,
    )
    PeriodicTask.objects.filter(name__startswith="b").update(
        last_run_at=burst_at - timedelta(hours=1), total_run_count=0
    )
    PeriodicTasks.update_changed()


# --- Child: one scheduler, measured ---------------------------------------------


def child(kind: str, burst_at: datetime, idle_ticks: int, burst: int) -> dict[str, Any]:
    import psutil
    from celery.signals import before_task_publish

    from karmchari_site.celery import app

    published: list[float] = []

    def on_publish(**_: Any) -> None:
        published.append(time.time())

    before_task_publish.connect(on_publish, weak=False)

    started = time.perf_counter()
    if kind == "ours":
        from jobs.scheduler import JobScheduler

        scheduler: Any = JobScheduler(app=app)
        scheduler.tick_once()
    else:
        from django_celery_beat.schedulers import DatabaseScheduler

        scheduler = DatabaseScheduler(app=app)
        scheduler.tick()
    startup = time.perf_counter() - started
    if idle_ticks == 0:  # a probe: start-up only
        return {"startup_s": startup}

    ticks: list[float] = []
    deadline = burst_at.timestamp() - 1.0
    while len(ticks) < idle_ticks and time.time() < deadline:
        t = time.perf_counter()
        if kind == "ours":
            scheduler.tick_once()
        else:
            scheduler.tick()
        ticks.append(time.perf_counter() - t)
    rss = psutil.Process().memory_info().rss

    # Run as celery beat's loop does, until the burst has been published.
    give_up = burst_at.timestamp() + 120
    while len(published) < burst and time.time() < give_up:
        interval = scheduler.tick()
        if interval and interval > 0:
            time.sleep(min(interval, scheduler.max_interval))
    lags = sorted(max(0.0, p - burst_at.timestamp()) * 1000 for p in published)
    return {
        "startup_s": startup,
        "idle_tick_ms": statistics.median(ticks) * 1000 if ticks else None,
        "idle_ticks": len(ticks),
        "rss_mb": rss / 2**20,
        "sent": len(published),
        "lag_p50_ms": lags[len(lags) // 2] if lags else None,
        "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else None,
    }


def run_child(
    kind: str, burst_at: datetime, idle_ticks: int, burst: int, env: dict[str, str]
) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--burst-at",
            burst_at.isoformat(),
            "--idle-ticks",
            str(idle_ticks),
            "--burst",
            str(burst),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{out.stderr[-3000:]}")
    if out.stderr.strip():
        sys.stderr.write(f"[{kind} child]\n{out.stderr[-3000:]}\n")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 schedules only")
    parser.add_argument(
        "--sizes", help="comma-separated schedule counts (default 10000,100000)"
    )
    parser.add_argument("--child", choices=["ours", "beat"], help=argparse.SUPPRESS)
    parser.add_argument("--burst-at", help=argparse.SUPPRESS)
    parser.add_argument("--idle-ticks", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--burst", type=int, default=BURST, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        setup_django()
        burst_at = datetime.fromisoformat(args.burst_at)
        result = child(args.child, burst_at, args.idle_ticks, args.burst)
        print(json.dumps(result))
        return

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if not base.startswith("postgres"):
        raise SystemExit("bench/scheduler.py needs PostgreSQL: set DATABASE_URL")
    name = create_database(base)
    env = {
        **os.environ,
        "DATABASE_URL": admin_url(base, name),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    setup_django()
    from django.core.management import call_command

    figures: dict[str, float] = {}
    try:
        call_command("migrate", verbosity=0)
        # --quick: django-celery-beat publishes about ten tasks a second at 10k,
        # so its burst is cut to keep the run under a minute.
        burst = 100 if args.quick else BURST
        sizes = [10_000] if args.quick else [10_000, 100_000]
        if args.sizes:
            sizes = [int(size) for size in args.sizes.split(",")]
        for n in sizes:
            populate(n, burst)
            results = {}
            for kind in ("ours", "beat"):
                far = datetime.now(UTC) + timedelta(hours=2)
                set_burst(far)
                probe = run_child(kind, far, 0, burst, env)["startup_s"]
                # Room for start-up and the idle ticks before the burst falls due.
                burst_at = datetime.now(UTC) + timedelta(seconds=3 + 2 * probe)
                set_burst(burst_at.replace(microsecond=0) + timedelta(seconds=1))
                results[kind] = run_child(
                    kind,
                    burst_at.replace(microsecond=0) + timedelta(seconds=1),
                    200 if kind == "ours" else 30,
                    burst,
                    env,
                )
            ours, beat = results["ours"], results["beat"]
            print(f"\n{n:,} schedules, burst of {burst}")
            for key in (
                "startup_s",
                "idle_tick_ms",
                "rss_mb",
                "sent",
                "lag_p50_ms",
                "lag_p99_ms",
            ):
                a, b = ours[key], beat[key]
                ratio = f"{b / a:.1f}x" if a and b else "-"
                print(f"  {key:<14} ours={a!s:<24} beat={b!s:<24} beat/ours={ratio}")
            k = f"{n // 1000}k"
            figures.update(
                {
                    f"ours_idle_tick_ms_{k}": ours["idle_tick_ms"],
                    f"beat_idle_tick_ms_{k}": beat["idle_tick_ms"],
                    f"idle_tick_ratio_{k}": beat["idle_tick_ms"] / ours["idle_tick_ms"],
                    f"ours_startup_s_{k}": ours["startup_s"],
                    f"beat_startup_s_{k}": beat["startup_s"],
                    f"ours_rss_mb_{k}": ours["rss_mb"],
                    f"beat_rss_mb_{k}": beat["rss_mb"],
                    f"ours_lag_p99_ms_{k}": ours["lag_p99_ms"],
                    f"beat_lag_p99_ms_{k}": beat["lag_p99_ms"],
                }
            )
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(base, name)
    print(
        " ".join(
            f"{k}={v:.3g}" if v is not None else f"{k}=none" for k, v in figures.items()
        )
    )


if __name__ == "__main__":
    main()
