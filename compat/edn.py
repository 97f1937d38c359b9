"""EDN (and its JSON twin) for the JobStreamer API, over the edn_format library.

Inside Karmchari, JobStreamer data are plain Python: dicts keyed by strings such as
"job/name", lists, str, int, float, bool, None, datetime (#inst), UUID (#uuid),
Fraction (a Clojure ratio, 2660/39) and Decimal (a Clojure decimal, 1.5M). The only
EDN-specific value is `Keyword`, for keyword *values* (`:batch-status/queued`); keys
are keywords in EDN wherever the name allows.

- `dumps` writes EDN: string keys become keywords, unless EDN has no keyword of that
  name ("my key", "2nd"): those stay strings.
- `loads` reads EDN into that plain form: keywords become their names (without the
  colon), sets and lists become lists; it raises EdnError on anything unreadable or
  nested deeper than MAX_DEPTH. With `keywords=True` keyword *values* stay
  `Keyword`s and sets are `EdnSet`s (lists that `dumps` writes as `#{...}`), for
  data that is shown back as sent; `plain` makes such data plain.
- `to_json` is what liberator's JSON rendering makes of the same data: keyword keys
  and values as "ns/name" strings, #inst as ISO 8601, #uuid as a string, ratios as
  numbers.
- `plain_json` turns read data into something a JSONField can store; `unstorable`
  says first why it cannot (NaN, an infinity, a number beyond a double: JSON has no
  room for them, and the database refuses the row; nesting deeper than MAX_DEPTH).
- JSON stores a keyword, an #inst or a #uuid value as a string, and a set as a
  list. `tags` lists where read data holds them ([path, "keyword" | "inst" | "uuid"
  | "set"], kept beside the stored data) and `retag` turns those strings and lists
  back into what the client sent.
"""

from __future__ import annotations

import copy
import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import edn_format
from edn_format import Keyword

__all__ = [
    "EdnError",
    "EdnSet",
    "Keyword",
    "dumps",
    "keyword",
    "loads",
    "plain",
    "plain_json",
    "retag",
    "tags",
    "to_json",
    "unstorable",
]

# Deeper data is refused when read: converting, storing and printing it recurse (a
# job definition needs a handful of levels).
MAX_DEPTH = 64
# Whole decimals up to this many digits stay exact ints; Python refuses to turn
# longer ints into text (4300 digits), so json.dumps could not write them.
_INT_DIGITS = 4000


class EdnError(ValueError):
    """Text that is not EDN (or uses a tag we cannot read)."""


class EdnSet(list[Any]):
    """An EDN set (`#{:a :b}`) in data shown back as sent: a list, as JSON stores
    it (in the order read; a set has none), that `dumps` writes as a set again. A
    list because its items need not be hashable (maps read as dicts)."""


