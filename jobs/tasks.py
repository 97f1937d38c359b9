"""Celery tasks: thin, take primary keys, call services."""

from __future__ import annotations

from celery import Task, shared_task

from jobs import services


@shared_task(
    bind=True,
    name="jobs.run_execution",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_execution(self: Task[[int], None], execution_id: int) -> None:
    # Delivered twice (acks_late + a lost worker)? The claim makes the second a no-op.
    services.execution_run(
        execution_id=execution_id, worker=self.request.hostname or ""
    )
