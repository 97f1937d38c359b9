"""Dead-man's switch: external jobs report by pinging, healthchecks.io style.

A cron Karmchari does not run (a job of kind `external`) pings

    /ping/<job uid>          it succeeded
    /ping/<job uid>/start    it started
    /ping/<job uid>/fail     it failed

with GET or POST (the first 10 KB of a POST body is kept as the run's output; a
longer body is cut, never refused). The job's UUID is the credential, as with
healthchecks: no login, so a one-line `curl` at the end of a crontab entry works;
treat the URL as a secret. Each ping lands on the run in progress (the one its
schedule fired, or the one `/start` opened: a second `/start` starts that one again,
as healthchecks restarts its timer) or, when none is running, records a run of its
own. Pings are recorded for a disabled job too (what ran, ran); disabling stops its
slots and their late alerts.

With a `ping_grace`, a run is closed as failed ("late") and the job's `late`
notifications go out when no ping came within the grace: of its slot for a run its
schedule opened, of its `/start` for one that started; beat checks this every
second.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from jobs import notifications, services
from jobs.models import Execution, ExecutionEvent, Job
from jobs.runners import Outcome
from jobs.secrets import mask_text

logger = logging.getLogger(__name__)

BODY_LIMIT = 10_000
VERBS = {"": "succeeded", "start": "running", "fail": "failed"}
# The `worker` of a run that a /start began (the late check times it from then).
STARTED_BY_PING = "ping"  # one of Execution.EXTERNAL_WORKERS


def ping_record(*, job: Job, verb: str, body: str = "") -> Execution:
    """Apply one ping to the job's run in progress, or record a run for it."""
    now = timezone.now()
    with transaction.atomic():
        current = (
            Execution.objects.select_for_update()
            .filter(job=job, status=Execution.Status.RUNNING)
            .order_by("-created", "-id")
            .first()
        )
        if verb == "start":
            if current is not None:
                # The schedule (or a run by hand, or an earlier /start) opened this
                # run; the process now says it began.
                Execution.objects.filter(pk=current.pk).update(
                    started_at=now, worker=STARTED_BY_PING
                )
                current.started_at, current.worker = now, STARTED_BY_PING
                return current
            return services.external_open(
                job=job, trigger=Execution.Trigger.PING, worker=STARTED_BY_PING
            )
        if current is None:
            current = services.external_open(
                job=job, trigger=Execution.Trigger.PING, worker=STARTED_BY_PING
            )
    status = VERBS[verb]
    reason = "" if status == "succeeded" else "The job pinged /fail."
    # Masked as a worker masks what its runs print (the process may know a secret).
    output = mask_text(body, services.job_secret_values(job_id=job.pk)) if body else ""
    outcome = Outcome(status=status, output=output, reason=reason)
    return services.execution_finish(execution=current, outcome=outcome)


def pings_close_late(*, now: datetime | None = None) -> int:
    """Close runs of watched external jobs whose ping is overdue, as failed, and
    send their `late` notifications: a run its schedule opened, grace after its slot;
    one a /start began, grace after that. Answers how many were closed."""
    now = now or timezone.now()
    watched = Execution.objects.filter(
        status=Execution.Status.RUNNING,
        job__kind=Job.Kind.EXTERNAL,
        job__ping_grace__isnull=False,
    )
    overdue = (
        watched.filter(worker=STARTED_BY_PING, started_at__lt=now)
        | watched.filter(
            trigger=Execution.Trigger.SCHEDULE, scheduled_for__lt=now
        ).exclude(worker=STARTED_BY_PING)
    ).select_related("job__app")
    closed = 0
    for execution in overdue:
        job = execution.job
        assert job.ping_grace is not None
        if execution.worker == STARTED_BY_PING:
            since, what = execution.started_at, "its start"
        else:
            since, what = execution.scheduled_for, "the slot"
        assert since is not None
        if since + job.ping_grace > now:
            continue
        outcome = Outcome(
            status=Execution.Status.FAILED,
            reason=f"Late: no ping within {job.ping_grace} of {what}.",
        )
        ended = timezone.now()
        recorded = services.execution_finish(
            execution=execution, outcome=outcome, now=ended
        )
        if (recorded.status, recorded.finished_at) != (outcome.status, ended):
            # A ping ended it first (execution_finish kept that end): not late.
            continue
        notifications.notifications_queue(
            job=job, execution=execution, events=[notifications.Event.LATE]
        )
        logger.warning("job %s: no ping for slot %s", job.name, execution.scheduled_for)
        closed += 1
    return closed


