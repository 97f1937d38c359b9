"""jobs.services.outbox: sending lost pending runs again."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.utils import timezone

from jobs import services
from jobs.models import Execution, Job

pytestmark = pytest.mark.django_db


def test_it_resends_stale_pending_executions_once_per_window(
    make_execution: Callable[..., Execution],
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
) -> None:
    # A queue of its own, empty at the broker (nothing else sent to it).
    job = make_job(queue=f"outbox-{uuid.uuid4().hex[:8]}")
    with time_machine.travel(timezone.now() - timedelta(minutes=5), tick=False):
        stale = make_execution(job, dispatched_at=timezone.now())
    fresh = make_execution(job, dispatched_at=timezone.now())
    assert services.execution_resend_stale(older_than=timedelta(seconds=60)) == 1
    sent.assert_called_once_with(
        (stale.pk,), queue=stale.job.queue, countdown=None, producer=mock.ANY
    )
    # Stamped: the next sweep within the window leaves it alone.
    assert services.execution_resend_stale(older_than=timedelta(seconds=60)) == 0
    fresh.refresh_from_db()
    assert fresh.status == Execution.Status.PENDING


def test_it_leaves_a_stale_run_alone_while_its_queue_still_holds_messages(
    make_execution: Callable[..., Execution],
    make_job: Callable[..., Job],
    sent: mock.MagicMock,
) -> None:
    """Pending for long behind a backlog is not lost: no duplicate is sent while the
    broker still holds messages for its queue; once the queue is empty, it is."""
    from karmchari_site.celery import app

    queue = f"outbox-{uuid.uuid4().hex[:8]}"
    with time_machine.travel(timezone.now() - timedelta(minutes=5), tick=False):
        stale = make_execution(make_job(queue=queue), dispatched_at=timezone.now())
    assert stale.status == Execution.Status.PENDING
    with app.connection_for_write() as conn:
        backlog = conn.SimpleQueue(queue)
        backlog.put({"waiting": True})
        try:
            assert (
                services.execution_resend_stale(older_than=timedelta(seconds=60)) == 0
            )
            assert not sent.called
            backlog.get(timeout=5).ack()
            assert (
                services.execution_resend_stale(older_than=timedelta(seconds=60)) == 1
            )
            assert sent.call_args.args == ((stale.pk,),)
            assert sent.call_args.kwargs["queue"] == queue
        finally:
            backlog.clear()
            backlog.close()


def test_it_resends_a_lost_run_even_behind_500_older_runs_of_a_waiting_queue(
    make_job: Callable[..., Job], sent: mock.MagicMock
) -> None:
    """A queue nobody consumes for a while (its only worker drained or down) holds
    a backlog of 500+ runs, pending for long and rightly left alone. A run of another
    job, whose message was lost (a crash between commit and send) and whose queue is
    empty, must still be sent again: the backlog of one queue must not stop the
    outbox for every other queue."""
    from karmchari_site.celery import app

    parked_queue = f"parked-{uuid.uuid4().hex[:8]}"
    empty_queue = f"outbox-{uuid.uuid4().hex[:8]}"
    parked = make_job(queue=parked_queue)
    other = make_job(queue=empty_queue)
    long_ago = timezone.now() - timedelta(hours=1)
    Execution.objects.bulk_create(
        Execution(job=parked, dispatched_at=long_ago + timedelta(seconds=n))
        for n in range(500)
    )
    lost = Execution.objects.create(
        job=other, dispatched_at=timezone.now() - timedelta(minutes=5)
    )
    with app.connection_for_write() as conn:
        backlog = conn.SimpleQueue(parked_queue)
        backlog.put({"waiting": True})  # the parked queue's backlog at the broker
        try:
            for _ in range(3):  # beat sweeps every second
                services.execution_resend_stale(older_than=timedelta(seconds=60))
        finally:
            backlog.clear()
            backlog.close()
    resent = [call.args[0][0] for call in sent.call_args_list]
    assert lost.pk in resent
