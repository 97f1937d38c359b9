"""Which notifications a run sends (rules, events, once per channel, retries, late and
slow runs), delivered to a real local HTTP receiver and Django's mail outbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from jobs import notification_sending, notifications, retention, services
from jobs.models import (
    App,
    Execution,
    Job,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
)
from jobs.runners import Outcome
from tests.jobs.conftest import (
    channel_rule,
    finished_run,
    queued_then_channel_disabled,
    rule,
    run,
)
from tests.receiver import Receiver

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


@pytest.fixture
def job(make_app: Callable[..., App], make_job: Callable[..., Job]) -> Job:
    return make_job(app=make_app("ops"), name="backup")


def test_it_notifies_recovery_after_failures_only(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    rule(job=job, kind="webhook", target=receiver.url, events=["recovery"])
    capture = django_capture_on_commit_callbacks

    run(job, "succeeded", capture=capture)
    run(job, "failed", capture=capture)
    run(job, "failed", capture=capture)
    run(job, "succeeded", capture=capture)
    run(job, "succeeded", capture=capture)

    assert [json.loads(r["body"])["event"] for r in receiver.requests] == ["recovery"]


def test_it_notifies_recovery_after_retention_dropped_the_failures(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """keep_failed=0 keeps no failure: the job's own last error still tells."""
    rule(job=job, kind="webhook", target=receiver.url, events=["recovery"])
    Job.objects.filter(pk=job.pk).update(keep_failed=0)
    capture = django_capture_on_commit_callbacks

    run(job, "succeeded", capture=capture)
    run(job, "failed", capture=capture)
    # Past the minute a run that has just ended is kept for.
    retention.executions_prune(now=timezone.now() + retention.JUST_ENDED * 2)
    assert not job.executions.filter(status="failed").exists()
    run(job, "succeeded", capture=capture)
    run(job, "succeeded", capture=capture)

    assert [json.loads(r["body"])["event"] for r in receiver.requests] == ["recovery"]


