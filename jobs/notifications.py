"""Notifications: hear about failures (and starts, successes, recoveries, late and
slow runs) without watching the screen.

jobs.services calls execution_changed() after an execution is claimed or finished;
beat's housekeeping calls notifications_check_due() for late runs. Both only decide
and record: each notification is a NotificationDelivery row, sent by the Celery task
jobs.deliver_notification (never from the request or the runner), retried with
exponential backoff, its attempts and last error kept as the delivery log. A send the
broker refused leaves the row pending; beat's housekeeping sends it again
(notifications_resend_stale), as the outbox sweep does for runs.

Which rules apply: a job's own rules, or else its app's (NotificationRule). A channel
hears of an event of a run once, however many of those rules send it there.

Retries: an attempt that ends failed, timed out or lost while a retry follows is not
news yet (its end says so: jobs.services.execution_schedule_retry marks it); only the
last attempt's failure is sent, and `recovery` follows only a failure that was.

Flood control (NotificationState, one row per channel and job): the first failure
or late run goes out at once; while the channel was told the job is failing, more
are recorded `held` and counted, and one reminder reports them once the rule's
repeat_every has passed; the next success is a recovery that says how many were
held back. A job that keeps flipping between failing and ok (more than
FLAP_CHANGES changes within repeat_every) is told nothing more until it has been
stable for repeat_every. A job that stays failing without running again is reminded
on a timer (jobs/notification_reminders.py). See docs/notifications.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import (
    Exists,
    OuterRef,
    Q,
    Subquery,
)
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from jobs.models import (
    Execution,
    ExecutionEvent,
    Job,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
    Schedule,
)
from jobs.models.notifications import FLAP_CHANGES, NotificationState, Verdict
from jobs.notification_sending import CHANNEL_DISABLED, retry_countdown

logger = logging.getLogger(__name__)

Event = NotificationRule.Event
# Flood control (NotificationState): what a channel hears of a failing job.
PROBLEMS = frozenset({Event.FAILURE, Event.LATE})
CONTROLLED = PROBLEMS | {Event.RECOVERY}
FAILURE_STATUSES = (
    Execution.Status.FAILED,
    Execution.Status.TIMED_OUT,
    Execution.Status.LOST,
    Execution.Status.KILLED,
)
_LAST_CHECK_KEY = "notifications:last-check"


# --- Deciding what to send -----------------------------------------------------------


def notification_rules(*, job: Job) -> list[NotificationRule]:
    """The job's own rules, else its app's; only enabled channels."""
    rules = list(
        NotificationRule.objects.filter(job=job, channel__enabled=True).select_related(
            "channel"
        )
    )
    if rules or NotificationRule.objects.filter(job=job).exists():
        return rules
    return list(
        NotificationRule.objects.filter(
            app_id=job.app_id, channel__enabled=True
        ).select_related("channel")
    )


# Which jobs and apps have rules at all, per process, for a few seconds: asked at the
# start and end of every run. Rule changes in this process forget it at once
# (forget_rule_targets, connected in jobs.apps); other processes see them within
# KARMCHARI_NOTIFY_RULES_CACHE_SECONDS.
_targets: tuple[float, frozenset[int], frozenset[int]] | None = None


def _rule_targets() -> tuple[frozenset[int], frozenset[int]]:
    global _targets
    now = time.monotonic()
    if _targets is None or now >= _targets[0]:
        rows = list(NotificationRule.objects.values_list("job_id", "app_id"))
        _targets = (
            now + settings.KARMCHARI_NOTIFY_RULES_CACHE_SECONDS,
            frozenset(job_id for job_id, _ in rows if job_id is not None),
            frozenset(app_id for _, app_id in rows if app_id is not None),
        )
    return _targets[1], _targets[2]


def forget_rule_targets(**kwargs: Any) -> None:
    global _targets
    _targets = None


def _has_rules(job: Job) -> bool:
    jobs, apps = _rule_targets()
    return job.pk in jobs or job.app_id in apps


def _events_of(execution: Execution, job: Job) -> list[str]:
    """What an execution that was just claimed or finished is news of."""
    events: list[str] = []
    if execution.status == Execution.Status.RUNNING:
        return [Event.START]
    if not execution.is_finished or execution.status == Execution.Status.SKIPPED:
        return []
    if execution.status != Execution.Status.SUCCEEDED:
        return [Event.FAILURE]
    events.append(Event.SUCCESS)
    earlier = (
        Execution.objects.filter(
            job_id=execution.job_id,
            status__in=[Execution.Status.SUCCEEDED, *FAILURE_STATUSES],
            finished_at__lte=execution.finished_at,
        )
        .exclude(pk=execution.pk)
        # A pending run killed before it started (by an operator, or the `cancel`
        # overlap policy) never ran: nothing to recover from.
        .exclude(status=Execution.Status.KILLED, started_at__isnull=True)
    )
    # An attempt retried automatically was never reported as a failure: a success
    # after it (its retry's, say) recovers from nothing. One retried by hand was.
    retried = Exists(
        Execution.objects.filter(
            retry_of=OuterRef("pk"), trigger=Execution.Trigger.RETRY
        )
    ) & ~Exists(
        ExecutionEvent.objects.filter(
            execution=OuterRef("pk"), action=ExecutionEvent.Action.RETRY
        )
    )
    previous = (
        earlier.exclude(retried)
        .order_by("-finished_at", "-id")
        .values_list("status", "finished_at")
        .first()
    )
    # Retention may have dropped the failures since (keep_failed 0), or every earlier
    # run (a weekly job keeping a day): the job's own last error, which a success does
    # not touch, still tells, unless it is that of an attempt retried automatically
    # (then what came before it is not known any more: no recovery).
    last_error = job.last_error_at
    if previous is None:
        # Its last success before this run, as the job was loaded before the run
        # ended (the claim loads it; the end has since moved the stored one to this
        # run, and a job loaded after the end shows that: no recovery).
        before = execution.job.last_success_at
        news = last_error is not None and (before is None or last_error > before)
    else:
        status, finished_at = previous
        if status != Execution.Status.SUCCEEDED:
            events.append(Event.RECOVERY)
            return events
        news = (
            last_error is not None
            and finished_at is not None
            and last_error > finished_at
        )
    if news and not earlier.filter(retried, finished_at__gte=last_error).exists():
        events.append(Event.RECOVERY)
    return events


def retry_follows(execution: Execution) -> bool:
    """Whether the end of this attempt scheduled another (or found one already
    there): set by jobs.services.execution_schedule_retry, in memory, before the
    end's notifications run. No guess from max_retries: a job disabled, deleted or
    given fewer retries meanwhile, or a kill, gets no retry, and its failure is
    the last."""
    return bool(getattr(execution, "retry_follows", False))


def _is_slow(execution: Execution, job: Job, factor: float) -> bool:
    if execution.status == Execution.Status.LOST:
        # How long a lost run ran is unknown (its job counts it untimed).
        return False
    duration = execution.duration
    runs = job.timed_runs
    if duration is None or runs < 2:
        return False
    # The average of the runs before this one (its own duration is already counted).
    average = (job.duration_total - duration) / (runs - 1)
    return average > 0 and duration > factor * average


def _payload(event: str, job: Job, execution: Execution | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": event,
        "app": job.app.name,
        "job": job.name,
        "job_id": job.pk,
        "sent_at": timezone.now().isoformat(),
    }
    if execution is not None:
        body["execution"] = {
            "id": execution.pk,
            "status": execution.status,
            "exit_code": execution.exit_code,
            "trigger": execution.trigger,
            "attempt": execution.attempt,
            "scheduled_for": _iso(execution.scheduled_for),
            "started_at": _iso(execution.started_at),
            "finished_at": _iso(execution.finished_at),
            "duration": execution.duration,
            "reason": execution.reason,
            "error": (execution.error or "")[-1000:],
            "url": f"{settings.KARMCHARI_BASE_URL.rstrip('/')}"
            f"/admin/jobs/execution/{execution.pk}/change/",
        }
    return body


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def notifications_queue(
    *, job: Job, execution: Execution | None, events: list[str]
) -> list[NotificationDelivery]:
    """Record a delivery per channel and event that any matching rule sends there
    (two rules sending failures to one webhook make one message); send each after
    commit. `slow` goes only to the channels of rules by whose own slow_factor the
    run was slow. A run's event already recorded for a channel is not recorded
    again (its end heard twice: a worker recording it again after a dropped
    connection).

    `failure`, `late` and `recovery` go through flood control (_pair_problem,
    _pair_ok): one held back is recorded `held` and not sent. Answers the
    deliveries to send."""
    plain: dict[tuple[int, str], NotificationChannel] = {}
    # Per channel: the flood-controlled events its rules send it, and the shortest
    # repeat_every of those rules (the most talkative one wins, as for `slow`).
    gets: dict[int, set[str]] = {}
    repeat: dict[int, timedelta] = {}
    channels: dict[int, NotificationChannel] = {}
    for rule in notification_rules(job=job):
        watched = CONTROLLED.intersection(rule.events)
        if watched:
            gets.setdefault(rule.channel_id, set()).update(watched)
            every = repeat.get(rule.channel_id)
            repeat[rule.channel_id] = (
                rule.repeat_every if every is None else min(every, rule.repeat_every)
            )
            channels[rule.channel_id] = rule.channel
        for event in events:
            key = (rule.channel_id, event)
            if event in CONTROLLED or event not in rule.events or key in plain:
                continue
            if event == Event.SLOW and not (
                execution is not None
                and _is_slow(
                    execution,
                    job,
                    rule.slow_factor or settings.KARMCHARI_NOTIFY_SLOW_FACTOR,
                )
            ):
                continue
            plain[key] = rule.channel
    # A success ends a failure each channel that gets failures, lates or
    # recoveries was told of (a recovery, if it wants those).
    ok = Event.SUCCESS in events
    problems = [event for event in events if event in PROBLEMS]
    asked = {event for _, event in plain}
    if gets:
        asked.update(problems)
        if ok and any(Event.RECOVERY in wanted for wanted in gets.values()):
            asked.add(Event.RECOVERY)
    recorded: set[tuple[int, str]] = set()
    if execution is not None and asked:
        recorded = set(
            NotificationDelivery.objects.filter(
                execution=execution, event__in=asked
            ).values_list("channel_id", "event")
        )
    made: list[NotificationDelivery] = []
    for (channel_id, event), channel in plain.items():
        if (channel_id, event) not in recorded:
            made.append(
                NotificationDelivery.objects.create(
                    channel=channel,
                    job=job,
                    execution=execution,
                    event=event,
                    payload=_payload(event, job, execution),
                )
            )
    for channel_id, wanted in sorted(gets.items()):
        for event in problems:
            if event in wanted and (channel_id, event) not in recorded:
                delivery = _pair_problem(
                    channel=channels[channel_id],
                    job=job,
                    execution=execution,
                    event=event,
                    repeat=repeat[channel_id],
                )
                if delivery is not None:
                    made.append(delivery)
    if ok and gets:
        made.extend(
            _pair_ok(
                job=job,
                execution=execution,
                channels={
                    channels[cid]: repeat[cid]
                    for cid in sorted(gets)
                    if (cid, Event.RECOVERY) not in recorded
                },
                gets=gets,
                recovery=Event.RECOVERY in events,
            )
        )
    sending = [d for d in made if d.status == NotificationDelivery.Status.PENDING]
    if sending:
        ids = [delivery.pk for delivery in sending]
        transaction.on_commit(lambda: deliveries_send(ids))
    return sending


def _pair_problem(
    *,
    channel: NotificationChannel,
    job: Job,
    execution: Execution | None,
    event: str,
    repeat: timedelta,
) -> NotificationDelivery | None:
    """A failure or late run for one channel: sent at once if the channel was told
    the job is ok, held back while it was told it is failing, and sent as a
    reminder with the count once repeat_every has passed since the last message.
    The pair's row is locked for the decision and the delivery it makes: of two
    workers ending runs of one job at once, the second waits and holds its failure
    back. None: already recorded for this run (a late alert, meanwhile)."""
    try:
        with transaction.atomic():
            state, _ = NotificationState.objects.select_for_update().get_or_create(
                job=job, channel=channel
            )
            verdict = state.observe(
                failing=True,
                now=timezone.now(),
                repeat=repeat,
                last_success_at=job.last_success_at,
            )
            delivery = delivery_record(channel, job, execution, event, verdict)
            state.save(update_fields=NotificationState.OBSERVED)
    except IntegrityError:
        return None  # jobs_delivery_once_per_event: a late alert recorded meanwhile
    return delivery


def _pair_ok(
    *,
    job: Job,
    execution: Execution | None,
    channels: dict[NotificationChannel, timedelta],
    gets: dict[int, set[str]],
    recovery: bool,
) -> list[NotificationDelivery]:
    """A success, for each channel that gets failures, lates or recoveries: one
    told the job is failing hears it recovered (with how many failures were held
    back), if it wants recoveries; while flapping that is held back. A channel told
    nothing of this failure (one that gets only recoveries, or whose failure rule
    came later) hears of a recovery as the job's history tells it (`recovery`:
    _events_of), as before flood control.

    A healthy job's success costs one read and no transaction: only rows with
    something to change are locked, read again under the lock."""
    if not channels:
        return []  # its recoveries recorded already: the end heard twice
    Health = NotificationState.Health
    pending = (
        NotificationState.objects.filter(job=job, channel__in=list(channels))
        .filter(
            Q(told=Health.FAILING)
            | Q(health=Health.FAILING)
            | Q(changes__gt=FLAP_CHANGES)
        )
        .order_by("channel_id")  # one locking order: no deadlock between two ends
    )
    made: list[NotificationDelivery] = []
    locking = pending.exists()
    with transaction.atomic() if locking else nullcontext():
        states = (
            {s.channel_id: s for s in pending.select_for_update()} if locking else {}
        )
        now = timezone.now()
        for channel, every in channels.items():
            verdict = Verdict(Verdict.NONE)
            state = states.get(channel.pk)
            if state is not None:
                verdict = state.observe(failing=False, now=now, repeat=every)
                state.save(update_fields=NotificationState.OBSERVED)
            if (
                verdict.action == Verdict.NONE
                and recovery
                and not (state is not None and state.flapping)
            ):
                verdict = Verdict(Verdict.TELL)
            if Event.RECOVERY in gets[channel.pk] and verdict.action != Verdict.NONE:
                made.append(
                    delivery_record(channel, job, execution, Event.RECOVERY, verdict)
                )
    return made


def delivery_record(
    channel: NotificationChannel,
    job: Job,
    execution: Execution | None,
    event: str,
    verdict: Verdict,
    payload: dict[str, Any] | None = None,
) -> NotificationDelivery:
    """The delivery of a flood-controlled event: pending (sent after commit), or
    `held`, recorded so that the delivery log shows what was kept back and the
    run's event is not counted again when its end is heard twice."""
    if payload is None:
        payload = flood_payload(event, job, execution, verdict)
    held = verdict.action == Verdict.HOLD
    return NotificationDelivery.objects.create(
        channel=channel,
        job=job,
        execution=execution,
        event=event,
        payload=payload,
        status=NotificationDelivery.Status.HELD
        if held
        else NotificationDelivery.Status.PENDING,
    )


