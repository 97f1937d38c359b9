"""Lost work: when an agent goes offline, what it was running is lost and retried.

Connected to `agents.signals.agent_went_offline` by JobsConfig.ready(). The receiver
runs inside the transaction that marks the agent offline, so if it fails the agent
stays online and the next sweep tries again.

Why this never runs a job twice: an execution is claimed only `pending -> running`,
so once it is `lost` a redelivery of its task by the broker (acks_late, after the
visibility timeout) finds nothing to claim. The retry is a new execution of its own.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.dispatch import receiver
from django.utils import timezone

from agents.models import Agent
from agents.signals import agent_went_offline
from jobs.models import Execution, Job
from jobs.services import execution_send

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
            # Conditional: a run that finished meanwhile keeps its real outcome.
            marked = Execution.objects.filter(
                pk=execution.pk, status__in=active
            ).update(status=Execution.Status.LOST, reason=why, finished_at=now)
            if not marked:
                continue
            execution.status = Execution.Status.LOST
            execution.reason = why
            execution.finished_at = now
            Job.objects.filter(pk=execution.job_id).update(
                error_count=F("error_count") + 1, last_error_at=now
            )
            logger.warning("execution %s lost with agent %s", execution.pk, agent.name)
            lost.append(execution)
            execution_retry_lost(execution=execution)
    return lost


def execution_retry_lost(*, execution: Execution) -> Execution | None:
    """A new pending attempt of a lost execution, if its job allows one more.

    `max_retries` counts attempts after the first: attempt 1 of a job with
    max_retries=1 gets a retry, attempt 2 does not. Sent after commit; no backoff,
    since losing a worker says nothing about the job.
    """
    job = execution.job
    if execution.attempt > job.max_retries:
        return None
    if not job.enabled:
        logger.info("execution %s lost; job %s is disabled", execution.pk, job.name)
        return None
    # The schedule stays for the record; scheduled_for does not, because the slot's
    # unique constraint belongs to the first attempt.
    retry = Execution.objects.create(
        job=job,
        schedule_id=execution.schedule_id,
        trigger=Execution.Trigger.RETRY,
        attempt=execution.attempt + 1,
        retry_of=execution,
        parameters=execution.parameters,
        dispatched_at=timezone.now(),
    )
    transaction.on_commit(lambda: execution_send(execution=retry))
    logger.info(
        "execution %s: attempt %s of job %s is execution %s",
        execution.pk,
        retry.attempt,
        job.name,
        retry.pk,
    )
    return retry
