"""The Celery app shared by the worker, beat and the web process (which sends tasks)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import (
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_shutting_down,
)

from karmchari_site.kombu_fixes import patch_redis_channel_close

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "karmchari_site.settings")
patch_redis_channel_close()

app = Celery("karmchari")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect(dispatch_uid="karmchari.no_health_checks")
def no_health_checks(**kwargs: Any) -> None:
    """No `SELECT 1` before every task: on a busy machine that round trip costs as much
    as the run's own writes. A connection that failed is still replaced before the next
    task (below), and the run path reconnects by itself (jobs.services
    `_with_reconnect`)."""
    from django.db import connections

    for connection in connections.all():
        connection.settings_dict["CONN_HEALTH_CHECKS"] = False


@task_prerun.connect(dispatch_uid="karmchari.close_old_connections")
def close_old_connections(task: Any = None, **kwargs: Any) -> None:
    """Per task what Django does per request: drop a connection that failed or is
    older than CONN_MAX_AGE, keep the others (CELERY_DB_REUSE_MAX stops Celery from
    closing them all)."""
    if getattr(getattr(task, "request", None), "is_eager", False):
        return  # run in place by the caller, inside its connection and transaction
    from django.db import close_old_connections

    close_old_connections()


@worker_process_shutdown.connect(dispatch_uid="karmchari.send_redis_batch")
def send_redis_batch(**kwargs: Any) -> None:
    """A pool process on its way out sends the stats and metrics it still holds."""
    from jobs.redis_batch import batch

    batch.flush()


@worker_shutting_down.connect(dispatch_uid="karmchari.kill_runs_after_grace")
def kill_runs_after_grace(sender: Any = None, how: str = "Warm", **kwargs: Any) -> None:
    """A stopping worker kills the runs still going after
    KARMCHARI_WORKER_STOP_GRACE (jobs/shutdown.py)."""
    from jobs.shutdown import on_worker_stopping

    on_worker_stopping(worker=str(sender), how=how)
