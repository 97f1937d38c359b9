"""Reminders on a timer: a job that stays failing without running again (its
schedule disabled, its next slot far off, its queue stuck) would never be reminded
of, as reminders go out with a run's end (jobs/notifications.py). With the late
check, beat's housekeeping sends the task jobs.remind_notifications, which runs
notifications_remind_due. See docs/notifications.md.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import (
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.utils import timezone

from jobs.models import Execution, NotificationDelivery, NotificationRule
from jobs.models.notifications import FLAP_CHANGES, NotificationState, Verdict
from jobs.notifications import (
    CONTROLLED,
    FAILURE_STATUSES,
    deliveries_send,
    delivery_record,
    flood_payload,
)

logger = logging.getLogger(__name__)

Event = NotificationRule.Event


def _pair_rules() -> QuerySet[NotificationRule]:
    """The rules a state row's channel has for its job (OuterRef: the row), as
    notification_rules() picks them: the job's own, else its app's."""
    own = NotificationRule.objects.filter(job_id=OuterRef(OuterRef("job_id")))
    return NotificationRule.objects.filter(
        Q(job_id=OuterRef("job_id"))
        | (Q(app_id=OuterRef("job__app_id")) & ~Exists(own)),
        channel_id=OuterRef("channel_id"),
    )


def _wanting(*events: str) -> Q:
    """Rules whose events include any of these. JSON membership as text (the
    quotes keep `late` from matching another name): SQLite has no JSON
    containment lookup."""
    wants = Q()
    for event in events:
        wants |= Q(events__icontains=f'"{event}"')
    return wants


def _reminders_due(now: datetime) -> QuerySet[NotificationState]:
    """The state rows whose channel is owed a reminder now, in one query: the
    channel (enabled) was told the job is failing, the job (enabled) has not
    succeeded since (its last_success_at, as the run's path reads it), its rules
    for the channel still want `failure` or `late`, and repeat_every (the shortest
    of its rules', as notifications_queue takes it; 0 never) has passed since the
    channel was last told. A flapping job whose last run failed is owed one too
    (whatever the channel was last told: its changes were held back), saying it
    flaps, or where it settled once stable for repeat_every. Each row carries that
    repeat_every (`repeat`) and which of the two events its rules want."""
    Health = NotificationState.Health
    rules = _pair_rules()
    repeat = Subquery(
        rules.filter(_wanting(*sorted(CONTROLLED)))
        .order_by("repeat_every")
        .values("repeat_every")[:1]
    )
    since = ExpressionWrapper(
        Value(now, output_field=DateTimeField()) - F("repeat"),
        output_field=DateTimeField(),
    )
    told_long_ago = Q(told_at__isnull=True) | Q(told_at__lte=since)
    return (
        NotificationState.objects.filter(
            Q(job__last_success_at__isnull=True)
            | Q(health_since__isnull=True)
            | Q(job__last_success_at__lte=F("health_since")),
            health=Health.FAILING,
            channel__enabled=True,
            job__enabled=True,
        )
        .annotate(
            repeat=repeat,
            wants_failure=Exists(rules.filter(_wanting(Event.FAILURE))),
            wants_late=Exists(rules.filter(_wanting(Event.LATE))),
        )
        .filter(Q(wants_failure=True) | Q(wants_late=True), repeat__gt=timedelta(0))
        .filter(told_long_ago, Q(told=Health.FAILING) | Q(changes__gt=FLAP_CHANGES))
        .select_related("channel", "job__app")
        .order_by("told_at", "pk")
    )


def notifications_remind_due(*, batch: int = 500) -> int:
    """Beat's timer for reminders (the task jobs.remind_notifications, sent with
    the late check): a job that failed and does not run again (its schedule
    disabled, its next slot far off, its queue stuck) would otherwise never be
    reminded of, as reminders go out with a run. Sends each channel owed one
    (_reminders_due) the reminder its next failure would have carried. Answers
    how many were sent.

    Costs one query when none is owed. Exactly once: a run's end, or another
    sweep, that changed the state row since it was read wins (_remind)."""
    now = timezone.now()
    sent = 0
    for state in _reminders_due(now)[:batch]:
        try:
            if _remind(state, now=now) is not None:
                sent += 1
        except Exception:
            logger.exception(
                "notification state %s: could not send its reminder", state.pk
            )
    if sent:
        logger.info("notifications: %d reminder(s) of jobs still failing", sent)
    return sent


def _remind(state: NotificationState, *, now: datetime) -> NotificationDelivery | None:
    """One channel's reminder of one job, as observe() decides it for a failure
    (a reminder with the count held back; after flapping, where it settled) but
    counting no failure: none happened.

    Claimed with a conditional update of the state row on every field observe()
    changes, as read: a run's end that changed it meanwhile (holding the row's
    lock while it records, jobs_notificationstate_one_per_pair) or another sweep
    leaves it unchanged, and nothing is sent twice. The delivery names no run (it
    is about the job); its payload's `execution` is the last run the channel heard
    of as a failure or late run."""
    repeat: timedelta | None = getattr(state, "repeat", None)
    job = state.job
    success = job.last_success_at
    if not repeat or (
        success is not None
        and state.health_since is not None
        and success > state.health_since
    ):
        return None
    read = {field: getattr(state, field) for field in NotificationState.OBSERVED}
    verdict = state.observe(
        failing=True, now=now, repeat=repeat, last_success_at=success
    )
    if verdict.action not in (Verdict.TELL, Verdict.REMIND):
        return None  # not owed after all: what the query saw has changed
    wanted = [Event.FAILURE] if getattr(state, "wants_failure", False) else []
    if getattr(state, "wants_late", False):
        wanted.append(Event.LATE)
    last = (
        NotificationDelivery.objects.filter(
            channel_id=state.channel_id, job_id=job.pk, event__in=wanted
        )
        .order_by("-created", "-id")
        .values_list("event", "payload")
        .first()
    )
    if last is not None:
        event, told = last
        payload = flood_payload(event, job, None, verdict)
        if isinstance(told, dict) and told.get("execution"):
            payload["execution"] = told["execution"]
    else:
        # The delivery log was pruned (KARMCHARI_KEEP_DELIVERY_DAYS): the job's
        # last failed run, if retention kept one.
        event = wanted[0]
        failed = (
            Execution.objects.filter(job_id=job.pk, status__in=FAILURE_STATUSES)
            .order_by("-finished_at", "-id")
            .first()
        )
        payload = flood_payload(event, job, failed, verdict)
    with transaction.atomic():
        claimed = NotificationState.objects.filter(pk=state.pk, **read).update(
            **{field: getattr(state, field) for field in NotificationState.OBSERVED}
        )
        if not claimed:
            return None
        delivery = delivery_record(state.channel, job, None, event, verdict, payload)
        transaction.on_commit(lambda: deliveries_send([delivery.pk]))
    return delivery
