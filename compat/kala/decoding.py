"""A POSTed job, decoded as Go's json.Unmarshal decodes it into Kala's Job struct
(`job/job.go`, `job/stats.go`), with Go's type checks and Go's error texts.

What Go does, and so what this does:
- The body is read up to 1 MiB (Kala's `io.LimitReader`); the rest is not read.
- The whole text is checked as JSON first: a syntax error anywhere wins (nesting up
  to 10000 levels, Go's bound, deeper than Python's json recursion allows).
- Only the struct's fields are decoded; every other key is skipped once it is valid
  JSON, whatever it holds: `1e400`, an integer of 5000 digits, NUL characters, deep
  nesting. Numbers are therefore kept as written (`_Number`) rather than read by
  Python's float() (an infinity) or int() (which refuses over 4300 digits).
- Keys match field names case-insensitively, as Go folds them (the long s,
  U+017F, is `s`, the Kelvin sign `k`); every occurrence of a repeated key is
  decoded, the last wins; `null` leaves a field's value as it was (a list becomes
  nil).
- A value of the wrong JSON type, or a number a field cannot hold (`-1`, `1.5`,
  `4e4` or `1e400` in a uint, 2^64 in a uint, 2^63 in a time.Duration), is
  `json: cannot unmarshal number 1e400 into Go struct field Job.retries of type
  uint`; decoding goes on and the first such error is answered. A time that is no
  RFC 3339 string stops decoding at once (time.Time's own UnmarshalJSON).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from compat.kala.protocol import KalaError
from compat.kala.schedule import INT64_MAX, INT64_MIN, days_in_month
from karmchari_site.text import unstorable

MAX_BODY = 1 << 20
UINT64_MAX = 2**64 - 1
# Go's decoder refuses JSON nested deeper than this ("exceeded max depth").
MAX_DEPTH = 10_000
# Longer integer literals are beyond any Go integer (2^64 - 1 has 20 digits).
_INT_DIGITS = 20
# A Go time.Time in JSON: RFC 3339, as time.Parse reads it.
_GO_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?"
    r"(?:Z|[+-](\d\d):(\d\d))",
    re.ASCII,
)
_RFC3339 = "2006-01-02T15:04:05Z07:00"
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class _Number:
    """A JSON number as written, where Python would not read it as Go does: with a
    fraction or an exponent (no Go integer; json would make 1e400 an infinity) or
    longer than any Go integer (int() refuses over 4300 digits)."""

    literal: str


class _MinusZero(int):
    """A JSON `-0`: zero to Go's ParseInt, but no uint (ParseUint refuses a sign)."""


class _Object(dict[str, Any]):
    """A JSON object that remembers every member as written: Go decodes each
    occurrence of a repeated key (a bad first one is an error too)."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def _go_int(literal: str) -> int | _Number:
    if literal == "-0":
        return _MinusZero(0)
    if len(literal.lstrip("-")) > _INT_DIGITS:
        return _Number(literal)
    return int(literal)


def _go_constant(literal: str) -> NoReturn:
    """NaN and Infinity, which Python's json reads and Go's does not."""
    raise ValueError(f"invalid character {literal[0]!r} looking for beginning of value")


_HOOKS: dict[str, Any] = {
    "parse_int": _go_int,
    "parse_float": _Number,
    "parse_constant": _go_constant,
    "object_pairs_hook": _Object,
}


def _go_replace(error: UnicodeError) -> tuple[str, int]:
    """Go's decoder reads bytes that are no UTF-8 one at a time (utf8.DecodeRune
    gives RuneError, size 1): each becomes a U+FFFD. Python reports a run of them
    (a truncated sequence) as one error, so the run gets one U+FFFD per byte."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "\ufffd" * (error.end - error.start), error.end


codecs.register_error("kala-go-replace", _go_replace)


# --- Reading the text -------------------------------------------------------------

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?")
_LITERALS = {"true": True, "false": False, "null": None}
# json's own string reader (C-accelerated), which json.loads uses; typeshed does
# not declare it.
_SCANSTRING: Callable[[str, int, bool], tuple[str, int]] = vars(json.decoder)[
    "scanstring"
]


