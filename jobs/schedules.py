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
"""

from __future__ import annotations

import calendar
import functools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import isodate
from croniter import croniter  # type: ignore[import-untyped]

__all__ = [
    "CronSchedule",
    "IntervalSchedule",
    "Kind",
    "OnceSchedule",
    "Parsed",
    "ScheduleError",
    "describe",
    "next_fire",
    "parse",
    "preview",
    "repetitions",
    "start",
]

_SECOND = timedelta(seconds=1)


class Kind(StrEnum):
    CRON = "cron"
    # Not a database value: forces Quartz rules; store the schedule as "cron".
    QUARTZ = "quartz"
    INTERVAL = "interval"
    ONCE = "once"


class ScheduleError(ValueError):
    """An expression, period or time zone that cannot be used; says which part."""


# --------------------------------------------------------------------------- API


# As Schedule.expression holds (every path that stores one parses it first).
MAX_EXPRESSION_LENGTH = 200


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


# ----------------------------------------------------------------- time helpers


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


# ------------------------------------------------------------------------- cron

_MONTH_NAMES = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()  # noqa: SIM905
_DAY_NAMES = "SUN MON TUE WED THU FRI SAT".split()  # noqa: SIM905

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_NTH_RE = re.compile(r"(\d+|[A-Z]+)#(\d+)")
_LAST_DOW_RE = re.compile(r"(\d+|[A-Z]+)L")
_LAST_DOM_RE = re.compile(r"L(?:-(\d+))?")
_NEAREST_RE = re.compile(r"(\d+)W")
_OPEN_STEP_RE = re.compile(r"(\*|\d+)/\d+")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]
    note: str = ""
    # The values "*" stands for; differs from low-high for cron's day-of-week,
    # where 7 is accepted as another name for Sunday.
    star_high: int | None = None


_SECOND_F = _Field("second", 0, 59, {})
_MINUTE_F = _Field("minute", 0, 59, {})
_HOUR_F = _Field("hour", 0, 23, {})
_DOM_F = _Field("day-of-month", 1, 31, {})
_MONTH_F = _Field("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTH_NAMES)})
_CRON_DOW_F = _Field(
    "day-of-week",
    0,
    7,
    {n: i for i, n in enumerate(_DAY_NAMES)},
    " (cron numbering, 0 or 7=SUN)",
    star_high=6,
)
_QUARTZ_DOW_F = _Field(
    "day-of-week",
    1,
    7,
    {n: i + 1 for i, n in enumerate(_DAY_NAMES)},
    " (Quartz numbering, 1=SUN)",
)
_YEAR_F = _Field("year", 1970, 2099, {})
_FIELDS = (_SECOND_F, _MINUTE_F, _HOUR_F, _DOM_F, _MONTH_F, _CRON_DOW_F, _YEAR_F)


class _Bad(Exception):
    """Internal: a field problem, turned into a ScheduleError with context."""

    def __init__(self, field: str, text: str, problem: str) -> None:
        super().__init__(f"{field} field {text!r}: {problem}")


def _value(token: str, spec: _Field, text: str) -> int:
    if token.isdigit():
        number = int(token)
    elif token.upper() in spec.names:  # names are case-insensitive, as in Quartz
        number = spec.names[token.upper()]
    elif token.isalpha() and spec.names:
        names = list(spec.names)
        raise _Bad(
            spec.name, text, f"unknown name {token!r} (expected {names[0]}-{names[-1]})"
        )
    else:
        raise _Bad(spec.name, text, f"{token!r} is not a number")
    if not spec.low <= number <= spec.high:
        raise _Bad(
            spec.name,
            text,
            f"value {number} out of range {spec.low}-{spec.high}{spec.note}",
        )
    return number


def _values(text: str, spec: _Field) -> list[int]:
    """Expand ``*``, ``a``, ``a-b``, ``*/n``, ``a/n``, ``a-b/n`` lists to sorted
    values. A range whose end is below its start wraps (``22-2``, ``FRI-MON``)."""
    star_high = spec.high if spec.star_high is None else spec.star_high
    found: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _Bad(spec.name, text, "empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _Bad(spec.name, text, f"bad step {step_text!r} in {item!r}")
            step = int(step_text)
        if base == "*":
            low, high = spec.low, star_high
        elif "-" in base:
            left, _, right = base.partition("-")
            if not left or not right:
                raise _Bad(spec.name, text, f"bad range {base!r}")
            low, high = _value(left, spec, text), _value(right, spec, text)
        else:
            low = _value(base, spec, text)
            high = star_high if slash else low
        if spec is _CRON_DOW_F and low == 7 and high != 7:  # 7-2, 7/2: from SUN
            low = 0
        if low <= high:
            found.update(range(low, high + 1, step))
        elif spec is _YEAR_F:
            raise _Bad(spec.name, text, f"range {base!r} runs backwards")
        else:
            cycle = [*range(low, star_high + 1), *range(spec.low, high + 1)]
            found.update(cycle[::step])
    if spec is _CRON_DOW_F and 7 in found:
        found.discard(7)
        found.add(0)
    return sorted(found)


@dataclass(frozen=True)
class _Days:
    """One day field, compiled: croniter text plus anything croniter lacks."""

    cron: str  # croniter's spelling; "*" when unrestricted
    restricted: bool
    special: bool  # L, W, #, nL: the other day field must stay unrestricted
    # Day-of-month rules croniter lacks ("LW", or "L-n" with n > 0): croniter
    # sees "*" and CronSchedule filters days by hand.
    rule: tuple[str, int] | None = None
    values: tuple[int, ...] = ()
    nth: tuple[tuple[int, str], ...] = ()  # (cron weekday 0-6, "1".."5" or "L")


def _dom(text: str) -> _Days:
    upper = text.upper()
    if text in ("*", "?"):
        return _Days("*", restricted=False, special=False)
    if upper == "LW":
        return _Days("*", True, True, rule=("LW", 0))
    items = upper.split(",")
    last = [_LAST_DOM_RE.fullmatch(i) for i in items]
    if any(m and m.group(1) for m in last) or any("W" in i for i in items):
        if len(items) > 1:
            raise _Bad("day-of-month", text, "'W' and 'L-n' must stand alone")
        if m := _LAST_DOM_RE.fullmatch(upper):
            offset = int(m.group(1))
            if offset > 30:
                raise _Bad("day-of-month", text, "offset after 'L-' must be 0-30")
            if offset == 0:
                return _Days("L", True, True)
            return _Days("*", True, True, rule=("L-", offset))
        if m := _NEAREST_RE.fullmatch(upper):
            day = _value(m.group(1), _DOM_F, text)
            return _Days(f"{day}W", True, True, values=(day,))
        raise _Bad("day-of-month", text, "expected 'nW' (e.g. 15W), 'LW' or 'L-n'")
    plain = [i for i in text.split(",") if i.upper() != "L"]
    values = tuple(_values(",".join(plain), _DOM_F)) if plain else ()
    has_last = len(plain) < len(items)
    cron = ",".join([*map(str, values), *(["L"] if has_last else [])])
    return _Days(cron, True, has_last, values=values)


def _dow(text: str, quartz: bool) -> _Days:
    if text in ("*", "?"):
        return _Days("*", restricted=False, special=False)
    spec = _QUARTZ_DOW_F if quartz else _CRON_DOW_F

    def cron_day(number: int) -> int:
        return (number - 1) % 7 if quartz else number % 7

    if quartz and text.upper() == "L":  # Quartz: "L" alone is the week's last day
        return _Days("6", True, False, values=(6,))
    items = text.split(",")
    nth: list[tuple[int, str]] = []
    for item in items:
        upper = item.upper()
        if m := _NTH_RE.fullmatch(upper):
            which = int(m.group(2))
            if not 1 <= which <= 5:
                raise _Bad(spec.name, text, f"'#{m.group(2)}': nth must be 1-5")
            nth.append((cron_day(_value(m.group(1), spec, text)), str(which)))
        elif m := _LAST_DOW_RE.fullmatch(upper):
            nth.append((cron_day(_value(m.group(1), spec, text)), "L"))
        elif "#" in upper or upper.endswith("L"):
            raise _Bad(spec.name, text, f"bad item {item!r} (expected e.g. 6#3 or 6L)")
    if nth:
        if len(nth) < len(items):
            raise _Bad(spec.name, text, "cannot mix '#'/'L' items with plain days")
        cron = ",".join(f"L{d}" if w == "L" else f"{d}#{w}" for d, w in nth)
        return _Days(cron, True, True, nth=tuple(nth))
    values = tuple(sorted({cron_day(v) for v in _values(text, spec)}))
    return _Days(",".join(map(str, values)), True, False, values=values)


def _is_quartz(fields: list[str]) -> bool:
    if len(fields) == 7:
        return True
    if len(fields) != 6:
        return False
    dom, dow = fields[3].upper(), fields[5].upper()
    return "?" in fields or any(c in dom for c in "LW") or any(c in dow for c in "L#")


def _max_day(months: list[int], years: list[int] | None) -> int:
    leap = years is None or any(calendar.isleap(y) for y in years)
    return max(
        29 if m == 2 and leap else calendar.monthrange(2001, m)[1] for m in months
    )


class CronSchedule(Parsed):
    kind = Kind.CRON

    def __init__(
        self, expression: str, tz: str, zone: ZoneInfo, *, force_quartz: bool = False
    ) -> None:
        super().__init__(expression, tz, zone)
        self.quartz = force_quartz
        try:
            self._compile(expression, force_quartz)
        except (_Bad, ScheduleError) as exc:
            label = "Quartz cron" if self.quartz else "cron"
            raise ScheduleError(f"{label} {expression!r}: {exc}") from None
        self._lock = threading.Lock()
        # croniter is stateful (it stores the current time); one per schedule,
        # used under the lock, because re-parsing per call costs ~90 us.
        # Quartz years reach 2099: look that far ahead (croniter's default is 50
        # years, after which a far year reads as "never").
        self._croniter = croniter(
            self._cron, datetime(2000, 1, 1), max_years_between_matches=150
        )

    def _compile(self, expression: str, force_quartz: bool) -> None:
        if not expression:
            raise ScheduleError("empty expression")
        text = expression
        if text.startswith("@"):
            if force_quartz or text.lower() not in _MACROS:
                raise ScheduleError(
                    "unknown macro (expected @yearly, @annually, @monthly, @weekly, "
                    "@daily, @midnight or @hourly)"
                )
            text = _MACROS[text.lower()]
        fields = text.split()
        self.quartz = force_quartz or _is_quartz(fields)
        if self.quartz and len(fields) not in (6, 7):
            raise ScheduleError(
                "Quartz needs 6 or 7 fields (second minute hour day-of-month month "
                f"day-of-week [year]), got {len(fields)}"
            )
        if len(fields) not in (5, 6, 7):
            raise ScheduleError(
                "expected 5 fields (minute hour day-of-month month day-of-week), "
                f"6 (second first) or 7 (Quartz, with year), got {len(fields)}"
            )
        if len(fields) == 5:
            fields = ["0", *fields]
        self.has_seconds = len(expression.split()) > 5
        if len(fields) == 6:
            fields.append("*")
        for spec, value in zip(_FIELDS, fields, strict=True):
            if "?" in value and (spec not in (_DOM_F, _CRON_DOW_F) or value != "?"):
                raise ScheduleError(
                    f"{spec.name} field {value!r}: '?' is only allowed alone, "
                    "in day-of-month or day-of-week"
                )
        sec, minute, hour, dom_text, month, dow_text, year = fields
        if self.quartz:
            dom_text, dow_text = self._quartz_days(dom_text, dow_text)
        self.fields = (sec, minute, hour, dom_text, month, dow_text, year)
        self.seconds = _values(sec, _SECOND_F)
        self.minutes = _values(minute, _MINUTE_F)
        self.hours = _values(hour, _HOUR_F)
        self.months = _values(month, _MONTH_F)
        self.years = None if year == "*" else _values(year, _YEAR_F)
        self.dom = _dom(dom_text)
        self.dow = _dow(dow_text, self.quartz)
        for special, other, other_text in (
            (self.dom, self.dow, dow_text),
            (self.dow, self.dom, dom_text),
        ):
            if special.special and other.restricted:
                first = "day-of-month" if special is self.dom else "day-of-week"
                second = "day-of-week" if first == "day-of-month" else "day-of-month"
                raise ScheduleError(
                    f"{first} {(dom_text if special is self.dom else dow_text)!r} "
                    f"cannot be combined with {second} {other_text!r}; "
                    f"use '*' or '?' in {second}"
                )
        self._check_reachable()
        # Vixie cron's "wildcard" jobs: they follow elapsed time across DST.
        self.hour_wild = "," not in hour and (
            hour == "*" or (_OPEN_STEP_RE.fullmatch(hour) is not None)
        )
        self._rule = self.dom.rule
        self._cron = " ".join(
            [
                self._list(self.minutes, minute, _MINUTE_F),
                self._list(self.hours, hour, _HOUR_F),
                self.dom.cron,
                self._list(self.months, month, _MONTH_F),
                self.dow.cron,
                self._list(self.seconds, sec, _SECOND_F),
                "*" if self.years is None else ",".join(map(str, self.years)),
            ]
        )

    @staticmethod
    def _list(values: list[int], text: str, spec: _Field) -> str:
        if text == "*" or len(values) == spec.high - spec.low + 1:
            return "*"
        return ",".join(map(str, values))

    @staticmethod
    def _quartz_days(dom: str, dow: str) -> tuple[str, str]:
        if dom == "?" and dow == "?":
            raise ScheduleError(
                "'?' can be used in only one of day-of-month and day-of-week"
            )
        if dom != "?" and dow != "?":
            # Quartz itself refuses this; "*" in one of them is unambiguous.
            if dow == "*":
                return dom, "?"
            if dom == "*":
                return "?", dow
            raise ScheduleError(
                f"Quartz cannot combine day-of-month {dom!r} and day-of-week "
                f"{dow!r}; put '?' in one of them"
            )
        return dom, dow

    def _check_reachable(self) -> None:
        if self.dom.values and not self.dom.special and not self.dow.restricted:
            longest = _max_day(self.months, self.years)
            if min(self.dom.values) > longest:
                raise ScheduleError(
                    f"day-of-month {self.fields[3]!r} never occurs in month "
                    f"{self.fields[4]!r}"
                    + (f" of year {self.fields[6]!r}" if self.years else "")
                )
        rule = self.dom.rule
        if rule and rule[0] == "L-" and rule[1] >= _max_day(self.months, self.years):
            raise ScheduleError(
                f"day-of-month {self.fields[3]!r} never occurs in month "
                f"{self.fields[4]!r}"
            )

    # -- stepping

    def _raw_next(self, wall: datetime) -> datetime | None:
        with self._lock:
            try:
                found: datetime = self._croniter.get_next(datetime, start_time=wall)
            except (ValueError, OverflowError):  # no match left, or past year 9999
                return None
        return found

    def _rule_day(self, year: int, month: int) -> int | None:
        assert self._rule is not None
        last = calendar.monthrange(year, month)[1]
        kind, offset = self._rule
        if kind == "L-":
            return last - offset if last - offset >= 1 else None
        weekday = calendar.weekday(year, month, last)  # LW: last Mon-Fri
        return last - max(0, weekday - 4)

    def _wall_next(self, wall: datetime) -> datetime | None:
        """First wall-clock time matching the expression strictly after ``wall``."""
        if self._rule is None:
            return self._raw_next(wall)
        # croniter sees "*" for day-of-month; keep only the rule's day. At most
        # two croniter calls per month, and croniter skips excluded months.
        for _ in range(2400):
            found = self._raw_next(wall)
            if found is None:
                return None
            target = self._rule_day(found.year, found.month)
            if found.day == target:
                return found
            try:
                if target is not None and found.day < target:
                    wall = datetime(found.year, found.month, target) - _SECOND
                else:
                    index = found.year * 12 + found.month  # the next month
                    wall = datetime(index // 12, index % 12 + 1, 1) - _SECOND
            except ValueError:  # past year 9999
                return None
        return None

    def next_after(self, after: datetime) -> datetime | None:
        try:
            return self._next_after(after)
        except OverflowError:  # a wall time whose UTC is past year 9999
            return None

    def _next_after(self, after: datetime) -> datetime | None:
        moment = _utc_floor(after)
        local = moment.astimezone(self.zone)
        wall = local.replace(tzinfo=None, fold=0)
        overlap = _overlap(wall, self.zone)
        begin = wall
        if overlap is not None and local.fold == 1:
            # In the repeat of a fall-back hour, every first occurrence of the
            # repeated wall times is already past.
            begin = max(wall, overlap[1] - _SECOND)
        best = self._first_occurrence_after(begin, moment)
        if self.hour_wild and overlap is not None:
            found = self._wall_next(wall if local.fold == 1 else overlap[0] - _SECOND)
            if found is not None and found < overlap[1]:
                second = _to_utc(found, self.zone).second
                if second is not None and second > moment:
                    best = second if best is None else min(best, second)
        return best

    def _first_occurrence_after(
        self, wall: datetime, moment: datetime
    ) -> datetime | None:
        for _ in range(10_000):
            found = self._wall_next(wall)
            if found is None:
                return None
            local = _to_utc(found, self.zone)
            if local.gap_end is not None and self.hour_wild:
                wall = max(found, local.gap_end - _SECOND)
                continue
            if local.first > moment:
                return local.first
            wall = (
                found if local.gap_end is None else max(found, local.gap_end - _SECOND)
            )
        return None

    def describe(self) -> str:
        month, year = self.fields[4], self.fields[6]
        parts = [self._time_text()]
        parts.append(self._day_text())
        if month != "*":
            parts.append("in " + _names(self.months, _MONTH_NAMES, 1))
        if self.years is not None:
            parts.append(f"in {year}")
        notes = ["Quartz"] if self.quartz else []
        return (
            f"cron: {' '.join(p for p in parts if p)} ({', '.join([*notes, self.tz])})"
        )

    def _time_text(self) -> str:
        sec, minute, hour = self.fields[:3]
        if all(t.isdigit() for t in (sec, minute, hour)):
            clock = f"{int(hour):02}:{int(minute):02}"
            return f"at {clock}" + (f":{int(sec):02}" if int(sec) else "")
        pieces = [
            _unit(minute, "minute"),
            _unit(hour, "hour"),
        ]
        if self.has_seconds:
            pieces.insert(0, _unit(sec, "second"))
        text = " of ".join(pieces)
        return text if text.startswith("every") else "at " + text

    def _day_text(self) -> str:
        dom, dow = self.dom, self.dow
        texts = []
        if dom.rule == ("LW", 0):
            texts.append("on the last weekday of the month")
        elif dom.rule is not None:
            texts.append(f"on the last day of the month minus {dom.rule[1]}")
        elif dom.restricted:
            if dom.cron.endswith("W"):
                texts.append(f"on the weekday nearest day {dom.values[0]}")
            else:
                days = [str(v) for v in dom.values] + (
                    ["last"] if "L" in dom.cron else []
                )
                texts.append("on day " + ",".join(days) + " of the month")
        if dow.nth:
            ordinal = {"1": "1st", "2": "2nd", "3": "3rd", "4": "4th", "5": "5th"}
            texts.append(
                "on the "
                + ", ".join(
                    f"{'last' if w == 'L' else ordinal[w]} {_DAY_NAMES[d]}"
                    for d, w in dow.nth
                )
            )
        elif dow.restricted:
            texts.append("on " + _names(list(dow.values), _DAY_NAMES, 0))
        return " or ".join(texts)


def _unit(text: str, unit: str) -> str:
    if text == "*":
        return f"every {unit}"
    if m := re.fullmatch(r"(?:\*|0)/(\d+)", text):
        return f"every {m.group(1)} {unit}s"
    if text.isdigit():
        return f"{unit} {int(text)}"
    return f"{unit}s {text}"


def consecutive_runs(values: list[int]) -> list[list[int]]:
    """Sorted values in runs of consecutive ones: [1, 2, 3, 7] -> [[1, 2, 3], [7]]."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return runs


def _names(values: list[int], names: list[str], first: int) -> str:
    """Runs of consecutive values as NAME-NAME, e.g. [1, 2, 3, 4, 5] -> MON-FRI."""
    texts = []
    for run in consecutive_runs(values):
        low, high = names[run[0] - first], names[run[-1] - first]
        texts.append(
            low if len(run) == 1 else f"{low}{'-' if len(run) > 2 else ','}{high}"
        )
    return ",".join(texts)


# ---------------------------------------------------------------------- interval

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
