"""The Celery beat scheduler: `celery beat -S jobs.scheduler:JobScheduler`.

The database is the only copy of the schedules: beat keeps none in memory and reads
no schedule file. A tick asks only for what is due (`enabled AND next_run_at <= now`,
an index range scan), fires it in batches (services.schedules_fire_due), then waits
until the earliest next slot or until a schedule change is announced on Redis,
whichever comes first, but never longer than a second, so a lost announcement or a
Redis outage costs at most that.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from celery.beat import Scheduler
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from django_redis import get_redis_connection

from agents import services as agents_services
from jobs import notifications, pings, services
from jobs.tasks import prune_executions

logger = logging.getLogger(__name__)

MAX_SLEEP = 1.0
# Housekeeping (outbox sweeps, agent liveness) runs at most this often.
HOUSEKEEPING_SECONDS = 1.0
# While the database or Redis stays down, a line this often (the first with its
# traceback), not a traceback every tick.
OUTAGE_REPEAT_SECONDS = 60.0


class Outage:
    """A run of failures of one thing, logged without flooding: the first with its
    traceback, then a line every OUTAGE_REPEAT_SECONDS, and one when it works again."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._since: float | None = None
        self._said = 0.0
        self._failures = 0

    def failed(self, level: int = logging.ERROR) -> None:
        """Call from the `except` block (the first failure logs its traceback)."""
        now = time.monotonic()
        self._failures += 1
        if self._since is None:
            self._since = self._said = now
            logger.log(level, "%s failed; trying again", self.what, exc_info=True)
        elif now - self._said >= OUTAGE_REPEAT_SECONDS:
            self._said = now
            logger.log(
                level,
                "%s still failing: %d failures in %.0f s",
                self.what,
                self._failures,
                now - self._since,
            )

    def ok(self) -> None:
        if self._since is not None:
            logger.warning(
                "%s works again after %d failure(s) in %.0f s",
                self.what,
                self._failures,
                time.monotonic() - self._since,
            )
            self._since, self._failures = None, 0


class JobScheduler(Scheduler):
    def setup_schedule(self) -> None:
        # No celery-side entries: schedules live in the database.
        self.data: dict[str, Any] = {}
        self._pubsub: Any = None
        self._housekept = 0.0
        self._pruned = 0.0
        self._swept = 0.0
        self._closed = False
        self._tick_outage = Outage("beat tick")
        self._announce_outage = Outage("schedule announcements (Redis)")

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self._stop_if_closed()
        self._wait(self.tick_once())
        self._stop_if_closed()
        # Beat's own loop sleeps for what we answer; we have already waited.
        return 0.0

    def _stop_if_closed(self) -> None:
        """Beat's SIGTERM handler closes the scheduler, then raises SystemExit. When
        the signal lands while Python runs a weakref callback or a `__del__` (redis-py
        and kombu have both), that SystemExit is printed as "ignored" and beat would
        go on firing: the close it did first is what we stop on."""
        if self._closed:
            raise SystemExit()

    def tick_once(self, now: datetime | None = None) -> float:
        """One pass: fire what is due and answer the seconds until the next slot
        (capped at MAX_SLEEP). Never raises: a failing database or broker is logged
        and tried again on the next tick."""
        if time.monotonic() - self._housekept >= HOUSEKEEPING_SECONDS:
            # Recycle the connection once a second, not every tick: with health
            # checks on, each recycle costs a round trip. A connection that dies in
            # between fails the tick's query, and the handler below recycles it.
            close_old_connections()
        ahead = timedelta(seconds=settings.KARMCHARI_FIRE_AHEAD)
        try:
            now = now or timezone.now()
            # Idle ticks cost this one indexed query and nothing else.
            upcoming = services.schedule_next_due()
            if upcoming is not None and upcoming <= now + ahead:
                fired = services.schedules_fire_due(now=now, ahead=ahead)
                logger.debug("fired %d schedule(s)", fired)
                upcoming = services.schedule_next_due()
            if time.monotonic() - self._housekept >= HOUSEKEEPING_SECONDS:
                self._housekeeping()
        except Exception as exc:
            _reraise_shutdown(exc)
            self._tick_outage.failed()
            close_old_connections()
            return MAX_SLEEP
        self._tick_outage.ok()
        if upcoming is None:
            return MAX_SLEEP
        wake = upcoming - ahead - timezone.now()
        return min(MAX_SLEEP, max(0.0, wake.total_seconds()))

    def _housekeeping(self) -> None:
        self._housekept = time.monotonic()
        # Agents whose heartbeat stopped go offline; jobs.recovery then marks
        # their running executions lost and retries them.
        for agent in agents_services.agents_sweep_stale():
            logger.warning("agent %s missed its heartbeats; now offline", agent)
        if self._housekept - self._pruned >= settings.KARMCHARI_PRUNE_SECONDS:
            self._pruned = self._housekept
            # On a worker, not here: deleting may take a while.
            prune_executions.apply_async()
        resent = services.execution_resend_stale(
            older_than=timedelta(seconds=settings.KARMCHARI_OUTBOX_SECONDS)
        )
        if resent:
            logger.warning("outbox: re-sent %d stale pending execution(s)", resent)
        outbox_seconds = settings.KARMCHARI_OUTBOX_SECONDS
        if self._housekept - self._swept >= outbox_seconds:
            # Deliveries carry no send stamp: swept this often, so one whose task a
            # worker is just sending is rarely sent again.
            self._swept = self._housekept
            resent = notifications.notifications_resend_stale(
                older_than=timedelta(seconds=outbox_seconds)
            )
            if resent:
                logger.warning("outbox: re-sent %d stale notification(s)", resent)
        # Watched external jobs whose ping is overdue: closed as late.
        pings.pings_close_late()
        # External runs whose process died: killed after the grace, or timed out.
        pings.externals_close_overdue()
        # Late-run notifications: a worker checks, at most every few seconds.
        notifications.notifications_check_due()

    def _wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when a schedule change is announced."""
        if seconds <= 0:
            return
        try:
            if self._pubsub is None:
                self._pubsub = get_redis_connection("default").pubsub(
                    ignore_subscribe_messages=True
                )
                self._pubsub.subscribe(services.SCHEDULE_CHANNEL)
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0 and not self._closed:
                if self._pubsub.get_message(timeout=left) is not None:
                    break
        except Exception as exc:
            _reraise_shutdown(exc)
            self._announce_outage.failed(logging.WARNING)
            self._pubsub = None
            if not self._closed:
                time.sleep(seconds)
        else:
            self._announce_outage.ok()

    def close(self) -> None:
        self._closed = True
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:
                logger.debug("closing the announcement subscription", exc_info=True)
        super().close()


def _reraise_shutdown(exc: BaseException) -> None:
    """Beat stops by raising SystemExit from its SIGTERM handler. When that lands
    inside a blocking Redis read, redis-py's cleanup can replace it with an error of
    its own; find the shutdown in the chain and let it through."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (SystemExit, KeyboardInterrupt)):
            raise cause
        cause = cause.__context__