def flood_payload(
    event: str, job: Job, execution: Execution | None, verdict: Verdict
) -> dict[str, Any]:
    """A flood-controlled event's payload: the run's, with what flood control says
    (a reminder, the count held back and since when, flapping)."""
    payload = _payload(event, job, execution)
    payload.update(
        reminder=verdict.action == Verdict.REMIND,
        held_back=verdict.held_back,
        held_since=_iso(verdict.held_since),
        flapping=None
        if verdict.flapping is None
        else {"changes": verdict.flapping[0], "since": _iso(verdict.flapping[1])},
    )
    return payload


def deliveries_send(ids: list[int]) -> None:
    """Send the deliveries' tasks. A broker outage is logged, not raised: the rows
    stay pending and beat's sweep (notifications_resend_stale) sends them later."""
    from jobs.tasks import deliver_notification

    for pk in ids:
        try:
            deliver_notification.delay(pk)
        except Exception:
            logger.warning(
                "notification %s: could not send its task; it is sent again later",
                pk,
                exc_info=True,
            )


def _due(execution: Execution, jitter: timedelta | None) -> datetime:
    """When a scheduled run was due to start: its slot, or later by the delay its
    jitter held it back, which beat stamps as its dispatched_at. A later stamp (the
    outbox sweep's re-send, a buffered run let go) moves it no further than the
    slot plus the jitter: such a run is late."""
    slot = execution.scheduled_for
    assert slot is not None
    stamp = execution.dispatched_at
    if stamp is None or not jitter:
        return slot
    return min(max(slot, stamp), slot + jitter)