def test_it_uses_the_apps_rules_unless_the_job_has_its_own(
    job: Job,
    make_job: Callable[..., Job],
    receiver: Receiver,
    mailoutbox: list[mail.EmailMessage],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    other = make_job(app=job.app, name="other")
    rule(app=job.app, kind="webhook", target=receiver.url, events=["failure"])
    rule(job=other, kind="email", target="me@example.com", events=["failure"])

    run(job, "failed", capture=django_capture_on_commit_callbacks)
    run(other, "failed", capture=django_capture_on_commit_callbacks)

    assert [json.loads(r["body"])["job"] for r in receiver.requests] == ["backup"]
    assert [m.subject.split()[1] for m in mailoutbox] == ["ops/other"]


def test_it_notifies_start_when_a_worker_claims_the_run(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    rule(job=job, kind="webhook", target=receiver.url, events=["start"])
    execution = Execution.objects.create(job=job)

    with django_capture_on_commit_callbacks(execute=True):
        services.execution_claim(execution_id=execution.pk, worker="w1")

    [request] = receiver.requests
    assert json.loads(request["body"])["execution"]["status"] == "running"


def test_it_notifies_a_run_much_slower_than_its_average(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    rule(job=job, kind="webhook", target=receiver.url, events=["slow"], slow_factor=3)
    capture = django_capture_on_commit_callbacks
    for _ in range(3):
        run(job, "succeeded", seconds=10, capture=capture)
    run(job, "succeeded", seconds=25, capture=capture)  # 2.5x: not slow
    assert receiver.requests == []

    run(job, "succeeded", seconds=60, capture=capture)

    [request] = receiver.requests
    assert json.loads(request["body"])["event"] == "slow"


def test_it_notifies_a_late_scheduled_run_once(
    job: Job,
    receiver: Receiver,
    make_schedule: Callable[..., Any],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    rule(job=job, kind="webhook", target=receiver.url, events=["late"])
    schedule = make_schedule(job=job, epsilon=timedelta(seconds=30))
    slot = timezone.now().replace(microsecond=0)
    execution = Execution.objects.create(
        job=job, schedule=schedule, scheduled_for=slot, trigger="schedule"
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.notifications_check_late(now=slot) == 0
    with (
        time_machine.travel(slot + timedelta(seconds=31)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert notifications.notifications_check_late() == 1
        assert notifications.notifications_check_late() == 0

    [request] = receiver.requests
    payload = json.loads(request["body"])
    assert (payload["event"], payload["execution"]["id"]) == ("late", execution.pk)


def test_it_does_not_report_runs_skipped_for_a_disabled_job_as_late(
    job: Job,
    receiver: Receiver,
    make_schedule: Callable[..., Any],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    from jobs import services

    rule(job=job, kind="webhook", target=receiver.url, events=["late"])
    slot = timezone.now() - timedelta(minutes=5)
    Execution.objects.create(
        job=job, schedule=make_schedule(job=job), scheduled_for=slot, trigger="schedule"
    )
    services.job_update(job=job, enabled=False)  # the queued run: skipped
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.notifications_check_late() == 0
    assert receiver.requests == []


@pytest.mark.parametrize("status", ["failed", "succeeded"])
def test_it_asks_nothing_of_the_database_for_a_job_without_rules(
    job: Job, status: str, django_assert_num_queries: Callable[..., Any]
) -> None:
    """The end of every run asks this; flood control (its state rows) adds nothing
    to the end of a run of a job without rules, failed or succeeded."""
    execution = Execution.objects.create(
        job=job, status=status, finished_at=timezone.now()
    )
    notifications.forget_rule_targets()
    notifications.execution_changed(execution=execution)  # learns the targets
    with django_assert_num_queries(0):
        notifications.execution_changed(execution=execution)


def test_it_hears_of_a_new_rule_at_once_in_the_same_process(
    job: Job, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    run(job, "failed", capture=django_capture_on_commit_callbacks)
    rule(job=job, kind="email", target="ops@example.com", events=["failure"])
    run(job, "failed", capture=django_capture_on_commit_callbacks)
    assert NotificationDelivery.objects.filter(job=job, event="failure").count() == 1


def test_it_uses_each_rules_own_slow_factor(
    job: Job,
    mailoutbox: list[mail.EmailMessage],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """Two rules want `slow`: one at 3x the average, one only at 10x. A run 5x the
    average is news for the first only, but the smallest factor of all rules is
    applied to every rule, so the 10x channel hears of it too."""
    channel_rule(
        "eager", job=job, events=["slow"], slow_factor=3, target="eager@example.com"
    )
    channel_rule(
        "patient",
        job=job,
        events=["slow"],
        slow_factor=10,
        target="patient@example.com",
    )
    for _ in range(3):
        finished_run(job, "succeeded", django_capture_on_commit_callbacks, seconds=10)
    assert mailoutbox == []

    finished_run(job, "succeeded", django_capture_on_commit_callbacks, seconds=50)

    slow = NotificationDelivery.objects.filter(event="slow")
    assert sorted(d.channel.name for d in slow) == ["eager"]


def test_it_ignores_the_slow_factor_of_a_rule_without_slow(
    job: Job,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """A rule for failures carries a slow_factor (meaningless for it); it still
    lowers the threshold of the one rule that asks for `slow`."""
    channel_rule(
        "failures", job=job, events=["failure"], slow_factor=1.5, target="f@example.com"
    )
    channel_rule("slow", job=job, events=["slow"], target="s@example.com")  # 3x
    for _ in range(3):
        finished_run(job, "succeeded", django_capture_on_commit_callbacks, seconds=10)

    finished_run(job, "succeeded", django_capture_on_commit_callbacks, seconds=20)  # 2x

    assert not NotificationDelivery.objects.filter(event="slow").exists()


def test_it_prunes_the_delivery_log_with_the_executions_it_was_about(
    make_job: Callable[..., Job], make_app: Callable[..., App]
) -> None:
    """Nothing ever deletes a NotificationDelivery: retention removes a job's old
    runs, but their deliveries (payload JSON of each) stay forever with a NULL
    execution, so the delivery log grows without bound."""
    job = make_job(app=make_app("ops"), name="chatty", keep_days=1)
    channel = NotificationChannel.objects.create(
        name="ops", kind="email", target="ops@example.com"
    )
    long_ago = timezone.now() - timedelta(days=30)
    with time_machine.travel(long_ago, tick=False):
        execution = Execution.objects.create(
            job=job, status="failed", finished_at=long_ago
        )
        NotificationDelivery.objects.create(
            channel=channel,
            job=job,
            execution=execution,
            event="failure",
            payload={"event": "failure"},
            status="sent",
            sent_at=long_ago,
        )

    assert retention.executions_prune() == 1
    assert not Execution.objects.filter(pk=execution.pk).exists()
    assert NotificationDelivery.objects.count() == 0


def test_it_notifies_recovery_after_retention_dropped_every_earlier_run(
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    receiver: Receiver,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """A weekly job keeping a day of runs: last week's failure, and the success
    before it, are gone when this week's run succeeds. The job's last error, after
    its last success before this run, still makes it a recovery."""
    job = make_job(app=make_app("ops"), name="weekly", keep_days=1)
    rule(job=job, kind="webhook", target=receiver.url, events=["recovery"])
    capture = django_capture_on_commit_callbacks
    week_ago = timezone.now() - timedelta(days=7)
    with time_machine.travel(week_ago - timedelta(days=7), tick=False):
        run(job, "succeeded", capture=capture)
    with time_machine.travel(week_ago, tick=False):
        run(job, "failed", capture=capture)
    retention.executions_prune()
    assert not job.executions.exists()
    job.refresh_from_db()  # as the claim loads it: before this run ends

    run(job, "succeeded", capture=capture)
    retention.executions_prune()
    with time_machine.travel(timezone.now() + timedelta(days=7), tick=False):
        job.refresh_from_db()
        run(job, "succeeded", capture=capture)  # after a success: no recovery

    assert [json.loads(r["body"])["event"] for r in receiver.requests] == ["recovery"]


def test_it_does_not_take_a_run_killed_before_it_started_for_a_failure(
    job: Job,
    receiver: Receiver,
    admin_user: Any,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """A queued run killed by an operator (or the `cancel` overlap policy) never
    ran: the next success is no recovery."""
    rule(job=job, kind="webhook", target=receiver.url, events=["recovery"])
    capture = django_capture_on_commit_callbacks
    run(job, "succeeded", capture=capture)
    queued = Execution.objects.create(job=job)
    with capture(execute=True):
        services.execution_control(execution=queued, action="kill", user=admin_user)
    queued.refresh_from_db()
    assert (queued.status, queued.started_at) == ("killed", None)

    run(job, "succeeded", capture=capture)

    assert receiver.requests == []


def test_it_does_not_judge_a_lost_run_slow(
    job: Job,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """How long a lost run ran is unknown (it is counted untimed): three runs of
    10 s and one lost after 25 s make no `slow`."""
    from jobs import recovery
    from tests.jobs.conftest import make_agent

    rule(job=job, kind="webhook", target=receiver.url, events=["slow"], slow_factor=3)
    for _ in range(3):
        run(job, "succeeded", seconds=10, capture=django_capture_on_commit_callbacks)
    agent = make_agent("w1@host")
    Execution.objects.create(
        job=job,
        status="running",
        worker=agent.name,
        started_at=timezone.now() - timedelta(seconds=25),
    )
    with (
        django_capture_on_commit_callbacks(execute=True),
        mock.patch.object(services, "execution_schedule_retry"),
    ):
        [lost] = recovery.executions_recover_lost(agent=agent)

    assert lost.status == "lost"
    assert receiver.requests == []


def test_it_does_not_report_a_run_held_back_by_its_jitter_as_late(
    job: Job,
    receiver: Receiver,
    make_schedule: Callable[..., Any],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """Beat holds the slot's run back 5 min by its jitter (epsilon 60 s): two
    minutes after the slot it is not late; past its due time plus epsilon, it is."""
    rule(job=job, kind="webhook", target=receiver.url, events=["late"])
    schedule = make_schedule("0 * * * *", job=job, jitter=timedelta(minutes=10))
    slot = schedule.next_run_at
    with (
        time_machine.travel(slot, tick=False),
        mock.patch("jobs.services.schedules.random.uniform", return_value=300.0),
        mock.patch("jobs.services.schedules.executions_send"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.schedules_fire_due(now=slot)
    execution = Execution.objects.get(job=job)
    assert execution.dispatched_at == slot + timedelta(minutes=5)

    def check(after: float) -> int:
        with django_capture_on_commit_callbacks(execute=True):
            return notifications.notifications_check_late(
                now=slot + timedelta(seconds=after)
            )

    assert [check(120), check(359), check(361)] == [0, 0, 1]

    assert [json.loads(r["body"])["event"] for r in receiver.requests] == ["late"]


def test_it_notifies_a_run_that_started_after_its_window(
    job: Job,
    make_job: Callable[..., Job],
    receiver: Receiver,
    make_schedule: Callable[..., Any],
    django_capture_on_commit_callbacks: Callable[..., Any],
    django_assert_num_queries: Callable[..., Any],
) -> None:
    """Epsilon 30 s; the run starts 90 s after its slot (the workers were busy),
    between two late checks, which never saw it pending: the claim reports it, once.
    Its check is free: a run on time costs no query more, a job without rules none."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rule(job=job, kind="webhook", target=receiver.url, events=["late"])
    make_schedule(job=job, epsilon=timedelta(seconds=30))
    now = timezone.now()

    def claim(execution: Execution) -> CaptureQueriesContext:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            claimed = services.execution_claim(execution_id=execution.pk, worker="w1")
        assert claimed is not None
        with CaptureQueriesContext(connection) as queries:
            for callback in callbacks:
                callback()
        return queries

    def scheduled(slot: Any, of: Job = job, **fields: Any) -> Execution:
        return Execution.objects.create(
            job=of, schedule=of.schedules.first(), scheduled_for=slot,
            trigger="schedule", **fields,
        )  # fmt: skip

    claim(Execution.objects.create(job=job))  # learns the rule targets
    manual = claim(Execution.objects.create(job=job))
    on_time = claim(scheduled(now - timedelta(seconds=20)))
    assert len(on_time) == len(manual)
    assert receiver.requests == []

    late = scheduled(now - timedelta(seconds=90))
    with django_capture_on_commit_callbacks(execute=True):
        services.execution_claim(execution_id=late.pk, worker="w1")
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.notifications_check_late() == 0

    [request] = receiver.requests
    payload = json.loads(request["body"])
    assert (payload["event"], payload["execution"]["id"]) == ("late", late.pk)

    quiet = make_job(app=job.app, name="quiet")
    make_schedule(job=quiet, epsilon=timedelta(seconds=30))
    stale = scheduled(now - timedelta(seconds=90), of=quiet)
    stale.status, stale.started_at = "running", now
    notifications.execution_changed(execution=stale)  # learns the rule targets
    with django_assert_num_queries(0):
        notifications.execution_changed(execution=stale)


def test_it_sends_a_delivery_again_whose_send_the_broker_refused(
    job: Job,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker is down the moment the failure commits: the send is logged, not
    raised, and beat's sweep sends the delivery later (once: one sent already is
    not sent again). One just recorded is left to its own task."""
    rule(job=job, kind="webhook", target=receiver.url, events=["failure"])
    refused = mock.patch(
        "jobs.tasks.deliver_notification.delay", side_effect=ConnectionError("broker")
    )
    empty = mock.patch(
        "jobs.services.outbox._messages_waiting", return_value={"celery": 0}
    )
    started = timezone.now()
    with refused:
        run(job, "failed", capture=django_capture_on_commit_callbacks)
    assert "could not send its task" in caplog.text
    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    minute = timedelta(seconds=60)

    with empty, time_machine.travel(started + timedelta(seconds=30), tick=False):
        assert notifications.notifications_resend_stale(older_than=minute) == 0
    with empty, time_machine.travel(started + timedelta(seconds=61), tick=False):
        assert notifications.notifications_resend_stale(older_than=minute) == 1
        assert notifications.notifications_resend_stale(older_than=minute) == 0
        notification_sending.notification_deliver(delivery_id=delivery.pk, final=False)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 1)
    assert [json.loads(r["body"])["event"] for r in receiver.requests] == ["failure"]


def test_it_leaves_deliveries_a_disabled_channel_stopped_out_of_the_failure_metric(
    job: Job, mailoutbox: list[mail.EmailMessage]
) -> None:
    """Disabling a channel is an operator's stop: an alert on
    karmchari_notifications_failed must not fire for it."""
    delivery = queued_then_channel_disabled(job)

    notification_sending.notification_deliver(delivery_id=delivery.pk, final=False)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.error) == (
        "failed",
        "Not sent: the channel was disabled.",
    )
    [family] = list(notifications.notification_metrics())
    assert {s.labels["kind"]: s.value for s in family.samples}["email"] == 0


def test_it_sends_an_event_once_per_channel_whatever_rules_match(
    job: Job,
    make_job: Callable[..., Job],
    receiver: Receiver,
    mailoutbox: list[mail.EmailMessage],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """Two rules of a job send failures to one Slack webhook (one of them recoveries
    too), a third to email; two rules of the app both to the webhook. One message
    per channel and event: each channel hears of a failure once."""
    slack = NotificationChannel.objects.create(
        name="slack", kind="slack", target=receiver.url
    )
    email = NotificationChannel.objects.create(
        name="email", kind="email", target="ops@example.com"
    )
    for events in (["failure"], ["failure", "recovery"]):
        NotificationRule.objects.create(channel=slack, job=job, events=events)
    NotificationRule.objects.create(channel=email, job=job, events=["failure"])
    other = make_job(app=job.app, name="other")
    for events in (["failure"], ["failure", "start"]):
        NotificationRule.objects.create(channel=slack, app=job.app, events=events)
    capture = django_capture_on_commit_callbacks

    finished_run(job, "failed", capture)
    finished_run(other, "failed", capture)

    texts = [json.loads(r["body"])["text"].splitlines()[0] for r in receiver.requests]
    assert sorted(texts) == [
        "[Karmchari] ops/backup failed (failed, exit code 2)",
        "[Karmchari] ops/other failed (failed, exit code 2)",
    ]
    assert [m.subject.split()[1] for m in mailoutbox] == ["ops/backup"]


def test_it_sends_slow_to_a_channel_once_if_any_of_its_rules_finds_the_run_slow(
    job: Job, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """One channel, two `slow` rules (3x and 10x the average): a run 15x the average
    is slow by both, one message; a run 5x is slow by the first only, still one."""
    channel = NotificationChannel.objects.create(
        name="ops", kind="email", target="ops@example.com"
    )
    for factor in (3, 10):
        NotificationRule.objects.create(
            channel=channel, job=job, events=["slow"], slow_factor=factor
        )
    for _ in range(3):
        finished_run(job, "succeeded", django_capture_on_commit_callbacks, seconds=10)

    finished_run(job, "succeeded", django_capture_on_commit_callbacks, seconds=150)
    assert NotificationDelivery.objects.filter(event="slow").count() == 1
    # The average is 45 s now.
    finished_run(job, "succeeded", django_capture_on_commit_callbacks, seconds=225)
    assert NotificationDelivery.objects.filter(event="slow").count() == 2


def test_it_sends_an_event_of_a_run_once_when_its_end_is_heard_again(
    job: Job, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """A worker records an end again after a dropped connection lost its answer, and
    the end's follow-ups (its notifications among them) run twice: the channel
    still gets the failure once."""
    channel_rule("ops", job=job, events=["failure"])
    execution = finished_run(job, "failed", django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        notifications.execution_changed(execution=execution)

    assert NotificationDelivery.objects.filter(event="failure").count() == 1


def attempt_end(
    execution: Execution, status: str, seconds: float = 1.0
) -> Execution | None:
    """Run one attempt (the execution, pending) to its end, as a worker does; the
    retry the end scheduled, if any. The job is loaded at the claim, as the worker
    loads it."""
    Execution.objects.filter(pk=execution.pk).update(
        status="running", started_at=timezone.now() - timedelta(seconds=seconds)
    )
    execution = Execution.objects.select_related("job__app").get(pk=execution.pk)
    services.execution_finish(
        execution=execution,
        outcome=Outcome(status=status, exit_code=0 if status == "succeeded" else 2),
    )
    return Execution.objects.filter(retry_of=execution, trigger="retry").first()


@pytest.mark.django_db(transaction=True)
def test_it_notifies_only_the_last_attempts_failure_and_says_how_many_were_made(
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    mailoutbox: list[mail.EmailMessage],
) -> None:
    """max_retries 2: the first two attempts fail and are retried (their failure,
    and the first one's being slow, is not news yet); the third fails for good,
    slow: one failure, which says three attempts were made, and one `slow`. Outside
    a test transaction, as a worker ends a run: its notifications run at once when
    the end commits."""
    job = make_job(app=make_app("ops"), name="backup", max_retries=2)
    channel_rule("ops", job=job, events=["failure", "slow"], slow_factor=3)
    for _ in range(3):
        attempt_end(Execution.objects.create(job=job), "succeeded", seconds=10)

    with mock.patch("jobs.services.executions.executions_send"):
        second = attempt_end(Execution.objects.create(job=job), "timed_out", 60)
        assert second is not None
        assert mailoutbox == []
        third = attempt_end(second, "failed", seconds=60)
        assert third is not None
        assert mailoutbox == []
        assert attempt_end(third, "failed", seconds=300) is None

    assert sorted(m.subject for m in mailoutbox) == [
        "[Karmchari] ops/backup failed after 3 attempts (failed, exit code 2)",
        "[Karmchari] ops/backup is slow: took 300.0s, much longer than its average",
    ]


def test_it_notifies_a_failure_whose_retry_could_not_be_scheduled(
    job: Job,
    mailoutbox: list[mail.EmailMessage],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """max_retries 2, but the job was disabled while its first attempt ran: no retry
    follows, so this failure is the last one and is sent."""
    Job.objects.filter(pk=job.pk).update(max_retries=2)
    channel_rule("ops", job=job, events=["failure"])
    execution = Execution.objects.create(job=job)
    Job.objects.filter(pk=job.pk).update(enabled=False)

    with django_capture_on_commit_callbacks(execute=True):
        assert attempt_end(execution, "failed") is None

    assert [m.subject for m in mailoutbox] == [
        "[Karmchari] ops/backup failed (failed, exit code 2)"
    ]


def test_it_notifies_recovery_only_after_a_failure_that_was_sent(
    job: Job,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """max_retries 1. A run whose first attempt fails and whose retry succeeds never
    failed as far as the operator heard: no recovery. A run that fails both attempts
    is a failure; the next run recovers, even at its second attempt."""
    Job.objects.filter(pk=job.pk).update(max_retries=1)
    rule(job=job, kind="webhook", target=receiver.url, events=["failure", "recovery"])
    capture = django_capture_on_commit_callbacks

    def attempts(*statuses: str) -> None:
        execution: Execution | None = Execution.objects.create(job=job)
        for status in statuses:
            assert execution is not None
            with (
                mock.patch("jobs.services.executions.executions_send"),
                capture(execute=True),
            ):
                execution = attempt_end(execution, status)

    attempts("succeeded")
    attempts("failed", "succeeded")
    assert receiver.requests == []
    attempts("failed", "failed")
    attempts("failed", "succeeded")
    attempts("succeeded")

    assert [json.loads(r["body"])["event"] for r in receiver.requests] == [
        "failure",
        "recovery",
    ]


def test_it_notifies_recovery_when_a_retry_by_hand_succeeds(
    job: Job,
    receiver: Receiver,
    admin_user: Any,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """No automatic retries: the failure is sent; the operator retries the run by
    hand and it succeeds: that is a recovery."""
    rule(job=job, kind="webhook", target=receiver.url, events=["failure", "recovery"])
    capture = django_capture_on_commit_callbacks
    run(job, "succeeded", capture=capture)
    failed = run(job, "failed", capture=capture)
    with (
        mock.patch("jobs.services.commands.execution_send_later"),
        capture(execute=True),
    ):
        retry = services.execution_retry(execution=failed, user=admin_user)
    with capture(execute=True):
        attempt_end(retry, "succeeded")

    assert [json.loads(r["body"])["event"] for r in receiver.requests] == [
        "failure",
        "recovery",
    ]


@pytest.mark.parametrize(("max_retries", "sent"), [(1, []), (0, ["failure"])])
def test_it_notifies_a_lost_run_only_when_no_retry_follows(
    job: Job,
    receiver: Receiver,
    max_retries: int,
    sent: list[str],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """Its agent went offline: a lost run is retried like a failed one, and its
    failure is news only when no retry follows."""
    from jobs import recovery
    from tests.jobs.conftest import make_agent

    Job.objects.filter(pk=job.pk).update(max_retries=max_retries)
    rule(job=job, kind="webhook", target=receiver.url, events=["failure"])
    agent = make_agent("w1@host")
    Execution.objects.create(
        job=job, status="running", worker=agent.name, started_at=timezone.now()
    )
    with (
        mock.patch("jobs.services.executions.executions_send"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        [lost] = recovery.executions_recover_lost(agent=agent)

    assert lost.retries.exists() == bool(max_retries)
    assert [json.loads(r["body"])["event"] for r in receiver.requests] == sent
