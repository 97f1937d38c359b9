"""Flood control (NotificationState, jobs/notifications.py): the first failure or
late run is sent, more are held back and counted, one reminder per repeat_every, a
recovery that says how many were held back, flapping held until stable."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone

from jobs import notification_sending, notifications
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
    finished_run,
    held,
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


def test_it_sends_the_first_failure_and_holds_back_the_next(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """A job failing every minute: its first failure goes out at once, the next
    ones (within the rule's repeat_every, 1 hour by default) are recorded, held
    back, and counted on the channel's state."""
    made = rule(job=job, kind="webhook", target=receiver.url, events=["failure"])
    assert made.repeat_every == timedelta(hours=1)

    for minute in range(3):
        with at(minute):
            run(job, "failed", capture=django_capture_on_commit_callbacks)

    [first] = received(receiver)
    assert first["event"] == "failure"
    assert (first["reminder"], first["held_back"]) == (False, 0)
    assert held() == ["failure", "failure"]
    state = NotificationState.objects.get(job=job, channel=made.channel)
    assert (state.told, state.told_at, state.held_back) == ("failing", T0, 2)


def test_it_sends_one_reminder_with_the_count_after_repeat_every(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """Failures at minutes 0, 10, 20, 30, 60 and 70 with repeat_every 1 hour: the
    first is sent; the three after it held; the one at 60 minutes goes out as a
    reminder that counts them; the one after that is held again, counted from the
    reminder."""
    rule(job=job, kind="slack", target=receiver.url, events=["failure"])
    for minute in (0, 10, 20, 30, 60, 70):
        with at(minute):
            run(job, "failed", capture=django_capture_on_commit_callbacks)

    texts = [r["text"].splitlines()[0] for r in received(receiver)]
    since = T0.strftime("%Y-%m-%d %H:%M UTC")
    assert texts == [
        "[Karmchari] ops/backup failed (failed, exit code 2)",
        f"[Karmchari] ops/backup still failing: 3 more failures since {since}; "
        "failed (failed, exit code 2)",
    ]
    reminder = NotificationDelivery.objects.filter(status="sent").order_by("id").last()
    assert reminder is not None
    assert (reminder.payload["reminder"], reminder.payload["held_back"]) == (True, 3)
    assert reminder.payload["held_since"] == T0.isoformat()
    assert held() == ["failure"] * 4
    assert NotificationState.objects.get().held_back == 1


def test_it_reports_a_recovery_with_the_failures_held_back(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """Fail, fail, fail, succeed: the failure, then a recovery saying two more
    failures were held back. The channel is told "ok": a success after it is no
    news, and the next failure goes out at once."""
    rule(job=job, kind="webhook", target=receiver.url, events=["failure", "recovery"])
    capture = django_capture_on_commit_callbacks
    for minute, status in enumerate(["failed", "failed", "failed", "succeeded"]):
        with at(minute):
            run(job, status, capture=capture)
    with at(4):
        run(job, "succeeded", capture=capture)
    with at(5):
        run(job, "failed", capture=capture)

    payloads = received(receiver)
    assert [p["event"] for p in payloads] == ["failure", "recovery", "failure"]
    recovery = payloads[1]
    assert (recovery["held_back"], recovery["held_since"]) == (2, T0.isoformat())
    assert payloads[2]["held_back"] == 0
    state = NotificationState.objects.get()
    assert (state.told, state.told_at) == ("failing", T0 + timedelta(minutes=5))


def test_it_says_in_a_recovery_message_how_many_failures_were_held_back(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    rule(job=job, kind="slack", target=receiver.url, events=["failure", "recovery"])
    for minute, status in enumerate(["failed", "failed", "succeeded"]):
        with at(minute):
            run(job, status, capture=django_capture_on_commit_callbacks)

    since = T0.strftime("%Y-%m-%d %H:%M UTC")
    assert received(receiver)[1]["text"].splitlines()[0] == (
        "[Karmchari] ops/backup recovered: succeeded after failing; 1 more failure "
        f"since {since} held back"
    )


def test_it_sends_every_failure_when_repeat_every_is_0(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    rule(
        job=job,
        kind="webhook",
        target=receiver.url,
        events=["failure", "recovery"],
        repeat_every=timedelta(0),
    )
    statuses = ["failed", "failed", "failed", "succeeded", "failed", "succeeded"] * 2
    for minute, status in enumerate(statuses):
        with at(minute):
            run(job, status, capture=django_capture_on_commit_callbacks)

    assert [p["event"] for p in received(receiver)] == (
        ["failure"] * 3 + ["recovery", "failure", "recovery"]
    ) * 2
    assert all(not p["reminder"] and p["held_back"] == 0 for p in received(receiver))
    assert held() == []


def test_it_uses_the_shortest_repeat_every_of_a_channels_rules(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """The app's rule (a day) and the job's own rule (10 minutes) send to one
    channel; the job's rules replace its app's, and of two of the job's rules the
    more talkative one wins."""
    made = rule(
        job=job,
        kind="webhook",
        target=receiver.url,
        events=["failure"],
        repeat_every=timedelta(days=1),
    )
    NotificationRule.objects.create(
        channel=made.channel,
        job=job,
        events=["failure", "success"],
        repeat_every=timedelta(minutes=10),
    )
    for minute in (0, 5, 10):
        with at(minute):
            run(job, "failed", capture=django_capture_on_commit_callbacks)

    assert [(p["event"], p["reminder"]) for p in received(receiver)] == [
        ("failure", False),
        ("failure", True),
    ]


def test_it_holds_back_late_runs_the_same_way(
    job: Job,
    receiver: Receiver,
    make_schedule: Callable[..., Any],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """A stuck queue: a run a minute stays pending. The first late run is sent,
    the next ones held (once each: the check runs every few seconds), and after
    repeat_every a reminder counts them. Then the queue drains: a recovery."""
    rule(
        job=job,
        kind="webhook",
        target=receiver.url,
        events=["late", "recovery"],
        repeat_every=timedelta(minutes=10),
    )
    schedule = make_schedule(job=job, epsilon=timedelta(seconds=30))

    def check(minute: float) -> int:
        with at(minute), django_capture_on_commit_callbacks(execute=True):
            return notifications.notifications_check_late()

    for minute in range(11):
        stuck_slots(job, schedule, range(minute, minute + 1))
        check(minute + 0.6)
    check(10.7)

    payloads = received(receiver)
    assert [(p["event"], p["reminder"], p["held_back"]) for p in payloads] == [
        ("late", False, 0),
        ("late", True, 9),
    ]
    assert held() == ["late"] * 9
    assert NotificationDelivery.objects.filter(event="late").count() == 11

    with at(12):
        run(job, "succeeded", capture=django_capture_on_commit_callbacks)
    assert [p["event"] for p in received(receiver)][-1] == "recovery"


def test_it_tells_of_a_failure_after_a_success_its_channel_did_not_see(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """The channel was disabled while the job recovered: its state still says
    "failing", but the job's last success is later. The next failure is news."""
    made = rule(job=job, kind="webhook", target=receiver.url, events=["failure"])
    capture = django_capture_on_commit_callbacks
    with at(0):
        run(job, "failed", capture=capture)
    NotificationChannel.objects.filter(pk=made.channel_id).update(enabled=False)
    with at(1):
        run(job, "succeeded", capture=capture)
    NotificationChannel.objects.filter(pk=made.channel_id).update(enabled=True)
    with at(2):
        run(job, "failed", capture=capture)

    assert [(p["event"], p["reminder"]) for p in received(receiver)] == [
        ("failure", False),
        ("failure", False),
    ]


def test_it_holds_back_the_changes_of_a_flapping_job_until_it_is_stable(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """Fails and succeeds in turn every minute: four changes are told (failure,
    recovery, failure, recovery); from the fifth within repeat_every (1 hour) the
    job is flapping and its changes are held. It then succeeds for an hour: the
    first success after that says it recovered, and how it flapped."""
    rule(job=job, kind="webhook", target=receiver.url, events=["failure", "recovery"])
    capture = django_capture_on_commit_callbacks
    for minute in range(10):
        with at(minute):
            run(job, "failed" if minute % 2 == 0 else "succeeded", capture=capture)
    assert [p["event"] for p in received(receiver)] == [
        "failure",
        "recovery",
        "failure",
        "recovery",
    ]
    # Minutes 4 to 9: three failures, three recoveries held back.
    assert held() == ["failure", "recovery"] * 3
    for minute in range(10, 69, 10):
        with at(minute):
            run(job, "succeeded", capture=capture)
    assert len(receiver.requests) == 4  # stable since minute 9: not for an hour yet

    with at(69):
        run(job, "succeeded", capture=capture)

    last = received(receiver)[-1]
    assert last["event"] == "recovery"
    assert last["flapping"] == {"changes": 10, "since": T0.isoformat()}
    assert (last["held_back"], last["held_since"]) == (
        3,
        (T0 + timedelta(minutes=3)).isoformat(),
    )
    day = T0.strftime("%Y-%m-%d")
    assert notification_sending._text(last).splitlines()[0] == (
        "[Karmchari] ops/backup recovered: succeeded after failing; flapping: 10 "
        f"changes since {day} {T0:%H:%M} UTC; 3 more failures since {day} "
        f"{T0 + timedelta(minutes=3):%H:%M} UTC held back"
    )
    state = NotificationState.objects.get()
    assert (state.told, state.changes, state.flapping) == ("ok", 0, False)


def test_it_reminds_a_flapping_job_at_most_every_repeat_every(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """A job that never settles is not silent for ever: a failure an hour after the
    last message (the recovery at minute 3) goes out as a reminder, saying it
    flaps."""
    rule(job=job, kind="webhook", target=receiver.url, events=["failure", "recovery"])
    for minute in range(66):
        with at(minute):
            run(
                job,
                "failed" if minute % 2 == 0 else "succeeded",
                capture=django_capture_on_commit_callbacks,
            )

    payloads = received(receiver)
    assert [p["event"] for p in payloads] == [
        "failure",
        "recovery",
        "failure",
        "recovery",
        "failure",
    ]
    reminder = payloads[-1]
    assert reminder["execution"]["finished_at"] == (
        (T0 + timedelta(minutes=64)).isoformat()
    )
    assert (reminder["reminder"], reminder["held_back"]) == (True, 30)
    assert reminder["flapping"] == {"changes": 65, "since": T0.isoformat()}
    assert (
        notification_sending._text(reminder)
        .splitlines()[0]
        .startswith("[Karmchari] ops/backup is flapping: 65 changes since ")
    )


@pytest.mark.parametrize("told_before", [True, False])
@pytest.mark.django_db(transaction=True)
def test_it_sends_one_first_failure_when_two_workers_end_runs_at_once(
    make_app: Callable[..., App], make_job: Callable[..., Job], told_before: bool
) -> None:
    """Two runs of a job fail at once on two workers. The first end holds the
    channel's state row while it records its failure; the second waits for it,
    then finds the channel told, and holds its failure back. Without the lock both
    would read "ok" and send a first failure. The row exists (the channel was told
    of an earlier failure and its recovery), or not (both make it: the second waits
    on the unique constraint)."""
    from django.db import connection

    from tests.jobs.test_races import in_thread, race
    from tests.waiting import wait_for

    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL: SQLite serialises writers, no race")
    job = make_job(app=make_app("ops"), name="backup")
    made = channel_rule("ops", job=job, events=["failure"])
    if told_before:
        NotificationState.objects.create(
            job=job, channel=made.channel, told_at=timezone.now()
        )
    ends = [
        Execution.objects.create(job=job, status="failed", finished_at=timezone.now())
        for _ in range(2)
    ]
    notifications.forget_rule_targets()
    second: list[threading.Thread] = []

    def meanwhile() -> None:
        t, _ = in_thread(lambda: notifications.execution_changed(execution=ends[1]))
        second.append(t)
        wait_for(lambda: waiting_on_a_lock() or not t.is_alive(), timeout=10)

    with mock.patch("jobs.tasks.deliver_notification.delay"):
        race(
            "jobs.notifications.delivery_record",
            lambda: notifications.execution_changed(execution=ends[0]),
            meanwhile,
        )
        second[0].join(10)

    deliveries = NotificationDelivery.objects.filter(event="failure")
    assert sorted(deliveries.values_list("status", flat=True)) == ["held", "pending"]
    assert NotificationState.objects.get().held_back == 1


def test_it_keeps_held_back_deliveries_out_of_the_resend_sweep(
    job: Job, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """A held delivery is never sent: beat's sweep of pending ones leaves it."""
    channel_rule("ops", job=job, events=["failure"])
    with at(0):
        finished_run(job, "failed", django_capture_on_commit_callbacks)
    with at(1):
        finished_run(job, "failed", django_capture_on_commit_callbacks)
    empty = mock.patch(
        "jobs.services.outbox._messages_waiting", return_value={"celery": 0}
    )

    with empty, at(600):
        assert notifications.notifications_resend_stale(older_than=timedelta(0)) == 0
    assert held() == ["failure"]


def test_it_refuses_a_repeat_every_out_of_range_in_the_database(job: Job) -> None:
    from django.db import IntegrityError, transaction

    channel = NotificationChannel.objects.create(
        name="ops", kind="email", target="ops@example.com"
    )
    for bad in (timedelta(seconds=-1), timedelta(days=30, seconds=1)):
        with pytest.raises(IntegrityError), transaction.atomic():
            NotificationRule.objects.create(
                channel=channel, job=job, events=["failure"], repeat_every=bad
            )
    NotificationRule.objects.create(
        channel=channel, job=job, events=["failure"], repeat_every=timedelta(days=30)
    )
