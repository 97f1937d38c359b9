"""Kinds, the error, and what every compiled schedule is (Parsed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

_SECOND = timedelta(seconds=1)


class Kind(StrEnum):
    CRON = "cron"
    # Not a database value: forces Quartz rules; store the schedule as "cron".
    QUARTZ = "quartz"
    INTERVAL = "interval"
    ONCE = "once"


class ScheduleError(ValueError):
    """An expression, period or time zone that cannot be used; says which part."""


# As Schedule.expression holds (every path that stores one parses it first).
MAX_EXPRESSION_LENGTH = 200


class Parsed:
    """A compiled schedule. Subclasses implement ``next_after``."""

    kind: Kind
    expression: str
    tz: str

    def __init__(self, expression: str, tz: str, zone: ZoneInfo) -> None:
        self.expression = expression
        self.tz = tz
        self.zone = zone

    def next_after(self, after: datetime) -> datetime | None:
        """First fire time strictly after ``after`` (aware), or None when done."""
        raise NotImplementedError

    def iter_fires(
        self, after: datetime, until: datetime | None = None
    ) -> Iterator[datetime]:
        """Fire times in (after, until], in order; endless if ``until`` is None
        and the schedule is. For catch-up: all slots missed between two ticks."""
        fire = self.next_after(after)
        while fire is not None and (until is None or fire <= until):
            yield fire
            fire = self.next_after(fire)

    def describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.expression!r} {self.tz}>"