def _epsilon(epsilon: timedelta | None) -> timedelta:
    if epsilon is not None:
        return epsilon
    return timedelta(seconds=settings.KARMCHARI_DEFAULT_EPSILON)


def _may_have_started_late(execution: Execution) -> bool:
    """In memory, no query: a scheduled run that started after its slot. Whether it
    started after its window too needs its schedule's epsilon and jitter."""
    return (
        execution.status == Execution.Status.RUNNING
        and execution.trigger == Execution.Trigger.SCHEDULE
        and execution.schedule_id is not None
        and execution.scheduled_for is not None
        and execution.started_at is not None
        and execution.started_at > execution.scheduled_for
    )


def execution_changed(*, execution: Execution) -> None:
    """An execution was claimed (running) or finished. Called after commit by
    jobs.services; never raises into the runner."""
    try:
        # The common case, no rule anywhere near this job, costs no query at all on
        # the hot path of every run.
        if not _has_rules(execution.job):
            return
        if execution.is_finished and retry_follows(execution):
            # Not news yet, slow or not: the last attempt's end will be.
            return
        jobs = Job.objects.select_related("app")
        started_late = _may_have_started_late(execution)
        if started_late:
            # A run the late check did not see pending (it started after its
            # window, between two checks) is late too. Its schedule's window comes
            # with the job's row: no query of its own.
            assert execution.schedule_id is not None
            window = Schedule.objects.filter(pk=execution.schedule_id)
            jobs = jobs.annotate(
                window_epsilon=Subquery(window.values("epsilon")[:1]),
                window_jitter=Subquery(window.values("jitter")[:1]),
            )
        job = jobs.get(pk=execution.job_id)
        events = _events_of(execution, job)
        if started_late:
            assert execution.started_at is not None
            due = _due(execution, getattr(job, "window_jitter", None))
            epsilon = _epsilon(getattr(job, "window_epsilon", None))
            if execution.started_at - due > epsilon:
                events.append(Event.LATE)  # once: jobs_delivery_once_per_event
        if not events:
            return
        rules = notification_rules(job=job)
        if not rules:
            return
        if execution.is_finished and any(Event.SLOW in rule.events for rule in rules):
            events.append(Event.SLOW)  # each rule judges by its own factor
        if events:
            notifications_queue(job=job, execution=execution, events=events)
    except Exception:
        logger.exception("execution %s: could not queue notifications", execution.pk)