def externals_close_overdue(*, now: datetime | None = None) -> int:
    """External runs nobody will end: their process died or never started.

    - one asked to die (by an operator, an overlap policy) that did not report its
      end within KARMCHARI_KILL_GRACE of being asked ends `killed`;
    - one running past its job's `timeout` (from its start; not while paused) ends
      `timed_out`, and is retried like any other.

    Answers how many were closed."""
    now = now or timezone.now()
    active = Execution.objects.filter(
        Q(job__kind=Job.Kind.EXTERNAL) | Q(worker__in=Execution.EXTERNAL_WORKERS),
        status__in=(Execution.Status.RUNNING, Execution.Status.PAUSED),
    ).select_related("job__app")
    grace = timedelta(seconds=settings.KARMCHARI_KILL_GRACE)
    killed = active.filter(
        desired_state=Execution.DesiredState.KILL,
        events__action=ExecutionEvent.Action.KILL,
        events__created__lt=now - grace,
    ).distinct()
    outcomes = [
        (
            execution,
            Outcome(
                status=Execution.Status.KILLED,
                reason="Killed on request; its process did not report its end "
                f"within {settings.KARMCHARI_KILL_GRACE:g}s.",
                # Killed while paused: the pause is not run time.
                paused_seconds=services.external_paused_seconds(
                    execution=execution, now=now
                ),
            ),
        )
        for execution in killed
    ]
    # Few external runs run at once: their timeouts are checked here, not in SQL.
    closing = {execution.pk for execution, _ in outcomes}
    for execution in active.filter(
        status=Execution.Status.RUNNING, job__timeout__isnull=False
    ).exclude(pk__in=closing):
        timeout = execution.job.timeout
        assert timeout is not None
        started = execution.started_at or execution.created
        paused = timedelta(seconds=execution.paused_seconds or 0)
        if started + timedelta(seconds=timeout) + paused < now:
            reason = f"No end reported within its timeout ({timeout}s)."
            outcomes.append(
                (execution, Outcome(status=Execution.Status.TIMED_OUT, reason=reason))
            )
    for execution, outcome in outcomes:
        services.execution_finish(execution=execution, outcome=outcome, now=now)
        logger.warning("external execution %s: %s", execution.pk, outcome.reason)
    return len(outcomes)


@csrf_exempt
def ping_view(request: HttpRequest, uid: UUID, verb: str = "") -> HttpResponse:
    if request.method not in ("GET", "HEAD", "POST"):
        response = HttpResponse("Method not allowed\n", status=405)
        response["Allow"] = "GET, HEAD, POST"
        return response
    job = Job.objects.select_related("app").filter(uid=uid).first()
    if job is None:
        return HttpResponse("Not found\n", status=404, content_type="text/plain")
    if job.kind != Job.Kind.EXTERNAL:
        return HttpResponse(
            f"Job {job.name!r} is not of kind external; only those take pings.\n",
            status=400,
            content_type="text/plain",
        )
    # Only what is kept is read: a long log must not make the ping a 400
    # (request.body refuses more than DATA_UPLOAD_MAX_MEMORY_SIZE).
    body = request.read(BODY_LIMIT).decode("utf-8", errors="replace")
    ping_record(job=job, verb=verb, body=body if request.method == "POST" else "")
    return HttpResponse("OK\n", content_type="text/plain")