def _loads_deep(text: str) -> Any:
    """json.loads with the hooks, without recursion: for text nested deeper than
    Python's recursion limit and at most MAX_DEPTH levels, which Go reads."""
    scan = _SCANSTRING
    end = len(text)
    # Open containers: [items, key]; items are pairs for an object (key set), values
    # for an array (key None).
    stack: list[list[Any]] = []

    def skip(at: int) -> int:
        match = _WHITESPACE.match(text, at)
        assert match is not None
        return match.end()

    def key_at(at: int) -> tuple[str, int]:
        if text[at : at + 1] != '"':
            raise ValueError(f"Expecting property name enclosed in double quotes: {at}")
        key, at = scan(text, at + 1, True)
        at = skip(at)
        if text[at : at + 1] != ":":
            raise ValueError(f"Expecting ':' delimiter: char {at}")
        return key, skip(at + 1)

    pos = skip(0)
    while True:
        char = text[pos : pos + 1]
        value: Any
        if char in ("{", "["):
            if len(stack) >= MAX_DEPTH:
                raise ValueError("exceeded max depth")
            pos = skip(pos + 1)
            closer = "}" if char == "{" else "]"
            if text[pos : pos + 1] == closer:
                value = _Object([]) if char == "{" else []
                pos += 1
            elif char == "{":
                key, pos = key_at(pos)
                stack.append([[], key])
                continue
            else:
                stack.append([[], None])
                continue
        elif char == '"':
            value, pos = scan(text, pos + 1, True)
        elif number := _NUMBER.match(text, pos):
            literal = number.group()
            value = _Number(literal) if number[2] or number[3] else _go_int(literal)
            pos = number.end()
        else:
            word = next((w for w in _LITERALS if text.startswith(w, pos)), None)
            if word is None:
                raise ValueError(f"Expecting value: char {pos}")
            value = _LITERALS[word]
            pos += len(word)
        # A value is complete: put it in its container, and close what it completes.
        while stack:
            items, key = stack[-1]
            items.append(value if key is None else (key, value))
            pos = skip(pos)
            char = text[pos : pos + 1]
            if char == ",":
                pos = skip(pos + 1)
                if key is not None:
                    stack[-1][1], pos = key_at(pos)
                break
            if char != ("]" if key is None else "}"):
                raise ValueError(f"Expecting ',' delimiter: char {pos}")
            stack.pop()
            value = items if key is None else _Object(items)
            pos += 1
        else:
            if skip(pos) != end:
                raise ValueError(f"Extra data: char {pos}")
            return value


def _read(body: bytes) -> Any:
    if len(body) > MAX_BODY:
        # Kala reads the first MiB and decodes that.
        try:
            return _read(body[:MAX_BODY])
        except KalaError as exc:
            raise KalaError(f"{exc} (Kala reads the first 1 MiB of a body)") from None
    # From a str, json refuses a leading BOM (from bytes it would skip it), as Go.
    text = body.decode("utf-8", "kala-go-replace")
    if not text.strip(" \t\n\r"):
        raise KalaError("unexpected end of JSON input")
    try:
        try:
            return json.loads(text, **_HOOKS)
        except RecursionError:
            return _loads_deep(text)
    except ValueError as exc:
        raise KalaError(f"invalid JSON: {exc}") from None


# --- Go's types -------------------------------------------------------------------


@dataclass(frozen=True)
class _Struct:
    name: str  # as Go's errors name it: Job, Metadata, JobStat
    type: str  # as Go prints the type: job.Job
    fields: dict[str, Any]  # tag name: a Go type name, or a _Struct, or a _Slice


@dataclass(frozen=True)
class _Slice:
    of: Any  # "string" or a _Struct (a slice of pointers to it)

    @property
    def type(self) -> str:
        return "[]string" if self.of == "string" else f"[]*{self.of.type}"


_METADATA = _Struct(
    "Metadata",
    "job.Metadata",
    {
        "success_count": "uint",
        "last_success": "time.Time",
        "error_count": "uint",
        "last_error": "time.Time",
        "last_attempted_run": "time.Time",
    },
)
_STAT = _Struct(
    "JobStat",
    "job.JobStat",
    {
        "job_id": "string",
        "ran_at": "time.Time",
        "number_of_retries": "uint",
        "success": "bool",
        "execution_duration": "time.Duration",
    },
)
_JOB = _Struct(
    "Job",
    "job.Job",
    {
        "name": "string",
        "id": "string",
        "command": "string",
        "owner": "string",
        "disabled": "bool",
        "dependent_jobs": _Slice("string"),
        "parent_jobs": _Slice("string"),
        "schedule": "string",
        "retries": "uint",
        "epsilon": "string",
        "next_run_at": "time.Time",
        "metadata": _METADATA,
        "stats": _Slice(_STAT),
    },
)
# The fields create() reads, and stores.
_STORED = ("name", "command", "owner", "schedule", "epsilon")


def _fold(key: str) -> str:
    """A key as Go's decoder compares it with an (ASCII) field name: folded case,
    where the long s and the Kelvin sign are s and k."""
    return key.lower().replace("\u017f", "s")