class _SetText(edn_format.TaggedElement):
    """How `dumps` writes an EdnSet: edn_format writes only Python sets as EDN sets,
    and those cannot hold dicts. Items written alike are written once (data edited
    since may repeat one, and a Clojure reader refuses a set with a duplicate)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __str__(self) -> str:
        written = dict.fromkeys(str(edn_format.dumps(item)) for item in self.items)
        return "#{" + " ".join(written) + "}"


# EDN's symbol grammar (a keyword is `:` and a symbol): a letter, `_` or one of
# `*!?$%&=<>`, or `.+-` not followed by a digit, then letters, digits and
# `.*+!-_?$%&=<>#`; at most one `/` between two such parts. (`:` inside is legal but
# rules around it differ between readers, so a key holding one stays a string.)
_PART = r"(?:[^\W\d]|[*!?$%&=<>]|[.+\-](?!\d))[\w.*+!\-?$%&=<>#]*"
_KEYWORD = re.compile(rf"{_PART}(?:/{_PART})?")


def keyword(name: str) -> Keyword:
    return Keyword(name)


def _key_to_edn(key: Any) -> Any:
    """A string key as a keyword where EDN can write it so ("my key" or "2nd" would
    print as no keyword, and break the map); otherwise as it is."""
    if isinstance(key, str):
        return Keyword(key) if _KEYWORD.fullmatch(key) else key
    return _to_edn(key)


def _to_edn(value: Any) -> Any:
    if isinstance(value, dict):
        return {_key_to_edn(key): _to_edn(item) for key, item in value.items()}
    if isinstance(value, EdnSet):
        return _SetText([_to_edn(item) for item in value])
    if isinstance(value, list | tuple):
        return [_to_edn(item) for item in value]
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return value


def dumps(value: Any) -> str:
    return str(edn_format.dumps(_to_edn(value)))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: str) -> str:
    """A string with each surrogate pair joined: edn_format reads "\\ud83d\\ude00"
    as two lone halves where Clojure (a Java string) reads one emoji. A lone half
    stays, for the caller to refuse (no database stores one)."""
    if not _SURROGATE.search(value):
        return value
    return value.encode("utf-16-le", "surrogatepass").decode(
        "utf-16-le", "surrogatepass"
    )


def _from_edn(value: Any, keywords: bool) -> Any:
    if isinstance(value, Keyword):
        return value if keywords else value.name
    if isinstance(value, date) and not isinstance(value, datetime):
        # `#inst "2016-07-01"` (or "2016"): Clojure reads midnight UTC.
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, Mapping):
        return {_key(key): _from_edn(item, keywords) for key, item in value.items()}
    if isinstance(value, str):
        return _text(value)
    if keywords and isinstance(value, AbstractSet):
        return EdnSet(_from_edn(item, keywords) for item in value)
    if isinstance(value, Sequence | AbstractSet):
        return [_from_edn(item, keywords) for item in value]
    if isinstance(value, edn_format.Symbol | edn_format.Char):
        return str(value)
    return value


def _key(key: Any) -> str:
    if isinstance(key, Keyword):
        return str(key.name)
    if isinstance(key, str):
        return _text(key)
    return str(_from_edn(key, False))


def loads(text: str | bytes, *, keywords: bool = False) -> Any:
    """One EDN value; None for empty text. Keyword values are their names and sets
    lists, or with `keywords` the Keywords themselves and EdnSets (keys are always
    their names)."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise EdnError(f"not UTF-8: {exc}") from None
    try:
        value = edn_format.loads(text)
    except (
        ValueError,
        NotImplementedError,
        TypeError,
        IndexError,
    ) as exc:
        raise EdnError(str(exc) or exc.__class__.__name__) from None
    except ZeroDivisionError:
        raise EdnError("a ratio with a zero denominator") from None
    except RecursionError:
        raise EdnError("nested too deeply") from None
    # Before converting (recursively), and every answer is printed recursively too.
    if why := _too_deep(value):
        raise EdnError(why)
    return _from_edn(value, keywords)


def plain(value: Any) -> Any:
    """Data read with `keywords=True` as `loads` reads it without: keyword values
    as their names, sets as lists."""
    if isinstance(value, Keyword):
        return value.name
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def _number(value: float | Decimal | Fraction) -> int | float:
    """A number as JSON holds it: a whole decimal or ratio as an exact int (2.0M and
    4/2 are 2, as Clojure reads 4/2), any other as the nearest float, which is an
    infinity when out of a double's range."""
    if isinstance(value, float):
        return value
    if isinstance(value, Fraction):
        if value.denominator == 1 and value.numerator.bit_length() < 3 * _INT_DIGITS:
            return value.numerator
    elif (
        value.is_finite()
        and value.adjusted() < _INT_DIGITS
        and value == value.to_integral_value()
    ):
        return int(value)
    try:
        return float(value)
    except OverflowError:  # a huge ratio
        return math.inf


def _finite(value: float | Decimal | Fraction) -> bool:
    number = _number(value)
    return isinstance(number, int) or math.isfinite(number)


def _walk(value: Any) -> Iterator[tuple[Any, int]]:
    """Every value inside `value` (map keys too) with its level: how many collections
    hold it, itself included. Without recursion: a body of 1 MiB can nest far deeper
    than Python's recursion limit; depth-first, so a deep one is found early."""
    stack = [(value, 0)]
    while stack:
        item, outer = stack.pop()
        if isinstance(item, str):
            yield item, outer
        elif isinstance(item, Mapping):
            yield item, outer + 1
            for key, child in item.items():
                stack.extend(((key, outer + 1), (child, outer + 1)))
        elif isinstance(item, Sequence | AbstractSet):
            yield item, outer + 1
            stack.extend((child, outer + 1) for child in item)
        else:
            yield item, outer


