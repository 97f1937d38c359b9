"""Time zones and wall clocks: DST gaps and folds, calendar arithmetic."""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from jobs.schedules.base import _SECOND, ScheduleError


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    # "localtime" and "posixrules" are host files whose meaning depends on the
    # machine; web and beat may run on different ones.
    return frozenset(available_timezones() - {"localtime", "posixrules"})


def _zone(tz: str) -> ZoneInfo:
    if tz not in _zone_names():
        raise ScheduleError(f"unknown time zone {tz!r} (expected an IANA name)")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone {tz!r}") from None


def _utc_floor(after: datetime) -> datetime:
    if after.tzinfo is None or after.utcoffset() is None:
        raise TypeError("after must be a timezone-aware datetime")
    return after.astimezone(UTC).replace(microsecond=0)


def _offset(instant: datetime, zone: tzinfo) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def _transition(lo: datetime, hi: datetime, zone: tzinfo) -> datetime:
    """The first second in (lo, hi] already on ``hi``'s UTC offset."""
    target = _offset(hi, zone)
    lo_s, hi_s = 0, int((hi - lo).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _offset(lo + timedelta(seconds=mid), zone) == target:
            hi_s = mid
        else:
            lo_s = mid
    return lo + timedelta(seconds=hi_s)


@dataclass(frozen=True, slots=True)
class _Local:
    """Where a naive wall time lands in UTC.

    ``first`` is its only or first occurrence or, for a skipped wall time, the
    end of the gap; ``second`` the repeat in a fall-back hour; ``gap_end`` the
    first wall time after a skipped stretch (set only for skipped times).
    """

    first: datetime
    second: datetime | None = None
    gap_end: datetime | None = None


def _to_utc(wall: datetime, zone: tzinfo) -> _Local:
    u0 = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    u1 = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if u0 == u1:
        return _Local(u0)
    lo, hi = min(u0, u1), max(u0, u1)
    if u0.astimezone(zone).replace(tzinfo=None) == wall:
        return _Local(lo, second=hi)
    end = _transition(lo, hi, zone)
    return _Local(end, gap_end=end.astimezone(zone).replace(tzinfo=None))


def _overlap(wall: datetime, zone: tzinfo) -> tuple[datetime, datetime] | None:
    """The repeated wall-clock stretch [start, end) containing ``wall``, if any."""
    local = _to_utc(wall, zone)
    if local.second is None:
        return None
    change = _transition(local.first, local.second, zone)
    begin = change.astimezone(zone).replace(tzinfo=None)
    return begin, begin + (local.second - local.first)


def _ceil_second(value: datetime) -> datetime:
    if value.microsecond:
        return value.replace(microsecond=0) + _SECOND
    return value


def _add_calendar(wall: datetime, months: int, days: int) -> datetime:
    """Calendar arithmetic on a wall time; the day is clamped to the month's end
    (Jan 31 + 1 month = Feb 28/29)."""
    index = wall.month - 1 + months
    year, month = wall.year + index // 12, index % 12 + 1
    day = min(wall.day, calendar.monthrange(year, month)[1])
    return wall.replace(year=year, month=month, day=day) + timedelta(days=days)
