"""Cron, with or without seconds, and Quartz (see the package's docstring)."""

from __future__ import annotations

import calendar
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter  # type: ignore[import-untyped]

from jobs.schedules.base import _SECOND, Kind, Parsed, ScheduleError
from jobs.schedules.zones import _overlap, _to_utc, _utc_floor

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
            self._cron,
            datetime(2000, 1, 1),
            max_years_between_matches=150,
            day_or=not self.days_and,
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
        # Vixie cron (and croniter): both day fields restricted means either day,
        # unless one of them starts with "*" ("*/2"), which makes it both. croniter
        # sees our lists, not the "*": say which.
        self.days_and = (
            self.dom.restricted
            and self.dow.restricted
            and (dom_text.startswith("*") or dow_text.startswith("*"))
        )
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
        alone = not self.dow.restricted or self.days_and  # the month day must occur
        if self.dom.values and not self.dom.special and alone:
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
        return (" and " if self.days_and else " or ").join(texts)


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