def _too_deep(value: Any) -> str | None:
    if any(level > MAX_DEPTH for _, level in _walk(value)):
        return f"nested deeper than {MAX_DEPTH} levels."
    return None


def unstorable(value: Any) -> str | None:
    """Why read data cannot be stored as JSON, or None."""
    for item, level in _walk(value):
        if level > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels."
        if isinstance(item, float | Decimal | Fraction) and not _finite(item):
            text = str(item) if len(str(item)) <= 40 else f"{str(item)[:37]}..."
            return (
                f"the number {text} cannot be stored: JSON has no NaN, infinity or "
                "number beyond a double's range."
            )
    return None


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(_json_value(key)): _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(item) for item in value]
    if isinstance(value, Keyword):
        return value.name
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return (
            moment.astimezone(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal | Fraction):
        return _number(value)
    return value


def to_json(value: Any) -> str:
    return json.dumps(_json_value(value), separators=(",", ":"), ensure_ascii=False)


def plain_json(value: Any) -> Any:
    """Read data made storable as JSON (dates and uuids as strings, ratios as
    floats, decimals as ints or floats). EdnError for what `unstorable` refuses."""
    if why := unstorable(value):
        raise EdnError(why)
    return _json_value(value)


# --- Typed values kept beside their JSON form ----------------------------------------

# A keyword's name as edn_format's reader takes it (its KEYWORD token, colon left out).
_NAME_CHARS = r"[\w.*+!\-?$%&=:#<>@]+"
_KEYWORD_NAME = re.compile(rf"{_NAME_CHARS}(?:/{_NAME_CHARS})?")
_TAGS = {Keyword: "keyword", datetime: "inst", uuid.UUID: "uuid"}


def tags(value: Any) -> list[list[Any]]:
    """Where read data holds a keyword, an #inst or a #uuid value, which plain_json
    stores as a string, or a set, which it stores as a list: `[path, tag]` each,
    the path being the keys and list positions down to it, the tag "keyword",
    "inst", "uuid" or "set"."""
    found: list[list[Any]] = []
    stack: list[tuple[list[Any], Any]] = [([], value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            stack.extend(([*path, str(key)], child) for key, child in item.items())
        elif isinstance(item, list | tuple):
            if isinstance(item, EdnSet) and path:
                found.append([path, "set"])
            stack.extend(([*path, index], child) for index, child in enumerate(item))
        else:
            tag = next((t for kind, t in _TAGS.items() if isinstance(item, kind)), None)
            if tag is not None:
                found.append([path, tag])
    found.reverse()  # in the data's order
    return found


def _typed(text: str, tag: str) -> Any:
    """The value a stored string stands for, or None when it is no such value."""
    if tag == "keyword":
        return Keyword(text) if _KEYWORD_NAME.fullmatch(text) else None
    if tag == "inst":
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment if moment.tzinfo else None
    if tag == "uuid":
        try:
            uid = uuid.UUID(text)
        except ValueError:
            return None
        return uid if str(uid) == text else None
    return None


def retag(stored: Any, found: Any) -> Any:
    """A copy of stored data (plain_json's) with the values `tags` found typed
    again. An entry whose place holds no such string (or, for a set, no list) any
    more (the data was edited since), or that is no entry at all, is passed over."""
    if not isinstance(found, list) or not found:
        return stored
    result = copy.deepcopy(stored)
    for entry in found:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], list)
            and entry[0]
            and isinstance(entry[1], str)
        ):
            continue
        path, tag = entry
        holder = result
        for step in path[:-1]:
            holder = _child(holder, step)
        last = path[-1]
        if _child(holder, last) is None:
            continue
        if tag == "set":
            if isinstance(holder[last], list):
                holder[last] = EdnSet(holder[last])
            continue
        value = _typed(holder[last], tag) if isinstance(holder[last], str) else None
        if value is not None:
            holder[last] = value
    return result


def _child(holder: Any, step: Any) -> Any:
    """holder[step] for a key of a map or a position in a list; else None."""
    if isinstance(holder, dict) and isinstance(step, str):
        return holder.get(step)
    if (
        isinstance(holder, list)
        and isinstance(step, int)
        and not isinstance(step, bool)
        and 0 <= step < len(holder)
    ):
        return holder[step]
    return None
