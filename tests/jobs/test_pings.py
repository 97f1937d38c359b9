from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from jobs.models import Execution, Job
from jobs.pings import pings_close_late

pytestmark = pytest.mark.django_db


@pytest.fixture
def monitor(make_job: Callable[..., Job]) -> Job:
    return make_job(kind="external", spec={}, ping_grace=timedelta(minutes=5))


def test_it_records_a_successful_run_for_a_ping(client: Client, monitor: Job) -> None:
    response = client.post(
        f"/ping/{monitor.uid}", data=b"backup done", content_type="text/plain"
    )
    assert (response.status_code, response.content) == (200, b"OK\n")
    [run] = monitor.executions.all()
    assert (run.status, run.trigger) == ("succeeded", "ping")
    monitor.refresh_from_db()
    assert monitor.success_count == 1


def test_it_closes_the_same_run_on_start_then_fail(
    client: Client, monitor: Job
) -> None:
    assert client.get(f"/ping/{monitor.uid}/start").status_code == 200
    [run] = monitor.executions.all()
    assert run.status == "running"
    assert client.get(f"/ping/{monitor.uid}/fail").status_code == 200
    run.refresh_from_db()
    assert run.status == "failed"
    assert monitor.executions.count() == 1


def test_it_finishes_the_run_the_schedule_opened_on_a_ping(
    client: Client, monitor: Job
) -> None:
    scheduled = Execution.objects.create(
        job=monitor,
        trigger="schedule",
        status="running",
        scheduled_for=timezone.now(),
    )
    client.get(f"/ping/{monitor.uid}/start")
    client.get(f"/ping/{monitor.uid}")
    scheduled.refresh_from_db()
    assert scheduled.status == "succeeded"
    assert monitor.executions.count() == 1


def test_it_closes_and_notifies_an_overdue_scheduled_run_as_late(
    monitor: Job, make_job: Callable[..., Job]
) -> None:
    slot = timezone.now() - timedelta(minutes=6)
    late = Execution.objects.create(
        job=monitor, trigger="schedule", status="running", scheduled_for=slot
    )
    in_grace = Execution.objects.create(
        job=make_job(kind="external", spec={}, ping_grace=timedelta(minutes=10)),
        trigger="schedule",
        status="running",
        scheduled_for=slot,
    )
    with mock.patch("jobs.notifications.notifications_queue") as queue:
        assert pings_close_late() == 1
    late.refresh_from_db()
    assert late.status == "failed"
    assert late.reason.startswith("Late: no ping within 0:05:00")
    assert queue.call_args.kwargs["events"] == ["late"]
    in_grace.refresh_from_db()
    assert in_grace.status == "running"


def test_it_answers_unknown_uids_and_other_kinds_clearly(
    client: Client, make_job: Callable[..., Job]
) -> None:
    assert client.get("/ping/6f1c1c57-4a43-4b0c-9a43-0e2f3a9b1d11").status_code == 404
    assert client.get("/ping/not-a-uuid").status_code == 404
    shell = make_job()
    response = client.get(f"/ping/{shell.uid}")
    assert response.status_code == 400
    assert b"not of kind external" in response.content
    assert not shell.executions.exists()
    assert client.put(f"/ping/{shell.uid}").status_code == 405


def test_it_ends_an_external_run_whose_kill_went_unanswered(
    api: object, make_job: Callable[..., Job], settings: object
) -> None:
    from jobs.pings import externals_close_overdue

    settings.KARMCHARI_KILL_GRACE = 10  # type: ignore[attr-defined]
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    run = api.post(f"/api/jobs/{job.pk}/run/").json()["id"]  # type: ignore[attr-defined]
    assert api.post(f"/api/executions/{run}/kill/").status_code == 202  # type: ignore[attr-defined]
    assert externals_close_overdue(now=timezone.now() + timedelta(seconds=5)) == 0
    assert externals_close_overdue(now=timezone.now() + timedelta(seconds=11)) == 1
    execution = Execution.objects.get(pk=run)
    assert execution.status == Execution.Status.KILLED
    assert "did not report its end within 10s" in execution.reason


def test_it_times_out_an_external_run_that_never_reports(
    make_job: Callable[..., Job],
) -> None:
    from jobs.pings import externals_close_overdue

    job = make_job(kind=Job.Kind.EXTERNAL, spec={}, timeout=60)
    started = timezone.now() - timedelta(seconds=61)
    late = Execution.objects.create(
        job=job, status=Execution.Status.RUNNING, started_at=started
    )
    paused = Execution.objects.create(
        job=job, status=Execution.Status.PAUSED, started_at=started
    )
    fresh = Execution.objects.create(
        job=job, status=Execution.Status.RUNNING, started_at=timezone.now()
    )
    assert externals_close_overdue() == 1
    statuses = dict(Execution.objects.values_list("pk", "status"))
    assert statuses[late.pk] == Execution.Status.TIMED_OUT
    assert (statuses[paused.pk], statuses[fresh.pk]) == ("paused", "running")
    job.refresh_from_db()
    assert job.error_count == 1


