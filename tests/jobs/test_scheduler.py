"""The beat scheduler, stepped with frozen time (tick_once), never slept."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.db import OperationalError

from jobs import services
from jobs.models import Execution, Job, Schedule
from jobs.runners import Outcome
from jobs.scheduler import MAX_SLEEP, JobScheduler
from karmchari_site.celery import app as celery_app

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0 - timedelta(seconds=30), tick=False) as traveller:
        yield traveller


@pytest.fixture
def sent() -> Iterator[mock.MagicMock]:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


@pytest.fixture
def beat(
    django_capture_on_commit_callbacks: Callable,
    sent: mock.MagicMock,
    settings: Any,
) -> Callable[[], float]:
    # Fire at the slot, not ahead, so each test says exactly when a slot is due.
    settings.KARMCHARI_FIRE_AHEAD = 0
    scheduler = JobScheduler(app=celery_app)

    def tick() -> float:
        # The test's transaction must stay open: keep beat from recycling it.
        with (
            mock.patch("jobs.scheduler.close_old_connections"),
            django_capture_on_commit_callbacks(execute=True),
        ):
            return scheduler.tick_once()

    return tick


def executions(**filters: object) -> list[Execution]:
    return list(Execution.objects.filter(**filters).order_by("scheduled_for", "id"))


def test_it_fires_a_due_slot_once_and_advances(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    sent: mock.MagicMock,
) -> None:
    schedule = make_schedule("0 9 * * *")
    assert schedule.next_run_at == T0
    assert beat() == MAX_SLEEP and not Execution.objects.exists()

    clock.move_to(T0 + timedelta(milliseconds=20))
    beat()
    beat()  # same instant again: nothing new
    [run] = executions()
    assert (run.scheduled_for, run.status, run.trigger) == (T0, "pending", "schedule")
    sent.assert_called_once_with(
        (run.pk,), queue="celery", countdown=None, producer=mock.ANY
    )
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(days=1)
    assert schedule.last_run_at == T0


def test_it_fires_ahead_with_the_slot_as_eta(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    sent: mock.MagicMock,
    settings: Any,
) -> None:
    settings.KARMCHARI_FIRE_AHEAD = 0.5
    make_schedule("0 9 * * *")
    clock.move_to(T0 - timedelta(milliseconds=600))
    assert beat() == pytest.approx(0.1)
    assert not sent.called
    clock.move_to(T0 - timedelta(milliseconds=400))
    beat()
    assert sent.call_args.kwargs["countdown"] == pytest.approx(0.4)


def test_it_answers_the_time_until_the_next_slot(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
) -> None:
    make_schedule("0 9 * * *")
    clock.move_to(T0 - timedelta(milliseconds=250))
    assert beat() == pytest.approx(0.25)


def test_it_records_a_slot_later_than_epsilon_as_skipped(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    sent: mock.MagicMock,
) -> None:
    make_schedule("0 9 * * *", epsilon=timedelta(seconds=10), misfire_policy="skip")
    clock.move_to(T0 + timedelta(seconds=11))
    beat()
    [skipped] = executions()
    assert skipped.status == "skipped"
    assert "later than epsilon (10s)" in skipped.reason
    assert not sent.called


def test_it_runs_the_latest_slot_only_after_downtime_under_run_once(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
) -> None:
    make_schedule("*/5 * * * *", epsilon=timedelta(seconds=30))
    clock.move_to(T0 + timedelta(minutes=30, seconds=40))
    beat()
    rows = executions()
    assert [(r.scheduled_for, r.status) for r in rows] == [
        (T0, "skipped"),
        (T0 + timedelta(minutes=30), "pending"),
    ]
    assert "6 slots" in rows[0].reason


def test_it_catches_up_each_missed_slot_under_run_all(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
) -> None:
    job = make_job(overlap_policy="allow_all")
    make_schedule("*/5 * * * *", job=job, misfire_policy="run_all")
    clock.move_to(T0 + timedelta(minutes=20, seconds=40))
    beat()
    assert [r.status for r in executions()] == ["pending"] * 5


def test_it_records_why_the_slot_did_not_run_under_skip_overlap(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_execution: Callable[..., Execution],
) -> None:
    schedule = make_schedule("0 9 * * *")
    running = make_execution(job=schedule.job, status="running")
    clock.move_to(T0)
    beat()
    [slot] = executions(schedule=schedule)
    assert slot.status == "skipped"
    assert slot.reason.startswith("overlap:")
    assert running.pk != slot.pk


def test_it_keeps_one_run_and_starts_it_when_the_other_ends_under_buffer_one(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    job = make_job(overlap_policy="buffer_one")
    schedule = make_schedule("* * * * *", job=job)
    running = Execution.objects.create(job=job, status="running")
    clock.move_to(T0)
    beat()
    clock.move_to(T0 + timedelta(minutes=1))
    beat()
    buffered, extra = executions(schedule=schedule)
    assert (buffered.status, buffered.dispatched_at) == ("pending", None)
    assert extra.status == "skipped" and "already buffered" in extra.reason
    assert not sent.called

    with django_capture_on_commit_callbacks(execute=True):
        services.execution_finish(
            execution=running, outcome=Outcome(status="succeeded")
        )
    sent.assert_called_once_with(
        (buffered.pk,), queue="celery", countdown=None, producer=mock.ANY
    )
    buffered.refresh_from_db()
    assert buffered.dispatched_at is not None


def test_it_buffers_every_run_under_buffer_all(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
) -> None:
    job = make_job(overlap_policy="buffer_all")
    make_schedule("* * * * *", job=job)
    Execution.objects.create(job=job, status="running")
    for minute in range(3):
        clock.move_to(T0 + timedelta(minutes=minute))
        beat()
    assert Execution.objects.filter(status="pending", dispatched_at=None).count() == 3


def test_it_respects_max_concurrent_under_allow_all(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
) -> None:
    job = make_job(overlap_policy="allow_all", max_concurrent=2)
    make_schedule("* * * * *", job=job)
    for minute in range(3):
        clock.move_to(T0 + timedelta(minutes=minute))
        beat()
    assert [r.status for r in executions()] == ["pending", "pending", "skipped"]
    assert "max_concurrent (2)" in executions()[-1].reason


@pytest.mark.parametrize(
    ("policy", "sent_now"), [("cancel_other", False), ("terminate_other", True)]
)
def test_it_asks_the_running_one_to_stop_under_cancel_and_terminate(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    policy: str,
    sent_now: bool,
) -> None:
    job = make_job(overlap_policy=policy)
    schedule = make_schedule("0 9 * * *", job=job)
    running = Execution.objects.create(job=job, status="running")
    clock.move_to(T0)
    beat()
    running.refresh_from_db()
    assert running.desired_state == "kill"
    [new] = executions(schedule=schedule)
    assert new.status == "pending"
    assert sent.called is sent_now


@pytest.mark.parametrize("policy", ["cancel_other", "terminate_other"])
def test_it_ends_the_runs_that_have_not_started_yet_under_cancel_and_terminate(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
    policy: str,
) -> None:
    """A run sent but not claimed yet (the workers are busy), or held back by an
    earlier slot, is active too: the next slot ends it before it starts, instead of
    letting it run beside (terminate) or after (cancel) the new one."""
    job = make_job(overlap_policy=policy)
    schedule = make_schedule("* * * * *", job=job)
    running = Execution.objects.create(job=job, status="running")
    clock.move_to(T0)
    beat()
    [first] = executions(schedule=schedule)
    if policy == "terminate_other":
        # The first slot was sent, and is still waiting for a worker.
        assert (first.status, first.dispatched_at is not None) == ("pending", True)
    clock.move_to(T0 + timedelta(minutes=1))
    beat()
    first.refresh_from_db()
    assert (first.status, first.desired_state) == ("killed", "kill")
    assert first.reason == "Its job's overlap policy. It was stopped before it started."
    assert first.events.get().detail.endswith("Was pending: it will not start.")
    second = executions(schedule=schedule)[-1]
    assert second.status == "pending"
    running.refresh_from_db()
    assert (running.status, running.desired_state) == ("running", "kill")


def test_it_delays_by_jitter_within_bounds_and_before_the_next_slot(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
) -> None:
    for n in range(20):
        make_schedule(
            "* * * * *",
            job=make_job(name=f"j{n}"),
            jitter=timedelta(seconds=30 if n % 2 else 300),
        )
    clock.move_to(T0)
    beat()
    delays = [c.kwargs["countdown"] or 0.0 for c in sent.call_args_list]
    assert len(delays) == 20
    assert all(0 <= d < 60 for d in delays)  # 300 s of jitter, capped by the slot


def test_it_starts_a_slot_reached_late_before_the_next_slot_despite_its_jitter(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    sent: mock.MagicMock,
) -> None:
    make_schedule("* * * * *", jitter=timedelta(seconds=50))
    clock.move_to(T0 + timedelta(seconds=40))  # the beat reaches T0's slot late
    with mock.patch("jobs.services.schedules.random.uniform", return_value=50.0):
        beat()
    [run] = executions()
    assert run.scheduled_for == T0
    # Due 50 s after its slot, 10 s from now: not 50 s from now, past T0 + 60 s.
    assert sent.call_args.kwargs["countdown"] == pytest.approx(10.0)
    assert run.dispatched_at == T0 + timedelta(seconds=50)


def test_it_starts_at_once_a_late_slot_whose_jitter_has_passed(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    sent: mock.MagicMock,
) -> None:
    make_schedule("* * * * *", jitter=timedelta(seconds=50))
    clock.move_to(T0 + timedelta(seconds=40))
    with mock.patch("jobs.services.schedules.random.uniform", return_value=20.0):
        beat()
    assert sent.call_args.kwargs["countdown"] is None  # due 20 s ago: now


def test_it_keeps_hashed_jitter_stable_per_job(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    sent: mock.MagicMock,
) -> None:
    make_schedule("* * * * *", jitter=timedelta(seconds=30), jitter_hashed=True)
    for minute in range(3):
        clock.move_to(T0 + timedelta(minutes=minute))
        beat()
    delays = {c.kwargs["countdown"] for c in sent.call_args_list}
    assert len(delays) == 1
    assert 0 < next(iter(delays)) < 30


def test_it_waits_for_start_at_and_stops_after_end_at(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
) -> None:
    schedule = make_schedule(
        "* * * * *",
        start_at=T0 + timedelta(minutes=10),
        end_at=T0 + timedelta(minutes=11),
    )
    assert schedule.next_run_at == T0 + timedelta(minutes=10)
    for minute in (10, 11, 12):
        clock.move_to(T0 + timedelta(minutes=minute))
        beat()
    assert len(executions()) == 2
    schedule.refresh_from_db()
    assert schedule.next_run_at is None


def test_it_stops_when_repetitions_are_exhausted(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
) -> None:
    schedule = make_schedule("* * * * *", repetitions_left=2)
    for minute in range(4):
        clock.move_to(T0 + timedelta(minutes=minute))
        beat()
        # Each run is done by the next slot (else the overlap policy skips it).
        Execution.objects.filter(status="pending").update(status="succeeded")
    schedule.refresh_from_db()
    assert (schedule.repetitions_left, schedule.next_run_at) == (0, None)
    assert len(executions()) == 2


def test_it_runs_an_interval_schedule_s_repeats(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
) -> None:
    make_schedule("R1/2026-03-02T09:00:00Z/PT10S", kind="interval")
    for seconds in (0, 10, 20, 30):
        clock.move_to(T0 + timedelta(seconds=seconds))
        beat()
    assert [r.scheduled_for for r in executions()] == [
        T0,
        T0 + timedelta(seconds=10),
    ]


def test_it_applies_the_misfire_policy_to_slots_missed_while_disabled_on_reenabling(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
) -> None:
    schedule = make_schedule("* * * * *")
    services.schedule_update(schedule=schedule, enabled=False)
    clock.move_to(T0 + timedelta(minutes=10, seconds=40))
    beat()
    assert not Execution.objects.exists()
    services.schedule_update(schedule=schedule, enabled=True)
    rows = executions()
    assert [(r.status, r.scheduled_for) for r in rows] == [
        ("skipped", T0),
        ("pending", T0 + timedelta(minutes=10)),
    ]
    assert rows[0].reason.startswith("schedule was disabled:")


def test_it_runs_only_the_latest_slot_of_a_fast_schedule_on_reenabling(
    clock: time_machine.Coordinates,
    make_schedule: Callable[..., Schedule],
) -> None:
    """Every 5 s with the default 60 s epsilon: the slots of the last minute are
    missed too (the schedule was off), not a dozen runs still "on time"."""
    schedule = make_schedule("*/5 * * * * *")
    services.schedule_update(schedule=schedule, enabled=False)
    clock.move_to(T0 + timedelta(minutes=3, seconds=47))
    services.schedule_update(schedule=schedule, enabled=True)
    rows = executions()
    assert [r.status for r in rows] == ["skipped", "pending"]
    assert rows[-1].scheduled_for == T0 + timedelta(minutes=3, seconds=45)
    assert "run_once runs only the latest missed slot" in rows[0].reason


def test_it_settles_a_job_s_schedules_slots_when_reenabling_the_job(
    clock: time_machine.Coordinates,
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
) -> None:
    job = make_job()
    make_schedule(
        "* * * * *", job=job, misfire_policy="skip", epsilon=timedelta(seconds=10)
    )
    services.job_update(job=job, enabled=False)
    clock.move_to(T0 + timedelta(minutes=5, seconds=40))
    services.job_update(job=job, enabled=True)
    [skipped] = executions()
    assert skipped.status == "skipped"
    assert skipped.reason.startswith("job was disabled:")


def test_it_parks_a_bad_row_and_still_fires_the_others(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
) -> None:
    bad = make_schedule("0 9 * * *")
    good = make_schedule("0 9 * * *")
    Schedule.objects.filter(pk=bad.pk).update(expression="not a cron")
    clock.move_to(T0)
    beat()
    bad.refresh_from_db()
    assert (bad.enabled, bad.next_run_at) == (False, None)
    assert [e.schedule_id for e in executions()] == [good.pk]


def test_it_survives_a_database_error(
    clock: time_machine.Coordinates, beat: Callable[[], float]
) -> None:
    with mock.patch(
        "jobs.services.schedule_next_due", side_effect=OperationalError("gone")
    ) as query:
        assert beat() == MAX_SLEEP
    assert query.called


def test_it_logs_a_database_outage_once_not_every_tick(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A traceback at the start, a line a minute while it lasts, a line at the end:
    not a traceback a second for as long as the database is down."""
    seconds = iter(range(1000))
    with (
        mock.patch("jobs.scheduler.time.monotonic", side_effect=lambda: next(seconds)),
        mock.patch(
            "jobs.services.schedule_next_due", side_effect=OperationalError("gone")
        ),
        caplog.at_level("WARNING", logger="jobs.scheduler"),
    ):
        for _ in range(75):  # a failing tick asks the clock twice: 150 s
            beat()
    failing = [r for r in caplog.records if "beat tick" in r.getMessage()]
    assert [r.exc_info is not None for r in failing] == [True, False, False]
    assert failing[1].getMessage() == "beat tick still failing: 31 failures in 60 s"

    caplog.clear()
    with mock.patch("jobs.scheduler.time.monotonic", side_effect=lambda: 999.0):
        beat()
        beat()
    assert [r.getMessage() for r in caplog.records] == [
        "beat tick works again after 75 failure(s) in 998 s"
    ]


