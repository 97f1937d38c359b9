"""Schedule maths: parse an expression, say when it fires next. No ORM, no I/O.

Three kinds, matching ``Schedule.kind`` in the database:

``cron``
    * 5 fields, standard cron: ``minute hour day-of-month month day-of-week``,
      day-of-week 0-7 with 0 and 7 = SUN. Macros ``@yearly``/``@annually``,
      ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``.
    * 6 fields with **seconds first**: ``second minute hour dom month dow``.
      (croniter's own 6-field form puts seconds last; we reorder.)
    * Quartz, as JobStreamer uses it: ``second minute hour dom month dow [year]``,
      day-of-week **1-7 with 1 = SUN** (cron says 0 = SUN, so ``2`` is Monday in
      Quartz and Tuesday in cron), ``?``, ``L``, ``L-n``, ``LW``, ``nW``, ``n#k``,
      ``nL``, names (``MON-FRI``, ``JAN``), years 1970-2099.

    Auto-detection for ``kind="cron"``: 5 fields (or a macro) are standard cron;
    7 fields are Quartz; 6 fields are Quartz when the expression contains ``?``,
    or ``L``/``W`` in day-of-month, or ``L``/``#`` in day-of-week; otherwise they
    are 6-field cron with seconds first. Valid Quartz always has a ``?`` (Quartz
    itself insists), so it is always detected. Pass ``kind="quartz"`` to force
    Quartz rules (and Quartz weekday numbering) on any 6- or 7-field expression;
    the database still stores such a schedule as ``cron``.

    Day-of-month and day-of-week: in standard cron, when both are restricted a day
    matching either fires (as croniter and POSIX do). Quartz cannot combine them:
    one must be ``?``; we also accept ``*`` there. The specials (``L``, ``W``,
    ``#``, ``nL``) need the other day field to be ``*`` or ``?``.

``interval``
    ISO 8601 repeating intervals as Kala writes them: ``R[n]/<start>/<period>``.
    ``R`` or a negative ``n`` repeats forever; ``Rn`` repeats n times *after* the
    first run (``R0`` = one run, ``R1`` = two). See ``IntervalSchedule``.

``once``
    One ISO 8601 datetime.

Time zones (every schedule has an IANA zone, default UTC). Times without an offset
are wall-clock times in that zone. Where DST moves the clock:

* a wall time the clock skips fires once, at the end of the gap (02:30 on the
  spring-forward day in Europe/Berlin fires at 03:00 local);
* a wall time the clock repeats fires once, at its first occurrence;
* except for cron expressions whose hour field is ``*`` or an open-ended step
  (``*/2``, ``0/2``): like Vixie cron's "wildcard" jobs, those follow elapsed
  time, so they fire in both occurrences of a repeated hour and simply have no
  slot in a skipped hour.

croniter 7 with aware datetimes fires fixed-hour jobs twice in a repeated hour,
and reads an equal range like ``5-5`` as the whole cycle. So croniter only ever
sees naive wall-clock times and explicit value lists built here; the mapping to
UTC is done in this module.

Every returned datetime is aware UTC (``datetime.timezone.utc``), without
microseconds, and strictly later than the ``after`` it was asked for. Bad input
raises ``ScheduleError`` (a ``ValueError``) whose message names the wrong part.

The package: ``base`` (kinds, the error, ``Parsed``), ``zones`` (wall clocks and DST),
one module per syntax (``cron``, ``interval``, ``once``), and here the functions the
rest of Karmchari calls.
"""

from __future__ import annotations

import functools
from datetime import datetime

from jobs.schedules.base import MAX_EXPRESSION_LENGTH, Kind, Parsed, ScheduleError
from jobs.schedules.cron import CronSchedule, consecutive_runs
from jobs.schedules.interval import IntervalSchedule
from jobs.schedules.once import OnceSchedule
from jobs.schedules.zones import _zone

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "CronSchedule",
    "IntervalSchedule",
    "Kind",
    "OnceSchedule",
    "Parsed",
    "ScheduleError",
    "consecutive_runs",
    "describe",
    "next_fire",
    "parse",
    "preview",
    "repetitions",
    "start",
]


@functools.lru_cache(maxsize=4096)
def parse(kind: str, expression: str, tz: str = "UTC") -> Parsed:
    """Validate and compile a schedule. Cached: the result is shared, immutable."""
    zone = _zone(tz)
    try:
        k = Kind(kind)
    except ValueError:
        raise ScheduleError(
            f"unknown schedule kind {kind!r} (expected cron, quartz, interval or once)"
        ) from None
    text = expression.strip()
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ScheduleError(
            f"expression longer than {MAX_EXPRESSION_LENGTH} characters"
        )
    if k in (Kind.CRON, Kind.QUARTZ):
        if not text.isascii():
            # "²" or "٣" pass str.isdigit(); cron's fields are ASCII.
            raise ScheduleError(
                "cron expressions hold ASCII digits, names and * , - / ? L W # only"
            )
        return CronSchedule(text, tz, zone, force_quartz=k is Kind.QUARTZ)
    if k is Kind.INTERVAL:
        return IntervalSchedule(text, tz, zone)
    return OnceSchedule(text, tz, zone)


def next_fire(kind: str, expression: str, tz: str, after: datetime) -> datetime | None:
    return parse(kind, expression, tz).next_after(after)


def preview(
    kind: str, expression: str, tz: str, after: datetime, n: int = 10
) -> list[datetime]:
    """The next ``n`` fire times after ``after`` (fewer if the schedule ends)."""
    fires: list[datetime] = []
    for fire in parse(kind, expression, tz).iter_fires(after):
        if len(fires) >= n:
            break
        fires.append(fire)
    return fires


def describe(kind: str, expression: str, tz: str = "UTC") -> str:
    return parse(kind, expression, tz).describe()


def repetitions(expression: str) -> int | None:
    """Kala's repeat count of an interval: runs after the first (``R2`` -> 2, so
    three runs in all); None repeats forever."""
    parsed = parse(Kind.INTERVAL, expression, "UTC")
    assert isinstance(parsed, IntervalSchedule)
    return parsed.repetitions


def start(expression: str, tz: str = "UTC") -> datetime:
    """The first fire time (UTC) of an interval expression."""
    parsed = parse(Kind.INTERVAL, expression, tz)
    assert isinstance(parsed, IntervalSchedule)
    return parsed.start
