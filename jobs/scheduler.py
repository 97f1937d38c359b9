"""The Celery beat scheduler: `celery beat -S jobs.scheduler:JobScheduler`.

It keeps no schedule in memory and reads no schedule file: the database is the source
of truth. Each tick does the work that is due and tells beat how long to sleep.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery.beat import Scheduler
from django.db import DatabaseError, InterfaceError, close_old_connections

from jobs import services

logger = logging.getLogger(__name__)

# How long an execution may stay pending before the outbox sweep sends it again.
OUTBOX_AGE = timedelta(seconds=60)
MAX_SLEEP = 1.0


class JobScheduler(Scheduler):
    def setup_schedule(self) -> None:
        # No celery-side entries: schedules live in the database.
        self.data: dict[str, Any] = {}

    def tick(self, *args: Any, **kwargs: Any) -> float:
        return self.tick_once()

    def tick_once(self) -> float:
        """One pass; answers the seconds to sleep. Never raises on database errors."""
        close_old_connections()
        try:
            resent = services.execution_resend_stale(older_than=OUTBOX_AGE)
            if resent:
                logger.warning("outbox: re-sent %d stale pending execution(s)", resent)
        except (DatabaseError, InterfaceError):
            logger.exception("beat tick failed; retrying next tick")
        return MAX_SLEEP