def test_it_survives_a_broker_outage(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    sent: mock.MagicMock,
) -> None:
    make_schedule("0 9 * * *")
    sent.side_effect = ConnectionError("broker down")
    clock.move_to(T0)
    beat()
    [run] = executions()
    # Committed and left pending for the outbox sweep.
    assert run.status == "pending" and run.dispatched_at is not None


def test_it_does_not_fire_a_disabled_job(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
) -> None:
    make_schedule("0 9 * * *", job=make_job(enabled=False))
    clock.move_to(T0)
    beat()
    assert not Execution.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_fires_every_slot_exactly_once_with_two_beats_at_once(
    make_job: Callable[..., Job],
) -> None:
    """Two beats race over 10,000 slots (1,000 schedules x 10 minutes of simulated
    time): every slot gets exactly one execution, none is missed."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the two-beats race needs PostgreSQL (set DATABASE_URL)")
    schedules_n, minutes = 1000, 10
    jobs = [
        make_job(name=f"race-{n}", overlap_policy="allow_all")
        for n in range(schedules_n)
    ]
    Schedule.objects.bulk_create(
        Schedule(job=job, expression="* * * * *", next_run_at=T0) for job in jobs
    )
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            for minute in range(minutes):
                barrier.wait(timeout=30)
                services.schedules_fire_due(
                    now=T0 + timedelta(minutes=minute, seconds=1), batch=100
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    with mock.patch("jobs.tasks.run_execution.apply_async"):
        threads = [threading.Thread(target=beat) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors
    rows = Execution.objects.filter(trigger="schedule")
    assert rows.count() == schedules_n * minutes
    assert rows.exclude(status="pending").count() == 0
    per_slot = rows.values("schedule", "scheduled_for").distinct().count()
    assert per_slot == schedules_n * minutes
    assert not Schedule.objects.filter(
        next_run_at__lte=T0 + timedelta(minutes=minutes - 1)
    ).exists()


def test_it_has_a_worker_prune_old_executions_periodically_in_housekeeping(
    settings: Any,
) -> None:
    settings.KARMCHARI_PRUNE_SECONDS = 3600
    scheduler = JobScheduler(app=celery_app)
    scheduler._pruned = -3600.0  # as if the last prune was an hour ago
    with mock.patch("jobs.scheduler.prune_executions.apply_async") as prune:
        scheduler._housekeeping()
        scheduler._housekeeping()  # the same hour: not again
    prune.assert_called_once_with()


def test_it_stops_once_closed_even_if_the_shutdown_exception_was_swallowed() -> None:
    """Beat's SIGTERM handler closes the scheduler and raises SystemExit; Python drops
    that exception when the signal lands in a weakref callback. The close is enough."""
    scheduler = JobScheduler(app=celery_app)
    pubsub = mock.MagicMock()

    def signal_arrives(timeout: float) -> None:
        scheduler.close()  # what the handler does before its (lost) SystemExit

    pubsub.get_message.side_effect = signal_arrives
    scheduler._pubsub = pubsub
    with (
        mock.patch.object(scheduler, "tick_once", return_value=MAX_SLEEP),
        pytest.raises(SystemExit),
    ):
        scheduler.tick()
    # It left the wait at once rather than sleeping out the second.
    assert pubsub.get_message.call_count == 1


def test_it_leaves_repetitions_left_untouched_by_slots_the_overlap_policy_skips(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    make_job: Callable[..., Job],
) -> None:
    job = make_job()  # overlap policy: skip
    running = Execution.objects.create(job=job, status=Execution.Status.RUNNING)
    schedule = make_schedule("* * * * *", job=job, repetitions_left=2)
    for minute in range(2):
        clock.move_to(T0 + timedelta(minutes=minute))
        beat()
    schedule.refresh_from_db()
    assert schedule.repetitions_left == 2  # nothing ran
    assert schedule.next_run_at == T0 + timedelta(minutes=2)
    Execution.objects.filter(pk=running.pk).update(status=Execution.Status.SUCCEEDED)
    for minute in (2, 3):
        clock.move_to(T0 + timedelta(minutes=minute))
        beat()
        Execution.objects.filter(status="pending").update(status="succeeded")
    schedule.refresh_from_db()
    assert (schedule.repetitions_left, schedule.next_run_at) == (0, None)


def test_it_makes_the_outbox_sweep_wait_for_a_run_s_jitter(
    clock: time_machine.Coordinates,
    beat: Callable[[], float],
    make_schedule: Callable[..., Schedule],
    sent: mock.MagicMock,
    settings: Any,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    settings.KARMCHARI_OUTBOX_SECONDS = 60
    make_schedule("0 * * * *", jitter=timedelta(minutes=10))
    clock.move_to(T0)
    with mock.patch("jobs.services.schedules.random.uniform", return_value=500.0):
        beat()
    assert sent.call_args.kwargs["countdown"] == 500.0  # due at 09:08:20
    sent.reset_mock()
    waiting = mock.patch(
        "jobs.services.outbox._messages_waiting", return_value={"celery": 0}
    )
    for minutes, resent in ((2, 0), (10, 1)):
        clock.move_to(T0 + timedelta(minutes=minutes))
        with waiting, django_capture_on_commit_callbacks(execute=True):
            assert (
                services.execution_resend_stale(older_than=timedelta(seconds=60))
                == resent
            )


def test_it_sends_notifications_again_whose_task_was_never_sent(
    clock: time_machine.Coordinates,
    make_job: Callable[..., Job],
    settings: Any,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    """The broker refused a delivery's task when the failure committed: beat's
    housekeeping sends it again once it is KARMCHARI_OUTBOX_SECONDS old (no sooner:
    one just recorded has its task on the way), at most that often."""
    from jobs.models import NotificationChannel, NotificationDelivery

    settings.KARMCHARI_OUTBOX_SECONDS = 60
    channel = NotificationChannel.objects.create(
        name="ops", kind="email", target="ops@example.com"
    )
    delivery = NotificationDelivery.objects.create(
        channel=channel, job=make_job(), event="failure"
    )
    scheduler = JobScheduler(app=celery_app)
    scheduler._swept = -60.0  # as if beat had just started
    with (
        mock.patch("jobs.tasks.deliver_notification.delay") as delay,
        mock.patch(
            "jobs.services.outbox._messages_waiting", return_value={"celery": 0}
        ),
        django_capture_on_commit_callbacks(execute=True),
    ):
        scheduler._housekeeping()  # too fresh
        clock.shift(61)
        scheduler._swept = -60.0
        scheduler._housekeeping()
        scheduler._housekeeping()  # not again within the interval
    delay.assert_called_once_with(delivery.pk)
