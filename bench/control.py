"""Control latency: operator's call → signal delivered to the job's process.

A real Celery worker runs a shell job (`sleep 3600`). The benchmark calls the
service behind the API's pause and resume actions (`services.execution_control`:
desired state stored, published on Redis after commit) and times, from the call,
until /proc/<pid>/stat shows the process stopped (state T) and, after resume,
running again. The baseline in the same run is `os.kill(pid, SIGSTOP/SIGCONT)` from
this process: what delivering the signal costs with no control bus at all.

    .venv/bin/python bench/control.py            # 500 pauses + 500 resumes
    .venv/bin/python bench/control.py --quick    # 100 + 100, < 60 s

Target (DESIGN.md "Quality bars"): p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REDIS_DB = 12


def state(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return text.rsplit(")", 1)[1].split()[0]


def until_state(pid: int, stopped: bool, timeout: float = 5.0) -> float:
    """perf_counter() when the process is (not) stopped; SystemExit after timeout."""
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        if (state(pid) == "T") == stopped:
            return now
        if now > deadline:
            raise SystemExit(f"process {pid} not {'stopped' if stopped else 'running'}")
        time.sleep(0.0002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute")
    args = parser.parse_args()
    calls = 100 if args.quick else 500

    from bench.lib.common import (
        Worker,
        bench_environment,
        percentile,
        setup_django,
        wait_until,
    )

    queue = f"bench-control-{uuid.uuid4().hex[:8]}"
    with bench_environment("control", REDIS_DB) as env:
        vendor = setup_django()
        from django.conf import settings

        from jobs import services
        from jobs.models import App, Execution, Job

        job = Job.objects.create(
            app=App.objects.create(name="bench"),
            name="sleeper",
            spec={"command": "sleep 3600"},
            queue=queue,
        )
        worker = Worker(
            app="karmchari_site",
            queue=queue,
            concurrency=1,
            env=env,
            log=Path(settings.DATA_DIR) / "worker.log",
        )
        pause: list[float] = []
        resume: list[float] = []
        returned: list[float] = []
        baseline: list[float] = []
        try:
            execution = services.job_trigger(job=job)
            wait_until(
                lambda: Execution.objects.filter(
                    pk=execution.pk, status="running", pid__isnull=False
                ).exists(),
                timeout=60,
                interval=0.05,
                check=worker.check,
            )
            execution.refresh_from_db()
            pid = execution.pid
            assert pid is not None
            until_state(pid, stopped=False)
            for i in range(calls + 5):  # the first five warm up
                # Operators do not click in step with the worker's loop: call at a
                # random phase of it, or every call would land at the same point.
                time.sleep(random.uniform(0, 0.1))
                started = time.perf_counter()
                services.execution_control(
                    execution=execution, action="pause", user=None
                )
                done = time.perf_counter()
                stopped = until_state(pid, stopped=True)
                time.sleep(random.uniform(0, 0.1))
                started_resume = time.perf_counter()
                services.execution_control(
                    execution=execution, action="resume", user=None
                )
                running = until_state(pid, stopped=False)
                if i >= 5:
                    pause.append((stopped - started) * 1000)
                    resume.append((running - started_resume) * 1000)
                    returned.append((done - started) * 1000)
            worker.check()
            # The baseline: the same signals sent straight from here.
            for _ in range(calls):
                started = time.perf_counter()
                os.kill(pid, signal.SIGSTOP)
                baseline.append((until_state(pid, stopped=True) - started) * 1000)
                os.kill(pid, signal.SIGCONT)
                until_state(pid, stopped=False)
            services.execution_control(execution=execution, action="kill", user=None)
            wait_until(
                lambda: Execution.objects.filter(
                    pk=execution.pk, status="killed"
                ).exists(),
                timeout=30,
                interval=0.05,
            )
        finally:
            worker.stop()

    both = pause + resume
    figures = {
        "pause_p50_ms": statistics.median(pause),
        "pause_p99_ms": percentile(pause, 0.99),
        "resume_p50_ms": statistics.median(resume),
        "resume_p99_ms": percentile(resume, 0.99),
        "p50_ms": statistics.median(both),
        "p99_ms": percentile(both, 0.99),
        "max_ms": max(both),
        "service_call_p50_ms": statistics.median(returned),
        "direct_kill_p99_ms": percentile(baseline, 0.99),
        "calls": len(both),
    }
    print(f"database={vendor}")
    print(" ".join(f"{k}={v:.3g}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