# --- Late runs -----------------------------------------------------------------------


def notifications_check_late(*, now: Any = None) -> int:
    """Scheduled runs still pending past their window (slot, plus the delay its
    jitter held the run back, plus epsilon), or recorded as missed, produce one
    `late` notification each (a run that starts after its window is reported by
    execution_changed). Answers how many were queued."""
    now = now or timezone.now()
    candidates = (
        Execution.objects.filter(
            Q(job__notification_rules__isnull=False)
            | Q(job__app__notification_rules__isnull=False),
            trigger=Execution.Trigger.SCHEDULE,
            scheduled_for__gte=now - timedelta(days=1),
            scheduled_for__lte=now,
            status__in=[Execution.Status.PENDING, Execution.Status.SKIPPED],
        )
        .select_related("job__app", "schedule")
        .distinct()
    )
    queued = 0
    for execution in candidates:
        assert execution.scheduled_for is not None
        if execution.status == Execution.Status.SKIPPED:
            deliberate = ("overlap", "disabled", "repetitions")
            if any(why in execution.reason for why in deliberate):
                # Skipped on purpose (an overlap policy; a job or schedule an
                # operator disabled; no repetitions left), not late.
                continue
        else:
            schedule = execution.schedule
            due = _due(execution, schedule.jitter if schedule else None)
            if due + _epsilon(schedule.epsilon if schedule else None) > now:
                continue
        queued += len(
            notifications_queue(
                job=execution.job, execution=execution, events=[Event.LATE]
            )
        )
    return queued


