"""Handing runs to Celery: the send after commit, and the outbox sweep that sends
again what a crash or a lost broker message left pending."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.utils import timezone

from jobs.models import Execution

logger = logging.getLogger(__name__)


def execution_send(*, execution: Execution) -> None:
    """Hand the execution to Celery. Safe to repeat: the claim decides who runs it.
    A broker outage is logged, not raised: the outbox sweep sends it later."""
    executions_send([(execution, 0.0)])


def execution_resend_stale(*, older_than: timedelta, batch: int = 500) -> int:
    """The outbox sweep: send again executions left pending for too long.

    A crash between commit and send, or a broker that lost the message (a Redis
    restart), leaves an execution pending forever; sending it again is harmless
    because the claim admits only one runner. But a run pending for long is usually
    just waiting behind a backlog: only runs whose queue the broker reports empty are
    sent again (a lost message cannot be behind anything), so a long backlog is not
    flooded with duplicates.
    """
    now = timezone.now()
    stale = Execution.objects.filter(
        status=Execution.Status.PENDING, dispatched_at__lt=now - older_than
    )
    # The broker first, then only runs of its empty queues: a backlog of old runs
    # in a busy queue must not fill the batch and keep other queues' lost runs out.
    queues = set(stale.values_list("job__queue", flat=True).distinct().order_by())
    if not queues:
        return 0
    waiting = _messages_waiting(queues)
    empty = [queue for queue in queues if waiting.get(queue) == 0]
    if not empty:
        return 0
    lost = list(
        stale.filter(job__queue__in=empty)
        .select_related("job")
        .order_by("dispatched_at")[:batch]
    )
    if not lost:
        return 0
    # Stamp first: a crash after this loses at most one re-send, never floods.
    Execution.objects.filter(pk__in=[e.pk for e in lost]).update(dispatched_at=now)
    executions_send([(execution, 0.0) for execution in lost])
    return len(lost)


def _messages_waiting(queues: Iterable[str]) -> dict[str, int]:
    """Messages ready in each queue, as the broker counts them (a queue it does not
    know holds none). Queues it could not be asked about are left out."""
    from jobs.tasks import run_execution

    counts: dict[str, int] = {}
    try:
        with run_execution.app.connection_for_write() as conn:
            for queue in sorted(queues):
                channel: Any = conn.channel()
                try:
                    counts[queue] = channel.queue_declare(
                        queue=queue, passive=True
                    ).message_count
                except conn.channel_errors:
                    counts[queue] = 0  # never declared, or deleted: nothing waits
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
    except Exception:
        logger.warning("outbox: cannot ask the broker about its queues", exc_info=True)
    return counts


def executions_send(sends: list[tuple[Execution, float]]) -> None:
    """Send tasks (each with its delay in seconds). A broker outage leaves the rest
    pending for the outbox sweep to send later; it never raises into the caller."""
    from jobs.tasks import run_execution

    try:
        # One producer (and connection) for the whole burst, not one per task.
        with run_execution.app.producer_or_acquire() as producer:
            for execution, delay in sends:
                run_execution.apply_async(
                    (execution.pk,),
                    queue=execution.job.queue,
                    countdown=delay or None,  # type: ignore[arg-type]
                    producer=producer,
                )
    except Exception:
        logger.exception("could not send all executions; the outbox sweep will retry")