def test_it_keeps_the_head_of_a_long_ping_body_and_records_the_ping(
    client: Client, monitor: Job
) -> None:
    log = "é" + "x" * (3 * 1024 * 1024)  # more than DATA_UPLOAD_MAX_MEMORY_SIZE
    response = client.post(
        f"/ping/{monitor.uid}", data=log.encode(), content_type="text/plain"
    )
    assert response.status_code == 200
    [run] = monitor.executions.all()
    assert run.status == "succeeded"
    assert run.output.startswith("éxxx")
    assert len(run.output.encode()) <= 10_000


def test_it_counts_a_started_run_late_only_a_grace_after_its_start(
    client: Client, monitor: Job
) -> None:
    slot = timezone.now() - timedelta(minutes=6)
    scheduled = Execution.objects.create(
        job=monitor, trigger="schedule", status="running", scheduled_for=slot
    )
    started = slot + timedelta(seconds=10)
    with mock.patch("django.utils.timezone.now", return_value=started):
        assert client.get(f"/ping/{monitor.uid}/start").status_code == 200

    with mock.patch("jobs.notifications.notifications_queue") as queue:
        assert pings_close_late(now=started + timedelta(minutes=4)) == 0
        assert not queue.called
        assert pings_close_late(now=started + timedelta(minutes=5, seconds=1)) == 1
    scheduled.refresh_from_db()
    assert scheduled.status == "failed"
    assert scheduled.reason == "Late: no ping within 0:05:00 of its start."
    assert queue.call_args.kwargs["events"] == ["late"]


def test_it_starts_the_open_run_again_on_a_second_start(
    client: Client, monitor: Job
) -> None:
    assert client.get(f"/ping/{monitor.uid}/start").status_code == 200
    assert client.get(f"/ping/{monitor.uid}/start").status_code == 200
    assert client.get(f"/ping/{monitor.uid}").status_code == 200
    assert list(monitor.executions.values_list("status", flat=True)) == ["succeeded"]


def test_it_lands_a_start_on_a_run_started_by_hand(
    client: Client, monitor: Job
) -> None:
    from jobs import services

    run = services.job_trigger(job=monitor)
    assert client.get(f"/ping/{monitor.uid}/start").status_code == 200
    assert client.get(f"/ping/{monitor.uid}").status_code == 200
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert monitor.executions.count() == 1


def test_it_records_pings_of_a_disabled_job(client: Client, monitor: Job) -> None:
    """What ran, ran (healthchecks records pings of paused checks too)."""
    Job.objects.filter(pk=monitor.pk).update(enabled=False)
    assert client.get(f"/ping/{monitor.uid}/fail").status_code == 200
    assert monitor.executions.get().status == "failed"


def test_it_keeps_an_external_run_external_when_its_job_changes_kind(
    api: Any, make_job: Callable[..., Job], settings: Any
) -> None:
    """docs/compat.md: an external job may become a shell job; the run its process
    elsewhere still owns reports, and ends when a kill goes unanswered."""
    from jobs.pings import externals_close_overdue

    settings.KARMCHARI_KILL_GRACE = 10
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    reporting = api.post(f"/api/jobs/{job.pk}/run/").json()["id"]
    killed = api.post(f"/api/jobs/{job.pk}/run/").json()["id"]
    assert api.post(f"/api/executions/{killed}/kill/").status_code == 202
    changed = api.patch(
        f"/api/jobs/{job.pk}/", {"kind": "shell", "spec": {"command": "true"}}
    )
    assert changed.status_code == 200, changed.content

    report = api.post(
        f"/api/executions/{reporting}/report/", {"status": "succeeded", "output": "ok"}
    )
    assert report.status_code == 200, report.content
    assert externals_close_overdue(now=timezone.now() + timedelta(seconds=11)) == 1
    assert Execution.objects.get(pk=killed).status == Execution.Status.KILLED


