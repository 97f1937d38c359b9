"""What the jobs.schedules tests share: zones, UTC datetimes, fire lists.

Schedule maths: no database, no clock. Dates are checked against the calendar
module, or against croniter where croniter is right, never against the code's own
helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from jobs.schedules import preview

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(moments: list[datetime], tz: str) -> list[str]:
    return [m.astimezone(ZoneInfo(tz)).isoformat() for m in moments]


def fires(expr: str, after: datetime, n: int = 5, tz: str = "UTC") -> list[datetime]:
    return preview("cron", expr, tz, after, n)


def days(moments: list[datetime]) -> list[tuple[int, int, int]]:
    return [(m.year, m.month, m.day) for m in moments]


moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2045, 12, 31)
).map(lambda d: d.replace(tzinfo=UTC))
