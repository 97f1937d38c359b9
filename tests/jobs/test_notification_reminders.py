"""Reminders on a timer (jobs/notification_reminders.py): a job that stays failing
without running again is reminded of, exactly once against run ends and other
sweeps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone

from jobs import notification_reminders, notifications
from jobs.models import (
    App,
    Execution,
    Job,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
)
from jobs.models.notifications import NotificationState
from tests.jobs.conftest import (
    T0,
    at,
    channel_rule,
    received,
    rule,
    run,
    stuck_slots,
    waiting_on_a_lock,
)
from tests.receiver import Receiver

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


@pytest.fixture
def job(make_app: Callable[..., App], make_job: Callable[..., Job]) -> Job:
    return make_job(app=make_app("ops"), name="backup")


def sweep(minute: float, capture: Callable[..., Any]) -> int:
    """Beat's reminder sweep at `minute` after T0, its sends run."""
    with at(minute), capture(execute=True):
        return notification_reminders.notifications_remind_due()


def test_it_reminds_on_a_timer_of_a_job_that_does_not_run_again(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """Failures at minutes 0, 10 and 20, then no run (its schedule disabled): an
    hour after the failure was sent, the sweep sends the reminder its next failure
    would have, counting the two held back and naming the last run; then one an
    hour. A failure after a reminder is held back as after any message, and counted
    from it."""
    rule(job=job, kind="slack", target=receiver.url, events=["failure", "recovery"])
    capture = django_capture_on_commit_callbacks
    runs = []
    for minute in (0, 10, 20):
        with at(minute):
            runs.append(run(job, "failed", capture=capture))

    assert [sweep(minute, capture) for minute in (30, 59.9, 60, 61, 119)] == [
        0,
        0,
        1,
        0,
        0,
    ]
    texts = [r["text"].splitlines()[0] for r in received(receiver)]
    since = T0.strftime("%Y-%m-%d %H:%M UTC")
    assert texts[1] == (
        f"[Karmchari] ops/backup still failing: 2 more failures since {since}; "
        "failed (failed, exit code 2)"
    )
    reminder = NotificationDelivery.objects.filter(status="sent").first()  # newest
    assert reminder is not None
    assert (reminder.event, reminder.execution_id) == ("failure", None)
    payload = reminder.payload
    assert (payload["reminder"], payload["held_back"]) == (True, 2)
    assert payload["held_since"] == T0.isoformat()
    assert payload["execution"]["id"] == runs[-1].pk
    state = NotificationState.objects.get()
    assert (state.told, state.told_at, state.held_back) == (
        "failing",
        T0 + timedelta(hours=1),
        0,
    )

    assert sweep(120, capture) == 1
    assert received(receiver)[-1]["text"].startswith(
        "[Karmchari] ops/backup still failing: nothing new since "
    )
    with at(130):
        run(job, "failed", capture=capture)
    with at(140):
        run(job, "succeeded", capture=capture)
    assert sweep(200, capture) == 0
    assert received(receiver)[-1]["text"].splitlines()[0] == (
        "[Karmchari] ops/backup recovered: succeeded after failing; 1 more failure "
        f"since {(T0 + timedelta(hours=2)):%Y-%m-%d %H:%M} UTC held back"
    )
    assert len(receiver.requests) == 4


def test_it_reminds_on_a_timer_of_a_stuck_queue(
    job: Job,
    receiver: Receiver,
    make_schedule: Callable[..., Any],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """A weekly job's run stays pending (no worker for its queue): the late check
    sends `late` once, and finds no new slot to be late; the sweep reminds of it
    every repeat_every."""
    rule(
        job=job,
        kind="webhook",
        target=receiver.url,
        events=["late"],
        repeat_every=timedelta(minutes=30),
    )
    schedule = make_schedule(job=job, epsilon=timedelta(seconds=30))
    stuck_slots(job, schedule, range(1))
    capture = django_capture_on_commit_callbacks
    with at(1), capture(execute=True):
        assert notifications.notifications_check_late() == 1

    assert [sweep(minute, capture) for minute in (30, 31, 45, 61)] == [0, 1, 0, 1]
    payloads = received(receiver)
    assert [(p["event"], p["reminder"]) for p in payloads] == [
        ("late", False),
        ("late", True),
        ("late", True),
    ]
    late = Execution.objects.get()
    assert {p["execution"]["id"] for p in payloads} == {late.pk}
    assert payloads[1]["execution"]["status"] == "pending"


@pytest.mark.parametrize(
    "case",
    [
        "not-yet",
        "repeat-every-0",
        "channel-disabled",
        "job-disabled",
        "job-deleted",
        "rule-deleted",
        "rule-without-failure",
        "succeeded-unseen",
        "recovered",
        "recovery-only",
    ],
)
def test_it_reminds_no_one_not_owed_a_reminder_in_one_query(
    job: Job,
    make_job: Callable[..., Job],
    case: str,
    django_capture_on_commit_callbacks: Callable[..., Any],
    django_assert_num_queries: Callable[..., Any],
) -> None:
    """An hour after a failure was sent, the sweep sends nothing when the channel
    is disabled (its failures would not be sent either), the job disabled (an
    operator parked it) or deleted, its rules gone or no longer wanting failures,
    or repeat_every is 0 (every failure is sent as it happens: no reminders); nor
    when the job succeeded since, seen by the channel or not. A healthy job, with
    rules of its own, is beside it. It costs one query."""
    capture = django_capture_on_commit_callbacks
    made = rule(
        job=job,
        kind="email",
        target="ops@example.com",
        events=["recovery"] if case == "recovery-only" else ["failure"],
        repeat_every=timedelta(0) if case == "repeat-every-0" else timedelta(hours=1),
    )
    healthy = make_job(app=job.app, name="healthy")
    NotificationRule.objects.create(
        channel=made.channel, job=healthy, events=["failure", "recovery"]
    )
    with at(0):
        run(job, "failed", capture=capture)
        run(healthy, "failed", capture=capture)
        run(healthy, "succeeded", capture=capture)
    if case == "channel-disabled":
        NotificationChannel.objects.filter(pk=made.channel_id).update(enabled=False)
    elif case == "job-disabled":
        Job.objects.filter(pk=job.pk).update(enabled=False)
    elif case == "job-deleted":
        job.delete()
    elif case == "rule-deleted":
        made.delete()
    elif case == "rule-without-failure":
        NotificationRule.objects.filter(pk=made.pk).update(events=["success"])
    elif case == "succeeded-unseen":
        Job.objects.filter(pk=job.pk).update(last_success_at=T0 + timedelta(minutes=1))
    elif case == "recovered":
        with at(1):
            run(job, "succeeded", capture=capture)
    deliveries = NotificationDelivery.objects.count()

    with at(30 if case == "not-yet" else 90), django_assert_num_queries(1):
        assert notification_reminders.notifications_remind_due() == 0
    assert NotificationDelivery.objects.count() == deliveries


def test_it_reminds_by_the_same_rules_as_a_run_would(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """The app's rule to the channel says 10 minutes, but the job has rules of its
    own, which replace the app's: a day for failures, 2 hours for failures and
    successes, 5 minutes for successes only (no flood control there). The shortest
    of those with failures wins: a reminder after 2 hours."""
    made = rule(
        app=job.app,
        kind="webhook",
        target=receiver.url,
        events=["failure"],
        repeat_every=timedelta(minutes=10),
    )
    for events, every in (
        (["failure"], timedelta(days=1)),
        (["failure", "success"], timedelta(hours=2)),
        (["success"], timedelta(minutes=5)),
    ):
        NotificationRule.objects.create(
            channel=made.channel, job=job, events=events, repeat_every=every
        )
    capture = django_capture_on_commit_callbacks
    with at(0):
        run(job, "failed", capture=capture)

    assert [sweep(minute, capture) for minute in (6, 11, 119, 120)] == [0, 0, 0, 1]
    assert [p["reminder"] for p in received(receiver)] == [False, True]


def test_it_reminds_on_a_timer_of_a_flapping_job_that_stopped_failing(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """It failed and succeeded in turn every minute (four changes told, then held
    back: flapping), and stopped at a failure at minute 10. An hour after the last
    message (the recovery at minute 3) the sweep says it flaps and failed; an hour
    later, stable since minute 10, it says where it settled; then it is a job still
    failing like any other."""
    rule(job=job, kind="webhook", target=receiver.url, events=["failure", "recovery"])
    capture = django_capture_on_commit_callbacks
    for minute in range(11):
        with at(minute):
            run(job, "failed" if minute % 2 == 0 else "succeeded", capture=capture)
    assert len(receiver.requests) == 4
    since = T0.isoformat()

    assert [sweep(minute, capture) for minute in (62, 63, 100, 123, 183)] == [
        0,
        1,
        0,
        1,
        1,
    ]
    flapped, settled, still = received(receiver)[4:]
    assert (flapped["event"], flapped["reminder"], flapped["held_back"]) == (
        "failure",
        True,
        4,
    )
    assert flapped["flapping"] == {"changes": 11, "since": since}
    assert (settled["flapping"], settled["held_back"]) == (
        {"changes": 11, "since": since},
        0,
    )
    assert (still["flapping"], still["reminder"]) == (None, True)
    state = NotificationState.objects.get()
    assert (state.told, state.flapping) == ("failing", False)


def test_it_sends_one_reminder_when_the_state_changes_between_read_and_write(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """Between the sweep's read of a state row and its update, a failed run's end
    sends the reminder (then another sweep would find it told): the sweep's
    conditional update finds the row changed and sends nothing."""
    rule(job=job, kind="webhook", target=receiver.url, events=["failure"])
    capture = django_capture_on_commit_callbacks
    with at(0):
        run(job, "failed", capture=capture)
    real = notification_reminders._remind

    def run_ends_first(state: NotificationState, *, now: Any) -> Any:
        run(job, "failed", capture=capture)
        return real(state, now=now)

    with mock.patch("jobs.notification_reminders._remind", run_ends_first):
        assert sweep(60, capture) == 0

    assert [p["reminder"] for p in received(receiver)] == [False, True]
    assert received(receiver)[-1]["execution"]["finished_at"] == (
        (T0 + timedelta(minutes=60)).isoformat()
    )
    assert NotificationState.objects.get().told_at == T0 + timedelta(minutes=60)


def test_it_sends_one_reminder_when_two_sweeps_overlap(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """Two workers sweep at once (beat sent the task twice): both read the row owed
    a reminder; the one that updates it first sends it, the other nothing."""
    rule(job=job, kind="webhook", target=receiver.url, events=["failure"])
    capture = django_capture_on_commit_callbacks
    with at(0):
        run(job, "failed", capture=capture)
    real = notification_reminders._remind
    inner: list[int] = []

    def other_sweep_first(state: NotificationState, *, now: Any) -> Any:
        if not inner:
            with mock.patch("jobs.notification_reminders._remind", real):
                inner.append(notification_reminders.notifications_remind_due())
        return real(state, now=now)

    with mock.patch("jobs.notification_reminders._remind", other_sweep_first):
        assert sweep(60, capture) == 0

    assert inner == [1]
    assert [p["reminder"] for p in received(receiver)] == [False, True]


@pytest.mark.parametrize("first", ["sweep", "run"])
@pytest.mark.django_db(transaction=True)
def test_it_sends_one_reminder_when_a_sweep_and_a_run_end_race(
    make_app: Callable[..., App], make_job: Callable[..., Job], first: str
) -> None:
    """The sweep and a failed run's end, on two connections, both find the channel
    owed a reminder. The first holds the state row (the sweep by its update, the
    run's end by its select_for_update) while it records the reminder; the second
    waits for it, then finds the row changed: the run's failure is held back and
    counted, or the sweep sends nothing."""
    from django.db import connection

    from tests.jobs.test_races import in_thread, race
    from tests.waiting import wait_for

    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL: SQLite serialises writers, no race")
    job = make_job(app=make_app("ops"), name="backup")
    made = channel_rule("ops", job=job, events=["failure"])
    hour_ago = timezone.now() - timedelta(hours=1, seconds=1)
    NotificationState.objects.create(
        job=job,
        channel=made.channel,
        told="failing",
        told_at=hour_ago,
        health="failing",
        health_since=hour_ago,
        held_back=2,
    )
    end = Execution.objects.create(job=job, status="failed", finished_at=timezone.now())
    notifications.forget_rule_targets()
    second: list[threading.Thread] = []
    answers: list[Any] = []

    def sweep_now() -> int:
        return notification_reminders.notifications_remind_due()

    def end_now() -> None:
        notifications.execution_changed(execution=end)

    def meanwhile() -> None:
        t, out = in_thread(end_now if first == "sweep" else sweep_now)
        second.append(t)
        answers.append(out)
        wait_for(lambda: waiting_on_a_lock() or not t.is_alive(), timeout=10)

    with mock.patch("jobs.tasks.deliver_notification.delay"):
        # Each held in delivery_record: after it took the row, before it records.
        if first == "sweep":
            held_in = "jobs.notification_reminders.delivery_record"
            assert race(held_in, sweep_now, meanwhile) == 1
        else:
            race("jobs.notifications.delivery_record", end_now, meanwhile)
        second[0].join(10)
    assert not second[0].is_alive()

    deliveries = NotificationDelivery.objects.filter(event="failure")
    reminder = deliveries.get(status="pending")
    assert (reminder.payload["reminder"], reminder.payload["held_back"]) == (True, 2)
    state = NotificationState.objects.get()
    if first == "sweep":
        assert reminder.execution_id is None
        assert deliveries.filter(status="held", execution=end).exists()
        assert state.held_back == 1
    else:
        assert reminder.execution_id == end.pk
        assert answers[0] == [0]
        assert state.held_back == 0
    assert deliveries.count() == (2 if first == "sweep" else 1)


def test_it_sends_the_reminders_task_with_the_late_check(fresh_cache: None) -> None:
    """Beat's housekeeping asks every second; the tasks go at most every
    KARMCHARI_NOTIFY_CHECK_SECONDS."""
    with (
        mock.patch("jobs.tasks.check_notifications.delay") as check,
        mock.patch("jobs.tasks.remind_notifications.delay") as remind,
    ):
        notifications.notifications_check_due()
        notifications.notifications_check_due()

    assert (check.call_count, remind.call_count) == (1, 1)
