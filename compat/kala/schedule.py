"""Kala's schedule grammar, read as Kala reads it (compat-spec §2.4), and turned into
a Karmchari interval expression that fires on Kala's cadence.

Kala (`job/job.go`, `utils/iso8601/iso8601.go`) splits `R[n]/<start>/<interval>` on
"/", reads the repeat count with Go's `strconv.ParseInt` and the interval with two
*searched*, unanchored, case-sensitive regexes: a weeks-only `P(\\d+)W` first, then
`P(\\d+Y)?(\\d+M)?(\\d+D)?(T(\\d+H)?(\\d+M)?(\\d+S)?)?`. Every unit is a fixed
length of elapsed time: Y = 365 days, W = 7 days, D = 24 hours, and M the real
lengths of the months that follow the current date. So `P1W2D` is one week, `P1DT`
one day, `PT10X` zero, and `pt10s` (no "P") is refused.

Karmchari's own interval schedules count Y and M on the calendar from the start
(`jobs/schedules/interval.py`), so a Kala interval is stored as the elapsed time it
means, in days, hours, minutes and seconds (`P365D` for Kala's `P1Y`); in UTC, a day
is always 24 hours.

`parse_schedule` and `epsilon` add the checks of Kala's Job.Init and answer
a refusal as Kala did (KalaError, a 400).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from compat.kala.protocol import INIT_ERROR, KalaError
from jobs import schedules

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# Go's time.Duration counts int64 nanoseconds: about 292 years.
MAX_DURATION_SECONDS = INT64_MAX // 10**9
_DAY = 86_400
_START = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)?", re.ASCII
)

_WEEK = re.compile(r"P((?P<week>\d+)W)", re.ASCII)
_FULL = re.compile(
    r"P((?P<year>\d+)Y)?((?P<month>\d+)M)?((?P<day>\d+)D)?"
    r"(T((?P<hour>\d+)H)?((?P<minute>\d+)M)?((?P<second>\d+)S)?)?",
    re.ASCII,
)
_UNIT_SECONDS = {
    "year": 365 * _DAY,
    "week": 7 * _DAY,
    "day": _DAY,
    "hour": 3600,
    "minute": 60,
    "second": 1,
}


class KalaScheduleError(ValueError):
    """Kala refuses this schedule or duration; the message says why."""


def go_parse_int(text: str) -> int:
    """Go's strconv.ParseInt(text, 10, 64): an optional sign, ASCII digits, within
    int64. ValueError otherwise."""
    digits = text[1:] if text.startswith(("+", "-")) else text
    if not digits or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"invalid syntax: {text!r}")
    if len(digits.lstrip("0")) > 19:  # never more than int64 (nor int()'s limit)
        raise ValueError(f"value out of range: {text!r}")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"value out of range: {text!r}")
    return value


def days_in_month(year: int, month: int) -> int:
    """For any year Go's time reads (0000-9999; calendar.monthrange stops at 1)."""
    if month == 2:
        return 29 if calendar.isleap(year) else 28
    return calendar.monthrange(2001, month)[1]  # the others never change


def _month_seconds(months: int, now: datetime) -> int:
    """Kala's months: the lengths of the `months` months after the current one."""
    year, month, total = now.year, now.month, 0
    for _ in range(months):
        month += 1
        if month == 13:
            year, month = year + 1, 1
        total += days_in_month(year, month) * _DAY
    return total