def notifications_check_due() -> None:
    """Called by beat's housekeeping every second: at most every
    KARMCHARI_NOTIFY_CHECK_SECONDS, send the late check's task and the reminders'
    (a worker runs them)."""
    from django.core.cache import cache

    try:
        due = cache.add(
            _LAST_CHECK_KEY, 1, timeout=settings.KARMCHARI_NOTIFY_CHECK_SECONDS
        )
        if due:
            from jobs.tasks import check_notifications, remind_notifications

            check_notifications.delay()
            remind_notifications.delay()
    except Exception:
        logger.warning("could not send the late-run check", exc_info=True)


def _retrying_for() -> timedelta:
    """How long a delivery may stay pending while its task retries: every attempt's
    timeout and every wait between them."""
    attempts = settings.KARMCHARI_NOTIFY_MAX_ATTEMPTS
    waits = sum(retry_countdown(attempt=n) for n in range(1, attempts))
    seconds = waits + attempts * float(settings.KARMCHARI_WEBHOOK_TIMEOUT)
    return timedelta(seconds=min(seconds, timedelta(days=366).total_seconds()))


def notifications_resend_stale(*, older_than: timedelta, batch: int = 500) -> int:
    """The deliveries' outbox sweep (beat's housekeeping): send again the tasks of
    deliveries left pending, because the broker refused the send at commit (the
    very moment things go wrong) or lost the message. Answers how many were sent.

    Stale means never attempted `older_than` after it was recorded, or attempted
    but pending longer than every retry takes. Only while the deliveries' queue is
    empty at the broker: one waiting behind a backlog is not sent again, so the
    same delivery is rarely sent twice, and harmlessly (an attempt of a delivery
    already sent sends nothing)."""
    now = timezone.now()
    stale = NotificationDelivery.objects.filter(
        Q(attempts=0, created__lt=now - older_than)
        | Q(created__lt=now - older_than - _retrying_for()),
        status=NotificationDelivery.Status.PENDING,
    )
    ids = list(stale.order_by("created").values_list("pk", flat=True)[:batch])
    if not ids:
        return 0
    from jobs.services import outbox
    from jobs.tasks import deliver_notification

    queue = deliver_notification.app.conf.task_default_queue
    if outbox._messages_waiting([queue]).get(queue) != 0:
        return 0
    deliveries_send(ids)
    return len(ids)


def notification_metrics() -> Iterator[Metric]:
    # A gauge: deleting a channel deletes its deliveries, and a counter may never
    # go down.
    failures = GaugeMetricFamily(
        "karmchari_notifications_failed",
        "Notifications that failed after every attempt and are still in the "
        "delivery log, by channel kind (not those a disabled channel stopped).",
        labels=["kind"],
    )
    counts = dict.fromkeys(NotificationChannel.Kind.values, 0)
    rows = (
        NotificationDelivery.objects.filter(status=NotificationDelivery.Status.FAILED)
        # Disabling a channel is an operator's stop, not a failure to alert on.
        .exclude(error=CHANNEL_DISABLED)
        .values_list("channel__kind", flat=True)
    )
    for kind in rows:
        counts[kind] = counts.get(kind, 0) + 1
    for kind, n in counts.items():
        failures.add_metric([kind], n)
    yield failures
