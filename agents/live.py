"""Live agent stats in Redis: the latest sample (with a TTL) and the last hour.

Redis is for speed, not truth: every reader falls back to the database row when Redis
is down or the key has expired, and every writer reports failure instead of raising,
so a Redis outage degrades pages but never stops a worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from agents.stats import Point, Sample

logger = logging.getLogger(__name__)

HISTORY_SECONDS = 3600


def _prefix() -> str:
    return str(settings.CACHES["default"].get("KEY_PREFIX") or "karmchari")


def live_key(instance_id: uuid.UUID | str) -> str:
    return f"{_prefix()}:agents:live:{instance_id}"


def history_key(instance_id: uuid.UUID | str) -> str:
    return f"{_prefix()}:agents:history:{instance_id}"


def history_length() -> int:
    return max(1, math.ceil(HISTORY_SECONDS / settings.KARMCHARI_HEARTBEAT_SECONDS))


def _redis() -> Any:
    return get_redis_connection("default")


def live_ttl() -> int:
    """Seconds a live value is kept.

    It outlives the window, so a reader that finds no key can be sure the agent is
    silent, not that the key expired a moment early.
    """
    return math.ceil(settings.KARMCHARI_AGENT_WINDOW_SECONDS * 2)


def publish(*, instance_id: uuid.UUID | str, sample: Sample) -> bool:
    """Store the sample as the agent's live value and append it to its history."""
    ttl = live_ttl()
    # The TTL goes along: readers, whose settings may differ, age the key by it.
    value = json.dumps({**json.loads(sample.to_json()), "ttl": ttl})
    try:
        pipe = _redis().pipeline(transaction=False)
        pipe.set(live_key(instance_id), value, ex=ttl)
        pipe.rpush(history_key(instance_id), sample.to_point())
        pipe.ltrim(history_key(instance_id), -history_length(), -1)
        pipe.expire(history_key(instance_id), HISTORY_SECONDS)
        pipe.execute()
    except (RedisError, OSError):
        logger.warning("agent %s: cannot publish stats to Redis", instance_id)
        return False
    return True


def read_many(
    instance_ids: Iterable[uuid.UUID | str], *, now: float | None = None
) -> dict[str, Sample]:
    """Live samples by instance id (as a string); silent or unknown agents are absent.

    A sample's `at` is when Redis received it, on the reader's clock (`now`, default
    this process's): the key's age by its remaining TTL, which Redis counts on its own
    clock. The worker's clock may be minutes off (a host without NTP); judged by its
    own stamp, a live worker would look dead, or a dead one alive.

    One round trip whatever the number of agents.
    """
    ids = [str(i) for i in instance_ids]
    if not ids:
        return {}
    keys = [live_key(i) for i in ids]
    try:
        pipe = _redis().pipeline(transaction=False)
        pipe.mget(keys)
        for key in keys:
            pipe.pttl(key)
        values, *remaining = pipe.execute()
    except (RedisError, OSError):
        logger.warning("cannot read live agent stats from Redis")
        return {}
    now = time.time() if now is None else now
    samples = {}
    for instance_id, raw, left in zip(ids, values, remaining, strict=True):
        sample = Sample.from_json(raw)
        if sample is None or left is None or left < 0:
            continue  # Gone meanwhile, or a key without a TTL: not ours.
        age = max(0.0, _ttl_of(raw) - left / 1000)
        samples[instance_id] = dataclasses.replace(sample, at=now - age)
    return samples


def _ttl_of(raw: str | bytes) -> float:
    """The TTL the writer gave the value (this process's setting if it did not say)."""
    try:
        ttl = json.loads(raw).get("ttl")
    except (ValueError, AttributeError):
        ttl = None
    if isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0:
        return float(ttl)
    return float(live_ttl())


def read_one(
    instance_id: uuid.UUID | str, *, now: float | None = None
) -> Sample | None:
    return read_many([instance_id], now=now).get(str(instance_id))


def read_history(instance_id: uuid.UUID | str) -> list[Point]:
    """The last hour of points, oldest first."""
    try:
        raw = _redis().lrange(history_key(instance_id), 0, -1)
    except (RedisError, OSError):
        logger.warning("agent %s: cannot read stats history from Redis", instance_id)
        return []
    return [point for item in raw if (point := Point.parse(item)) is not None]


def forget(instance_id: uuid.UUID | str) -> None:
    """Drop the live value, so a stopped agent does not look alive until it expires."""
    try:
        _redis().delete(live_key(instance_id))
    except (RedisError, OSError):
        logger.warning("agent %s: cannot clear live stats in Redis", instance_id)