def test_it_does_not_count_an_external_run_s_paused_time_against_its_timeout(
    make_job: Callable[..., Job], admin_user: object
) -> None:
    """Paused time is excluded from the timeout (issue 5, docs/api.md). An external
    run paused for five minutes after 10 s, then resumed, has run 11 s of its 60."""
    import time_machine

    from jobs import services
    from jobs.pings import externals_close_overdue

    job = make_job(kind=Job.Kind.EXTERNAL, spec={}, timeout=60)
    t0 = timezone.now()
    with time_machine.travel(t0, tick=False) as clock:
        run = services.job_trigger(job=job)
        clock.shift(timedelta(seconds=10))
        services.execution_report(execution=run, status="paused", user=admin_user)
        clock.shift(timedelta(seconds=300))
        services.execution_report(execution=run, status="running", user=admin_user)
        clock.shift(timedelta(seconds=1))
        closed = externals_close_overdue()
    run.refresh_from_db()
    assert (closed, run.status) == (0, Execution.Status.RUNNING), run.reason


def test_it_leaves_out_of_the_duration_the_pause_an_external_run_ends_in(
    make_job: Callable[..., Job], admin_user: object, settings: object
) -> None:
    """Ended straight from paused (reported, or killed and never answering): the
    pause is not run time, in its duration nor the job's average."""
    import time_machine

    from jobs import services
    from jobs.pings import externals_close_overdue

    settings.KARMCHARI_KILL_GRACE = 10  # type: ignore[attr-defined]
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    t0 = timezone.now()
    with time_machine.travel(t0, tick=False) as clock:
        reported = services.job_trigger(job=job)
        killed = services.job_trigger(job=job)
        clock.shift(timedelta(seconds=10))
        for run in (reported, killed):
            services.execution_report(execution=run, status="paused", user=admin_user)
        clock.shift(timedelta(seconds=990))
        services.execution_report(
            execution=reported, status="succeeded", user=admin_user
        )
        services.execution_control(execution=killed, action="kill", user=admin_user)
        clock.shift(timedelta(seconds=11))
        assert externals_close_overdue() == 1
    reported.refresh_from_db()
    killed.refresh_from_db()
    assert reported.duration == pytest.approx(10)
    assert killed.status == Execution.Status.KILLED
    assert killed.duration == pytest.approx(10)
    job.refresh_from_db()
    assert job.average_duration == pytest.approx(10)


def test_it_counts_a_run_a_ping_began_as_an_attempt_and_active(
    client: Client,
    api: Any,
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    monitor = make_job(kind="external", spec={}, ping_grace=timedelta(minutes=5))
    assert api.get(f"/api/jobs/{monitor.pk}/stats/").json()["active_executions"] == 0
    assert api.get("/api/stats/").json()["active_executions"] == 0

    with django_capture_on_commit_callbacks(execute=True):
        assert client.get(f"/ping/{monitor.uid}/start").status_code == 200
    figures = api.get(f"/api/jobs/{monitor.pk}/stats/").json()
    assert figures["active_executions"] == 1
    assert figures["last_attempted_at"] is not None
    assert api.get("/api/stats/").json()["active_executions"] == 1

    other = make_job(kind="external", spec={}, ping_grace=timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.get(f"/ping/{other.uid}").status_code == 200  # No /start.
    figures = api.get(f"/api/jobs/{other.pk}/stats/").json()
    assert (figures["success_count"], figures["active_executions"]) == (1, 0)
    assert figures["last_attempted_at"] is not None


def test_it_masks_the_job_secrets_in_a_ping_body(client: Client, monitor: Job) -> None:
    """As a worker masks what its runs print, and /report/ what a process reports: a
    script that posts its log may quote a secret."""
    from jobs import services

    services.job_update(job=monitor, secrets={"API_KEY": "s3cr3t-V4lue"})
    response = client.post(
        f"/ping/{monitor.uid}/fail",
        data=b"login with s3cr3t-V4lue failed",
        content_type="text/plain",
    )
    assert response.status_code == 200
    [run] = monitor.executions.all()
    assert run.output == "login with *** failed"


def test_it_sends_no_late_for_a_run_a_success_ping_ended_meanwhile(
    client: Client, monitor: Job
) -> None:
    """The cron's success ping lands between the late check's read and its write:
    the success is kept, and no `late` goes out for a run that succeeded."""
    from jobs import services

    slot = timezone.now() - timedelta(minutes=10)
    scheduled = Execution.objects.create(
        job=monitor, trigger="schedule", status="running", scheduled_for=slot
    )
    finish = services.execution_finish
    pinged: list[int] = []

    def ping_lands_first(**kwargs: Any) -> Execution:
        if not pinged:  # the late check's end: the ping's own end goes through
            pinged.append(1)
            assert client.get(f"/ping/{monitor.uid}").status_code == 200
        return finish(**kwargs)

    with (
        mock.patch.object(services, "execution_finish", ping_lands_first),
        mock.patch("jobs.notifications.notifications_queue") as queue,
    ):
        assert pings_close_late() == 0

    scheduled.refresh_from_db()
    assert scheduled.status == "succeeded"
    assert not queue.called
