"""A stopping worker leaves no job process behind.

Celery's warm shutdown (SIGTERM, or the first Ctrl-C) waits for the running tasks,
however long they take, until whoever supervises the worker kills it
(`manage.py standalone` after its deadline, a supervisor after its stop timeout). A
shell job's processes, in a session of their own, outlive that kill: still running,
with no worker to record their end, their run later marked lost and perhaps retried
beside them. With KARMCHARI_WORKER_STOP_GRACE set, runs get that many seconds to end;
then the worker kills what it still runs, as an operator's kill would (SIGTERM,
SIGKILL after KARMCHARI_KILL_GRACE), and they end `killed`, with the reason on their
audit trail. Unset, the worker waits for them, as Celery does.
"""

from __future__ import annotations

import logging
import math
import threading
from time import sleep

from django.conf import settings
from django.db import DatabaseError, connections

from jobs.models import Execution

logger = logging.getLogger(__name__)


def on_worker_stopping(*, worker: str, how: str) -> threading.Thread | None:
    """Celery's `worker_shutting_down`, in the worker's main process: the thread
    that kills the runs left after the grace (none if there is no grace)."""
    grace = 0.0 if how == "Cold" else float(settings.KARMCHARI_WORKER_STOP_GRACE)
    if math.isinf(grace):
        return None
    thread = threading.Thread(
        target=_kill_after,
        kwargs={"worker": worker, "grace": grace},
        name="karmchari-stop-grace",
        daemon=True,  # the worker exits as soon as its runs end
    )
    thread.start()
    return thread


def _kill_after(*, worker: str, grace: float) -> None:
    sleep(grace)
    try:
        killed = runs_kill(worker=worker)
    except DatabaseError:
        logger.exception("stopping: could not kill the runs of %s", worker)
        return
    finally:
        connections.close_all()
    if killed:
        logger.warning(
            "stopping: killed %d run(s) still going after %gs", killed, grace
        )


def runs_kill(*, worker: str) -> int:
    """Kill every run `worker` still runs (not external runs: not its own);
    how many were told."""
    from jobs import services

    detail = f"The worker {worker} was stopping."
    told = 0
    running = Execution.objects.filter(
        worker=worker, status__in=[Execution.Status.RUNNING, Execution.Status.PAUSED]
    ).select_related("job")
    for execution in running:
        try:
            services.execution_control(
                execution=execution, action="kill", user=None, detail=detail
            )
        except services.Conflict:
            continue  # ended meanwhile, or being killed already
        told += 1
    return told
