"""The job domain: App groups Jobs; Schedules fire them; Executions are the runs.

One module per room; callers import the names re-exported here
(``from jobs.models import Job``). Django finds the models because this package
imports every room.
"""

from __future__ import annotations

from jobs.models.apps import RESERVED_APP_NAMES, App, validate_not_reserved
from jobs.models.base import MAX_ATTEMPT, slug_validator
from jobs.models.executions import (
    Execution,
    ExecutionEvent,
    ExecutionLogChunk,
    ExecutionQuerySet,
)
from jobs.models.jobs import Job, JobSecret, secret_name_validator
from jobs.models.notifications import (
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
    NotificationState,
)
from jobs.models.schedules import Schedule
from jobs.models.tokens import ApiToken

__all__ = [
    "MAX_ATTEMPT",
    "RESERVED_APP_NAMES",
    "ApiToken",
    "App",
    "Execution",
    "ExecutionEvent",
    "ExecutionLogChunk",
    "ExecutionQuerySet",
    "Job",
    "JobSecret",
    "NotificationChannel",
    "NotificationDelivery",
    "NotificationRule",
    "NotificationState",
    "Schedule",
    "secret_name_validator",
    "slug_validator",
    "validate_not_reserved",
]
