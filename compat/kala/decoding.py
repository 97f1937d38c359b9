"""A POSTed job, decoded as Go's json.Unmarshal decodes it into Kala's Job
struct, with Go's type checks."""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

from compat.kala.protocol import KalaError
from compat.kala.schedule import INT64_MAX, INT64_MIN, days_in_month
from karmchari_site.text import unstorable_path

MAX_BODY = 1 << 20
_STRINGS = ("name", "id", "command", "owner", "schedule", "epsilon")
# A Go time.Time in JSON: RFC 3339, as time.Parse reads it.
_GO_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?"
    r"(?:Z|[+-](\d\d):(\d\d))",
    re.ASCII,
)
UINT64_MAX = 2**64 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
# A \u escape of a surrogate half: only such an escape puts one in decoded text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _MinusZero(int):
    """A JSON `-0`: zero to Go's ParseInt, but no uint (ParseUint refuses a sign)."""


def _go_int(literal: str) -> int:
    return _MinusZero(0) if literal == "-0" else int(literal)


def _go_replace(error: UnicodeError) -> tuple[str, int]:
    """Go's decoder reads bytes that are no UTF-8 one at a time (utf8.DecodeRune
    gives RuneError, size 1): each becomes a U+FFFD. Python reports a run of them
    (a truncated sequence) as one error, so the run gets one U+FFFD per byte."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "\ufffd" * (error.end - error.start), error.end


codecs.register_error("kala-go-replace", _go_replace)


def _go_text(text: str) -> str:
    """A decoded JSON string as Go's unquote leaves it: a \\u escape of a lone
    surrogate half is U+FFFD (json.loads keeps the half, no database stores it)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _go_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _go_text(value)
    if isinstance(value, dict):
        return {_go_text(key): _go_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_go_strings(item) for item in value]
    return value


# Go types of the fields Kala's Job struct decodes (and of its nested structs), as
# the checks below name them.
_JOB_FIELDS = {
    **dict.fromkeys(_STRINGS, "string"),
    "disabled": "bool",
    "retries": "uint",
    "next_run_at": "time",
}
_METADATA_FIELDS = {
    "success_count": "uint",
    "last_success": "time",
    "error_count": "uint",
    "last_error": "time",
    "last_attempted_run": "time",
}
_STAT_FIELDS = {
    "job_id": "string",
    "ran_at": "time",
    "number_of_retries": "uint",
    "success": "bool",
    "execution_duration": "int",
}
_TYPE_NAMES = {
    "string": "a string",
    "bool": "a boolean",
    "uint": "a non-negative integer",
    "int": "an integer",
    "time": "an RFC 3339 time",
}


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


def _go_type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "time":
        return isinstance(value, str) and _go_time_ok(value)
    # A JSON number with a fraction or an exponent is no Go integer: json gives a
    # float for those.
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    number: int = value
    if kind == "uint":
        return 0 <= number <= UINT64_MAX and not isinstance(number, _MinusZero)
    return INT64_MIN <= number <= INT64_MAX


def _check_struct(data: dict[str, Any], types: dict[str, str], where: str) -> None:
    """Go's decoder into a struct: null leaves a field's zero value, unknown keys
    are ignored, a value of the wrong JSON type is an error."""
    for key, value in data.items():
        kind = types.get(str(key).lower())
        if kind is not None and value is not None and not _go_type_ok(value, kind):
            raise KalaError(
                f"json: field {where + str(key).lower()!r} must be {_TYPE_NAMES[kind]}"
            )


def decode(body: bytes) -> dict[str, Any]:
    """Go's json.Unmarshal into Kala's Job: keys case-insensitive, unknown keys
    ignored, wrong JSON types refused (nested ones too), null leaves the zero
    value. Text as Go reads it: each byte that is no UTF-8 is a U+FFFD (in a
    string; elsewhere it is an invalid character), as is an escaped lone surrogate;
    a byte order mark is an invalid character."""
    if len(body) > MAX_BODY:
        raise KalaError("http: request body too large")
    try:
        # From a str, json refuses a leading BOM (from bytes it would skip it).
        text = (body or b"null").decode("utf-8", "kala-go-replace")
        data = json.loads(text, parse_int=_go_int)
        if _SURROGATE_ESCAPE.search(text):
            data = _go_strings(data)
    except (ValueError, RecursionError) as exc:
        raise KalaError(f"invalid JSON: {exc}") from None
    if found := unstorable_path(data):
        raise KalaError(f"invalid JSON: {found[1]}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KalaError(
            f"json: cannot unmarshal {type(data).__name__} into Go value of type "
            "job.Job"
        )
    fields = {str(key).lower(): value for key, value in data.items()}
    _check_struct(fields, _JOB_FIELDS, "")
    for key in ("parent_jobs", "dependent_jobs"):
        items = fields.get(key)
        if items is not None and (
            not isinstance(items, list) or not all(isinstance(i, str) for i in items)
        ):
            raise KalaError(f"json: field {key!r} must be a list of strings")
    metadata = fields.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise KalaError("json: field 'metadata' must be an object")
        _check_struct(metadata, _METADATA_FIELDS, "metadata.")
    stats = fields.get("stats")
    if stats is not None:
        if not isinstance(stats, list):
            raise KalaError("json: field 'stats' must be a list of stats")
        for index, stat in enumerate(stats):
            if stat is None:
                continue
            if not isinstance(stat, dict):
                raise KalaError(f"json: field 'stats[{index}]' must be an object")
            _check_struct(stat, _STAT_FIELDS, f"stats[{index}].")
    return fields
