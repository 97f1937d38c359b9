"""Lost work: when an agent goes offline, what it was running is lost and retried.

Connected to `agents.signals.agent_went_offline` by JobsConfig.ready(). The receiver
runs inside the transaction that marks the agent offline, so if it fails the agent
stays online and the next sweep tries again.

Why this never runs a job twice: an execution is claimed only `pending -> running`,
so once it is `lost` a redelivery of its task by the broker (acks_late, after the
visibility timeout) finds nothing to claim. The retry is a new execution of its own.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.dispatch import receiver
from django.utils import timezone

from agents.models import Agent
from agents.signals import agent_went_offline
from jobs import notifications, services
from jobs.logs import log_tail_text
from jobs.models import Execution, Job
from jobs.stats import stats_forget

logger = logging.getLogger(__name__)


@receiver(agent_went_offline, dispatch_uid="jobs.recovery.agent_went_offline")
def on_agent_went_offline(
    sender: Any, *, agent: Agent, reason: str = "", **kwargs: Any
) -> None:
    executions_recover_lost(agent=agent, reason=reason)


def executions_recover_lost(*, agent: Agent, reason: str = "") -> list[Execution]:
    """Mark the agent's running and paused executions lost; retry those allowed to.

    Matches by the Celery hostname the claim recorded (`worker`) and by the `agent`
    foreign key for executions that have it. Returns the executions marked lost.
    """
    active = (Execution.Status.RUNNING, Execution.Status.PAUSED)
    why = f"Its agent {agent.name} went offline. {reason}".strip()
    lost = []
    with transaction.atomic():
        candidates = list(
            Execution.objects.filter(
                Q(worker=agent.name) | Q(agent_id=agent.pk), status__in=active
            ).select_related("job")
        )
        for execution in candidates:
            now = timezone.now()
            # What it printed before it was lost, as far as it was stored.
            output = log_tail_text(execution_id=execution.pk)
            # Conditional: a run that finished meanwhile keeps its real outcome.
            marked = Execution.objects.filter(
                pk=execution.pk, status__in=active
            ).update(
                status=Execution.Status.LOST,
                reason=why,
                finished_at=now,
                output=output,
            )
            if not marked:
                continue
            execution.status = Execution.Status.LOST
            execution.reason = why
            execution.finished_at = now
            execution.output = output
            # An error, but with no duration to average: how long it ran is unknown.
            Job.objects.filter(pk=execution.job_id).update(
                error_count=F("error_count") + 1,
                untimed_count=F("untimed_count") + 1,
                last_error_at=now,
            )
            stats_forget(job_id=execution.job_id)
            # Its failure notifications, as for any other failed run.
            transaction.on_commit(functools.partial(_notify, execution=execution))
            logger.warning("execution %s lost with agent %s", execution.pk, agent.name)
            lost.append(execution)
            # The same retry path (with backoff) as a failed run; then let a run
            # buffered behind this one start.
            services.execution_schedule_retry(execution=execution)
            services.execution_release_buffered(job_id=execution.job_id)
    return lost


def _notify(*, execution: Execution) -> None:
    notifications.execution_changed(execution=execution)
