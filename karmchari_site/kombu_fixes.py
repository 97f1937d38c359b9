"""A fix for Celery 5.7 / kombu 5.7 workers that exit when their Redis broker goes away.

When a worker loses its Redis broker, Celery 5.7's consumer first collects the broken
connection (which drops its transport's `client`) and then closes it. Closing the
default channel restores the unacknowledged messages through a new connection pool,
whose parameters come from that `client`: `AttributeError: 'NoneType' object has no
attribute 'hostname'`. `ignore_errors()` catches only connection and channel errors,
so the worker stopped with "Unrecoverable error" instead of reconnecting
(tests/chaos/test_redis_faults.py, every time the broker stayed away for a moment).

Here a channel whose connection is already gone raises redis' ConnectionError
instead, which the close ignores, so the consumer goes on to reconnect as it does
on RabbitMQ. The messages it could not restore are not lost: kombu's Redis transport
keeps them in its unacked index and restores them after `visibility_timeout` (if
Redis kept them; if not, the outbox sweep sends those runs again), and a run sent
twice is claimed once (jobs/services/executions.py). Applied only to the
kombu versions it was checked against; remove it once kombu handles this itself.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)

CHECKED_VERSIONS = ("5.7.",)


def patch_redis_channel_close() -> bool:
    """Install the fix; True if it is (or already was) in place."""
    from importlib.metadata import version

    from kombu.transport import redis as kombu_redis

    kombu_version = version("kombu")
    if not kombu_version.startswith(CHECKED_VERSIONS):
        logger.debug("kombu %s: the Redis close fix is not applied", kombu_version)
        return False
    channel: Any = kombu_redis.Channel  # its private methods are not in the stubs
    original = channel._connparams
    if getattr(original, "karmchari_fix", False):
        return True

    @functools.wraps(original)
    def _connparams(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.connection.client is None:
            raise kombu_redis.get_redis_ConnectionError()(
                "the broker connection is closed; not reconnecting to close it"
            )
        return original(self, *args, **kwargs)

    _connparams.karmchari_fix = True  # type: ignore[attr-defined]
    channel._connparams = _connparams
    return True