def _json_kind(value: Any) -> str:
    """What Go's errors call a JSON value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "number"


def _go_time_ok(text: str) -> bool:
    """Go's time.Parse(time.RFC3339, text) would succeed."""
    match = _GO_TIME.fullmatch(text)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    offset_hour, offset_minute = (int(g or 0) for g in match.groups()[6:])
    return (
        1 <= month <= 12
        and 1 <= day <= days_in_month(year, month)
        and hour < 24
        and minute < 60
        and second < 60
        and offset_hour < 24
        and offset_minute < 60
    )


def _go_text(text: str) -> str:
    """A decoded JSON string as Go's unquote leaves it: a \\u escape of a lone
    surrogate half is U+FFFD (json.loads keeps the half, no database stores it)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


class _Decoder:
    """Go's decoder over read JSON: the first type error is kept and decoding goes
    on (Go's saveError); a bad time ends it at once."""

    def __init__(self) -> None:
        self.error: str | None = None

    def mistyped(self, value: Any, go_type: str, struct: str, path: str) -> None:
        if self.error is not None:
            return
        found = _json_kind(value)
        if found == "number" and go_type in ("uint", "time.Duration"):
            literal = value.literal if isinstance(value, _Number) else str(value)
            found = f"number {'-0' if isinstance(value, _MinusZero) else literal}"
        self.error = (
            f"json: cannot unmarshal {found} into Go struct field {struct}.{path} "
            f"of type {go_type}"
        )

    def struct(self, data: _Object, spec: _Struct, path: str) -> dict[str, Any]:
        """The fields of `spec` found in `data` (by tag name), decoded."""
        decoded: dict[str, Any] = {}
        for key, value in data.pairs:
            name = _fold(key)
            kind = spec.fields.get(name)
            if kind is None:
                continue  # unknown keys are skipped, whatever they hold
            where = f"{path}.{name}" if path else name
            decoded[name] = self.field(value, kind, spec.name, where, decoded.get(name))
        return decoded

    def field(self, value: Any, kind: Any, struct: str, path: str, old: Any) -> Any:
        if isinstance(kind, _Slice):
            return self.slice(value, kind, struct, path)
        if value is None:
            return old  # null leaves a field as it was
        if isinstance(kind, _Struct):
            if isinstance(value, _Object):
                return self.struct(value, kind, path)
            self.mistyped(value, kind.type, struct, path)
            return old
        if kind == "time.Time":
            if not isinstance(value, str):
                raise KalaError("Time.UnmarshalJSON: input is not a JSON string")
            if not _go_time_ok(value):
                raise KalaError(
                    f"parsing time {json.dumps(value, ensure_ascii=False)} as "
                    f'"{_RFC3339}": not an RFC 3339 time'
                )
            return value
        if kind == "string":
            ok = isinstance(value, str)
            if ok:
                value = _go_text(value)
        elif kind == "bool":
            ok = isinstance(value, bool)
        else:
            ok = (
                isinstance(value, int)
                and not isinstance(value, bool)
                and (
                    0 <= value <= UINT64_MAX and not isinstance(value, _MinusZero)
                    if kind == "uint"
                    else INT64_MIN <= value <= INT64_MAX
                )
            )
        if not ok:
            self.mistyped(value, kind, struct, path)
            return old
        return value

    def slice(self, value: Any, kind: _Slice, struct: str, path: str) -> Any:
        if value is None:
            return None
        if not isinstance(value, list):
            self.mistyped(value, kind.type, struct, path)
            return None
        items = []
        for item in value:
            if kind.of == "string":
                # A null element is the zero value: "".
                items.append(self.field(item, "string", struct, path, ""))
            elif item is None or isinstance(item, _Object):
                items.append(None if item is None else self.struct(item, kind.of, path))
            else:
                self.mistyped(item, kind.of.type, struct, path)
        return items


def decode(body: bytes) -> dict[str, Any]:
    """Go's json.Unmarshal of a POSTed body into Kala's Job: the Job's fields that
    the body sets (by lowercase tag name), decoded; every other key ignored. A
    KalaError (400) for what Go refuses, and for text no database can store in a
    field Kala keeps (a NUL in the name)."""
    data = _read(body)
    if data is None:
        return {}
    decoder = _Decoder()
    if not isinstance(data, _Object):
        decoder.error = (
            f"json: cannot unmarshal {_json_kind(data)} into Go value of type "
            f"{_JOB.type}"
        )
        fields: dict[str, Any] = {}
    else:
        fields = decoder.struct(data, _JOB, "")
    if decoder.error is not None:
        raise KalaError(decoder.error)
    for name in _STORED:
        value = fields.get(name)
        if isinstance(value, str) and (why := unstorable(value)):
            raise KalaError(f"json: field {name!r}: {why}")
    return fields
