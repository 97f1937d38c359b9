"""The control bus: an operator's pause, resume or kill reaches the worker that owns
the run.

The database holds the truth (`Execution.desired_state`); Redis pub/sub only makes it
fast. A service sets the desired state and, after commit, publishes it on the
execution's channel. The worker subscribes before it reads the desired state once
from the database (so a command sent just before the subscription is not lost), then
polls the subscription without blocking from its supervise loop. When Redis is down,
or a message is lost, it still reads the database every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django_redis import get_redis_connection

from jobs.models import Execution

logger = logging.getLogger(__name__)

# Seconds between attempts to subscribe again after Redis failed.
_RESUBSCRIBE_SECONDS = 5.0


def _prefix() -> str:
    # Pub/sub channels ignore the Redis database number: prefix them like cache keys
    # so two installations sharing a Redis server never hear each other.
    return str(settings.CACHES["default"].get("KEY_PREFIX") or "karmchari")


def channel(execution_id: int) -> str:
    return f"{_prefix()}:control:{execution_id}"


def publish(*, execution_id: int, desired_state: str) -> bool:
    """Tell the owning worker at once; False if Redis is unreachable (the worker
    then sees the change in the database within KARMCHARI_CONTROL_DB_INTERVAL)."""
    try:
        get_redis_connection("default").publish(
            channel(execution_id), desired_state.encode()
        )
    except Exception:
        logger.warning(
            "could not publish %s for execution %s; workers will read the database",
            desired_state,
            execution_id,
            exc_info=True,
        )
        return False
    return True


def read_desired_state(execution_id: int) -> str | None:
    """The desired state stored in the database, None if it cannot be read."""
    try:
        return (
            Execution.objects.filter(pk=execution_id)
            .values_list("desired_state", flat=True)
            .first()
        )
    except DatabaseError:
        logger.warning("could not read desired state of %s", execution_id)
        return None


class ControlListener:
    """The worker's ear for one execution. `poll()` is cheap: call it often."""

    def __init__(
        self,
        execution_id: int,
        *,
        initial: str = Execution.DesiredState.RUN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.execution_id = execution_id
        self.desired = initial
        self._clock = clock
        self._pubsub: Any = None
        self._next_db_read = 0.0
        self._next_subscribe = 0.0

    @property
    def subscribed(self) -> bool:
        return self._pubsub is not None

    def open(self) -> None:
        self._subscribe()
        self._read_db()

    def close(self) -> None:
        self._drop_subscription()

    def poll(self) -> str:
        now = self._clock()
        if self._pubsub is None and now >= self._next_subscribe:
            self._subscribe()
        if self._pubsub is not None:
            try:
                while True:
                    message = self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=0.0
                    )
                    if message is None:
                        break
                    if message.get("type") == "message":
                        self.desired = _decode(message["data"])
            except Exception:
                logger.warning(
                    "control subscription of %s failed; reading the database",
                    self.execution_id,
                    exc_info=True,
                )
                self._drop_subscription()
        if now >= self._next_db_read:
            self._read_db()
        return self.desired

    def _subscribe(self) -> None:
        try:
            pubsub = get_redis_connection("default").pubsub()
            pubsub.subscribe(channel(self.execution_id))
        except Exception:
            logger.warning(
                "cannot subscribe to control of %s; falling back to the database",
                self.execution_id,
            )
            self._pubsub = None
            self._next_subscribe = self._clock() + _RESUBSCRIBE_SECONDS
            return
        self._pubsub = pubsub

    def _drop_subscription(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._next_subscribe = self._clock() + _RESUBSCRIBE_SECONDS
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                logger.debug("closing a broken subscription failed", exc_info=True)

    def _read_db(self) -> None:
        interval = (
            settings.KARMCHARI_CONTROL_DB_INTERVAL_SUBSCRIBED
            if self._pubsub is not None
            else settings.KARMCHARI_CONTROL_DB_INTERVAL
        )
        self._next_db_read = self._clock() + interval
        stored = read_desired_state(self.execution_id)
        if stored is not None:
            self.desired = stored


def _decode(data: Any) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)