def duration(text: str, now: datetime) -> timedelta:
    """Kala's iso8601.FromString(text).ToDuration(), months counted from `now`.
    KalaScheduleError when Kala refuses it (no "P" at all, a number beyond int64) or
    when it is longer than Go's time.Duration holds (Kala's sum overflowed)."""
    match = _WEEK.search(text) or _FULL.search(text)
    if match is None:
        raise KalaScheduleError(f"{text!r} is not an ISO 8601 duration (no 'P')")
    parts: dict[str, int] = {}
    for name, value in match.groupdict().items():
        if value is None:
            continue
        try:
            parts[name] = go_parse_int(value)  # strconv.Atoi, on 64 bits
        except ValueError:
            raise KalaScheduleError(f"{text!r}: {value} is out of range") from None
    months = parts.pop("month", 0)
    # More months than 292 years hold would overflow anyway: never count them.
    if months > MAX_DURATION_SECONDS // (28 * _DAY):
        raise KalaScheduleError(f"{text!r} is longer than about 292 years")
    seconds = sum(_UNIT_SECONDS[name] * n for name, n in parts.items())
    seconds += _month_seconds(months, now)
    if seconds > MAX_DURATION_SECONDS:
        raise KalaScheduleError(f"{text!r} is longer than about 292 years")
    return timedelta(seconds=seconds)


def period(value: timedelta) -> str:
    """An elapsed time (whole seconds) as Karmchari's ISO 8601 period, in days and
    time: 1 week -> P7D, 90 seconds -> PT1M30S; zero -> "P" (no period)."""
    days, rest = divmod(int(value.total_seconds()), _DAY)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time = "".join(
        f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n
    )
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


@dataclass(frozen=True)
class KalaSchedule:
    """A schedule as Kala reads it."""

    repeat: int  # runs after the first; negative: forever (Kala's timesToRepeat)
    start: str  # as sent; Karmchari's parser reads it
    interval: timedelta

    @property
    def expression(self) -> str:
        """The Karmchari interval expression firing on Kala's cadence."""
        repeat = "R" if self.repeat < 0 else f"R{self.repeat}"
        return f"{repeat}/{self.start}/{period(self.interval)}"


def parse(expression: str, now: datetime) -> KalaSchedule:
    """`R[n]/<start>/<interval>` as Kala's Job.Init reads it (the start's format and
    time are checked by the caller). KalaScheduleError if Kala refuses it, or
    crashed on it (a repeat part without "R")."""
    parts = expression.split("/")
    if len(parts) != 3:
        raise KalaScheduleError("schedule must be R[n]/<start>/<interval>")
    repeat_text, start, interval_text = parts
    if repeat_text == "R":
        repeat = -1
    else:
        # Kala reads strings.Split(part, "R")[1]; with no "R" it crashed.
        pieces = repeat_text.split("R")
        if len(pieces) < 2:
            raise KalaScheduleError("the repeat part must be R or R<n>")
        try:
            repeat = go_parse_int(pieces[1])
        except ValueError as exc:
            raise KalaScheduleError(f"bad repeat count: {exc}") from None
    interval = duration(interval_text, now)
    if not interval:
        # Kala accepted a zero interval (PT10X) and ran the job back to back.
        raise KalaScheduleError(f"interval {interval_text!r} is zero")
    return KalaSchedule(repeat=repeat, start=start, interval=interval)


def epsilon(text: str, now: datetime) -> timedelta:
    """Parsed as Kala parses an interval (`PT10X` is zero, accepted)."""
    try:
        return duration(text, now)
    except KalaScheduleError as exc:
        raise KalaError(f"{INIT_ERROR}: bad epsilon {text!r}: {exc}") from None


def parse_schedule(expression: str, now: datetime) -> str:
    """Kala's reading of the schedule (`parse` above), then its checks of
    the start: a full date-time (no date alone), not in the past. Answers the
    Karmchari interval expression that fires on Kala's cadence."""
    try:
        parsed = parse(expression, now)
    except KalaScheduleError as exc:
        raise KalaError(f"{INIT_ERROR}: {exc}") from None
    if not _START.fullmatch(parsed.start):
        raise KalaError(
            f"{INIT_ERROR}: bad start {parsed.start!r} (RFC 3339, e.g. "
            "2030-06-04T19:25:16Z)"
        )
    try:
        start = schedules.start(parsed.expression, "UTC")
    except schedules.ScheduleError as exc:
        raise KalaError(f"{INIT_ERROR}: {exc}") from None
    if start <= now:
        raise KalaError(f"{INIT_ERROR}: Schedule time has passed.")
    return parsed.expression
