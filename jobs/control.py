"""The control bus: an operator's pause, resume or kill reaches the worker that owns
the run.

The database holds the truth (`Execution.desired_state`); Redis pub/sub only makes it
fast. A service sets the desired state and, after commit, publishes "<id> <state>" on
the control channel of the worker that claimed the run (`Execution.worker`, Celery's
node name): a command reaches that worker's threads only, however large the fleet.
Each worker thread subscribes to its worker's channel once, before its first claim
reads the desired state from the database, and keeps that subscription for all its
runs: a run costs no Redis command at all for control. Its supervise loop polls the
subscription without blocking and takes the messages meant for its own execution.

No command falls between the two: the service reads the run's worker after its own
UPDATE of the desired state, in the same transaction. A claim that committed first
is seen there (and its worker was subscribed before claiming); a claim that comes
after waits for that UPDATE's row lock and reads the new desired state itself. A run
still pending has no worker to tell: its claim reads the desired state. When Redis is
down, or a message is lost, the worker still reads the database every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django_redis import get_redis_connection

from jobs.models import Execution

logger = logging.getLogger(__name__)

# Seconds between attempts to subscribe again after Redis failed.
_RESUBSCRIBE_SECONDS = 5.0

# This thread's subscriber (a redis-py PubSub) and the worker it listens for, shared
# by its runs one after another.
_local = threading.local()


def _subscriber(worker: str) -> Any:
    """This thread's subscription to its worker's control channel, made once
    (SUBSCRIBE is sent without waiting for its reply)."""
    pubsub = getattr(_local, "pubsub", None)
    if pubsub is not None and getattr(_local, "worker", None) != worker:
        _drop_subscriber()  # another worker name in this thread (tests, embedding)
        pubsub = None
    if pubsub is None:
        pubsub = get_redis_connection("default").pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel(worker))
        _local.pubsub, _local.worker = pubsub, worker
    return pubsub


def _drop_subscriber() -> None:
    """Forget a subscriber that failed; the next run makes a new one."""
    pubsub, _local.pubsub = getattr(_local, "pubsub", None), None
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:
            logger.debug("closing a broken subscription failed", exc_info=True)


def _prefix() -> str:
    # Pub/sub channels ignore the Redis database number: prefix them like cache keys
    # so two installations sharing a Redis server never hear each other.
    return str(settings.CACHES["default"].get("KEY_PREFIX") or "karmchari")


def channel(worker: str) -> str:
    """The control channel of one worker (Celery's node name, `Execution.worker`)."""
    return f"{_prefix()}:control:{worker}"


def _payload(execution_id: int, desired_state: str) -> bytes:
    return f"{execution_id} {desired_state}".encode()


def publish(*, execution_id: int, desired_state: str, worker: str) -> bool:
    """Tell the owning worker at once; False if Redis is unreachable (the worker
    then sees the change in the database within KARMCHARI_CONTROL_DB_INTERVAL).

    `worker` is the run's `Execution.worker`, read after the desired state was
    stored (see above). Empty (not claimed yet): nobody to tell, the claim reads it.
    """
    if not worker:
        return True
    try:
        get_redis_connection("default").publish(
            channel(worker), _payload(execution_id, desired_state)
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
        if not connection.in_atomic_block:
            connection.close()  # perhaps it died: the next read opens a new one
        return None


class ControlListener:
    """The worker's ear for one execution. `poll()` is cheap: call it often."""

    def __init__(
        self,
        execution_id: int,
        *,
        worker: str,
        initial: str = Execution.DesiredState.RUN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.execution_id = execution_id
        self.worker = worker
        self._mine = f"{execution_id} "
        self.desired = initial
        self._clock = clock
        self._pubsub: Any = None
        self._next_db_read = 0.0
        self._next_subscribe = 0.0

    @property
    def subscribed(self) -> bool:
        return self._pubsub is not None

    def subscribe(self) -> None:
        """Listen to the control channel (a Redis command only for a thread's first
        run, and no round trip even then: replies come later)."""
        if self._pubsub is None:
            self._subscribe()

    def open(self, *, desired: str | None = None) -> None:
        """Subscribe, then take the desired state: `desired` when the caller read it
        after subscribing (the claim does), else from the database."""
        self.subscribe()
        if desired is None:
            self._read_db()
        else:
            self.desired = desired
            self._next_db_read = self._clock() + self._db_interval()

    def close(self) -> None:
        """Stop listening; the thread's subscription stays for its next run."""
        self._pubsub = None

    def poll(self) -> str:
        now = self._clock()
        if self._pubsub is None and now >= self._next_subscribe:
            self._subscribe()
        if self._pubsub is not None:
            try:
                while True:
                    message = self._pubsub.get_message(timeout=0.0)
                    if message is None:
                        break
                    # Every command for this worker reaches each of its threads:
                    # take this run's only.
                    data = _decode(message["data"])
                    if message.get("type") == "message" and data.startswith(self._mine):
                        self.desired = data[len(self._mine) :]
            except Exception:
                logger.warning(
                    "control subscription of %s failed; reading the database",
                    self.execution_id,
                    exc_info=True,
                )
                self._pubsub = None
                _drop_subscriber()
                # Redis restarted, or dropped the connection: subscribe again at
                # once; only a failed subscription waits _RESUBSCRIBE_SECONDS.
                self._subscribe()
        if now >= self._next_db_read:
            self._read_db()
        return self.desired

    def _subscribe(self) -> None:
        try:
            pubsub = _subscriber(self.worker)
        except Exception:
            logger.warning(
                "cannot subscribe to control of %s; falling back to the database",
                self.execution_id,
            )
            _drop_subscriber()
            self._pubsub = None
            self._next_subscribe = self._clock() + _RESUBSCRIBE_SECONDS
            return
        self._pubsub = pubsub

    def _db_interval(self) -> float:
        return float(
            settings.KARMCHARI_CONTROL_DB_INTERVAL_SUBSCRIBED
            if self._pubsub is not None
            else settings.KARMCHARI_CONTROL_DB_INTERVAL
        )

    def _read_db(self) -> None:
        self._next_db_read = self._clock() + self._db_interval()
        stored = read_desired_state(self.execution_id)
        if stored is not None:
            self.desired = stored


def _decode(data: Any) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)
