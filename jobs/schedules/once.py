"""One ISO 8601 moment."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from jobs.schedules.base import Kind, Parsed, ScheduleError
from jobs.schedules.interval import _parse_moment
from jobs.schedules.zones import _utc_floor


class OnceSchedule(Parsed):
    kind = Kind.ONCE

    def __init__(self, expression: str, tz: str, zone: ZoneInfo) -> None:
        super().__init__(expression, tz, zone)
        if not expression:
            raise ScheduleError("one-shot time: empty expression")
        try:
            self.at, _ = _parse_moment(expression, zone)
        except ScheduleError as exc:
            raise ScheduleError(f"one-shot time {expression!r}: {exc}") from None

    def next_after(self, after: datetime) -> datetime | None:
        return self.at if self.at > _utc_floor(after) else None

    def describe(self) -> str:
        return f"once: at {self.at.astimezone(self.zone).isoformat()} ({self.tz})"
