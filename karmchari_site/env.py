"""Small typed readers for environment settings.

Each one raises ImproperlyConfigured with the variable's name and the bad value, so a
typo in a deployment fails at start with a message instead of running half-configured.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default  # as the other readers: set but empty is "not set"
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off."
    )


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number.")
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, default: str, *, schemes: set[str]) -> str:
    """A URL whose scheme is one of `schemes` (checked here, not at first use)."""
    raw = os.environ.get(name)
    value = default if raw is None or not raw.strip() else raw.strip()
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(
            f"{name}={value!r} has an unsupported scheme {scheme!r}: use one of "
            f"{allowed}."
        )
    return value


def env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    return Path(raw.strip()).expanduser().resolve()


def env_choice(name: str, default: str, *, choices: set[str]) -> str:
    """One of `choices` (compared in upper case, as logging's level names)."""
    value = env_str(name) or default
    if value.upper() not in choices:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not one of {', '.join(sorted(choices))}."
        )
    return value.upper()


LOG_LEVELS = {
    name for name in logging.getLevelNamesMapping() if name not in ("NOTSET", "WARN")
}


def env_timezone(name: str, default: str) -> str:
    """An IANA time zone name (Europe/Paris); empty means the default."""
    value = env_str(name) or default
    try:
        ZoneInfo(value)
    except (ValueError, OSError, KeyError):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a time zone: use an IANA name such as UTC or "
            "Europe/Paris."
        ) from None
    return value


_RATE = re.compile(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)")


def env_rate(name: str, default: str) -> str:
    """A rate as DRF's throttles read it: N/second, N/minute, N/hour or N/day."""
    value = env_str(name) or default
    if not _RATE.fullmatch(value):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate: use N/second, N/minute, N/hour or N/day."
        )
    return value
