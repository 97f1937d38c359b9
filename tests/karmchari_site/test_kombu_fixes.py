"""The kombu Redis close fix (karmchari_site/kombu_fixes.py)."""

from __future__ import annotations

from unittest import mock

import pytest
from django.conf import settings
from kombu import Connection, Queue
from kombu.common import ignore_errors
from kombu.transport import redis as kombu_redis

from karmchari_site import kombu_fixes

# This run's Redis as a kombu URL (the broker may be RabbitMQ; the backend is Redis).
REDIS = settings.CELERY_RESULT_BACKEND


def test_it_lets_a_worker_close_a_lost_broker_connection_as_celery_does() -> None:
    # Celery 5.7's consumer on a lost connection (Consumer.
    # on_connection_error_after_connected): collect, then close with ignore_errors.
    connection = Connection(REDIS)
    channel = connection.default_channel
    queue = Queue("karmchari-test-kombu-fix", channel=channel)
    queue.declare()
    producer = connection.Producer(channel)
    producer.publish({"x": 1}, routing_key=queue.name)
    message = queue.get(no_ack=False)  # delivered, not acknowledged
    assert message is not None
    try:
        connection.collect()
        ignore_errors(connection, connection.close)  # raised AttributeError before
    finally:
        with Connection(REDIS) as cleanup:
            Queue(queue.name, channel=cleanup.default_channel).delete()


def test_it_answers_a_closed_connection_with_a_connection_error() -> None:
    channel = mock.Mock(spec=["connection"])
    channel.connection.client = None
    with pytest.raises(kombu_redis.get_redis_ConnectionError()):
        kombu_redis.Channel._connparams(channel)  # type: ignore[attr-defined]


def test_it_is_installed_once_and_only_on_the_kombu_it_was_checked_on() -> None:
    fixed = kombu_redis.Channel._connparams  # type: ignore[attr-defined]
    assert kombu_fixes.patch_redis_channel_close()  # the Celery app applied it
    assert kombu_redis.Channel._connparams is fixed  # type: ignore[attr-defined]
    with mock.patch("importlib.metadata.version", return_value="5.8.0"):
        assert not kombu_fixes.patch_redis_channel_close()
