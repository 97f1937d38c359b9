"""ISO 8601 repeating intervals, as Kala writes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import isodate

from jobs.schedules.base import Kind, Parsed, ScheduleError
from jobs.schedules.zones import _add_calendar, _ceil_second, _to_utc, _utc_floor

# isodate.parse_duration folds PT25H into "1 day, 1 hour", losing the difference
# between calendar days and elapsed hours that DST needs, so periods are read here.
_PERIOD_RE = re.compile(
    r"P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
    r"(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?"
)
_REPEAT_RE = re.compile(r"R(-?\d+)?")
_DATE_RE = re.compile(r"\d{4}-?\d\d-?\d\d")


def _parse_moment(text: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """ISO 8601 date-time (or date, meaning midnight) -> (UTC instant, wall time
    in ``zone``). Without an offset it is a wall time in ``zone``; fractions of a
    second round up, so nothing fires before the time asked for."""
    try:
        if "T" in text.upper():
            parsed = isodate.parse_datetime(text)
        elif _DATE_RE.fullmatch(text):  # isodate would also take "2026" or "20"
            parsed = datetime.combine(isodate.parse_date(text), datetime.min.time())
        else:
            raise ScheduleError(
                f"bad date-time {text!r} (expected e.g. 2026-01-01T09:00:00+01:00)"
            )
        if parsed.tzinfo is not None and parsed.utcoffset() is not None:
            instant = _ceil_second(parsed.astimezone(UTC))
            return instant, instant.astimezone(zone).replace(tzinfo=None)
        wall = _ceil_second(parsed)
        return _to_utc(wall, zone).first, wall
    except (isodate.ISO8601Error, ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, ScheduleError):
            raise
        raise ScheduleError(f"bad date-time {text!r} ({exc})") from None


class IntervalSchedule(Parsed):
    """``R[n]/<start>/<period>``.

    Occurrence k is computed from the original start, never from the previous
    occurrence: the calendar part of the period (Y, M, W, D) is added k times to
    the start's wall-clock time in the schedule's zone, then the time part (H, M,
    S) k times as elapsed time. So ``P1M`` from Jan 31 gives Feb 28 (or 29), then
    Mar 31; ``P1D`` from 09:00 stays at 09:00 local across DST; ``PT24H`` does not.
    A wall time skipped by DST fires at the end of the gap, a repeated one at its
    first occurrence; the start itself, when given with an offset, is exact.
    """

    kind = Kind.INTERVAL

    def __init__(self, expression: str, tz: str, zone: ZoneInfo) -> None:
        super().__init__(expression, tz, zone)
        try:
            self._compile(expression, zone)
        except ScheduleError as exc:
            raise ScheduleError(f"ISO 8601 interval {expression!r}: {exc}") from None

    def _compile(self, expression: str, zone: ZoneInfo) -> None:
        if not expression:
            raise ScheduleError("empty expression")
        parts = expression.split("/")
        if len(parts) != 3:
            raise ScheduleError(
                f"expected R[n]/<start>/<period>, got {len(parts)} part(s)"
            )
        repeat, start_text, period = parts
        m = _REPEAT_RE.fullmatch(repeat.upper())
        if not m:
            raise ScheduleError(f"bad repeat {repeat!r} (expected R or Rn, e.g. R5)")
        count = None if m.group(1) is None else int(m.group(1))
        self.repetitions: int | None = (
            count if count is not None and count >= 0 else None
        )
        self.start, self._wall = _parse_moment(start_text, zone)
        p = _PERIOD_RE.fullmatch(period.upper())
        if not p:
            raise ScheduleError(
                f"bad period {period!r} (expected e.g. PT10S, P1DT1M, P2W; whole "
                "numbers only)"
            )
        years, months, weeks, days, hours, minutes, seconds = (
            int(g or 0) for g in p.groups()
        )
        self.period = period.upper()
        self._months = years * 12 + months
        self._days = weeks * 7 + days
        try:
            self._elapsed = timedelta(hours=hours, minutes=minutes, seconds=seconds)
            _add_calendar(self._wall, self._months, self._days)
        except (OverflowError, ValueError):
            raise ScheduleError(f"period {period!r} is too long") from None
        if not (self._months or self._days or self._elapsed):
            raise ScheduleError(f"period {period!r} is zero")
        self._approx = (
            self._months * 2_629_746
            + self._days * 86_400
            + self._elapsed.total_seconds()
        )
        self._units = [
            (years, "year"),
            (months, "month"),
            (weeks, "week"),
            (days, "day"),
            (hours, "hour"),
            (minutes, "minute"),
            (seconds, "second"),
        ]

    def occurrence(self, k: int) -> datetime | None:
        """The k-th fire time (k = 0 is the start), ignoring the repeat count;
        None beyond year 9999."""
        if k == 0:
            return self.start
        try:
            base = self.start
            if self._months or self._days:
                wall = _add_calendar(self._wall, self._months * k, self._days * k)
                base = _to_utc(wall, self.zone).first
            return base + self._elapsed * k
        except (OverflowError, ValueError):
            return None

    def next_after(self, after: datetime) -> datetime | None:
        moment = _utc_floor(after)
        if self.start > moment:
            return self.start
        # An estimate from the mean period length is off by at most a step or
        # two (month lengths, DST), which the loops below correct.
        k = max(0, int((moment - self.start).total_seconds() // self._approx) - 1)
        for _ in range(1000):
            current = self.occurrence(k)
            if k == 0 or (current is not None and current <= moment):
                break
            k -= 1
        for _ in range(1000):
            if self.repetitions is not None and k > self.repetitions:
                return None
            current = self.occurrence(k)
            if current is None:
                return None
            if current > moment:
                return current
            k += 1
        raise AssertionError(f"no progress stepping {self.expression!r}")

    def describe(self) -> str:
        every = ", ".join(
            f"{n} {unit}" + ("s" if n != 1 else "") for n, unit in self._units if n
        )
        runs = (
            "forever" if self.repetitions is None else f"{self.repetitions + 1} run(s)"
        )
        begin = self.start.astimezone(self.zone).isoformat()
        return f"interval: every {every} from {begin}, {runs} ({self.tz})"
