"""EDN (and its JSON twin) for the JobStreamer API, over the edn_format library.

Inside Karmchari, JobStreamer data are plain Python: dicts keyed by strings such as
"job/name", lists, str, int, float, bool, None, datetime (#inst), UUID (#uuid) and
Fraction (a Clojure ratio, 2660/39). The only EDN-specific value is `Keyword`, for
keyword *values* (`:batch-status/queued`); keys are always keywords in EDN.

- `dumps` writes EDN: string keys become keywords.
- `loads` reads EDN into that plain form: keywords become their names (without the
  colon), sets and lists become lists; it raises EdnError on anything unreadable.
- `to_json` is what liberator's JSON rendering makes of the same data: keyword keys
  and values as "ns/name" strings, #inst as ISO 8601, #uuid as a string, ratios as
  numbers.
- `plain_json` turns read data into something a JSONField can store.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import edn_format
from edn_format import Keyword

__all__ = ["EdnError", "Keyword", "dumps", "keyword", "loads", "plain_json", "to_json"]


class EdnError(ValueError):
    """Text that is not EDN (or uses a tag we cannot read)."""


def keyword(name: str) -> Keyword:
    return Keyword(name)


def _to_edn(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            (Keyword(key) if isinstance(key, str) else _to_edn(key)): _to_edn(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_to_edn(item) for item in value]
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return value


def dumps(value: Any) -> str:
    return str(edn_format.dumps(_to_edn(value)))


def _from_edn(value: Any) -> Any:
    if isinstance(value, Keyword):
        return value.name
    if isinstance(value, Mapping):
        return {_key(key): _from_edn(item) for key, item in value.items()}
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence | AbstractSet):
        return [_from_edn(item) for item in value]
    if isinstance(value, edn_format.Symbol | edn_format.Char):
        return str(value)
    return value


def _key(key: Any) -> str:
    if isinstance(key, Keyword):
        return str(key.name)
    if isinstance(key, str):
        return key
    return str(_from_edn(key))


def loads(text: str | bytes) -> Any:
    """One EDN value; None for empty text."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise EdnError(f"not UTF-8: {exc}") from None
    try:
        value = edn_format.loads(text)
    except (ValueError, NotImplementedError, TypeError, IndexError) as exc:
        raise EdnError(str(exc) or exc.__class__.__name__) from None
    except RecursionError:
        raise EdnError("nested too deeply") from None
    return _from_edn(value)


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
    if isinstance(value, Fraction):
        return float(value)
    return value


def to_json(value: Any) -> str:
    return json.dumps(_json_value(value), separators=(",", ":"), ensure_ascii=False)


def plain_json(value: Any) -> Any:
    """Read data made storable as JSON (dates and uuids as strings, ratios as
    floats)."""
    return _json_value(value)
