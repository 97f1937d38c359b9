"""A notification channel's secret, encrypted at rest: the webhook is signed with
the decrypted key (jobs/notification_sending.py), a secret no key can decrypt fails
its delivery saying so, and migration 0023 encrypts the secrets stored before."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings
from rest_framework.test import APIClient

from jobs import notification_sending
from jobs.models import NotificationChannel, NotificationDelivery
from jobs.secrets import decrypt, encrypt
from tests.receiver import Receiver

KEY_1 = Fernet.generate_key().decode()
KEY_2 = Fernet.generate_key().decode()


@pytest.mark.django_db
@pytest.mark.usefixtures("eager")
def test_it_signs_a_webhook_with_the_secret_set_through_the_api(
    api: APIClient,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    made = api.post(
        "/api/notification-channels/",
        {"name": "hook", "kind": "webhook", "target": receiver.url, "secret": "s3"},
    ).json()
    assert NotificationChannel.objects.get().secret != "s3"  # stored encrypted

    with django_capture_on_commit_callbacks(execute=True):
        queued = api.post(f"/api/notification-channels/{made['id']}/test/")

    [request] = receiver.requests
    body = request["body"]
    expected = hmac.new(b"s3", body, hashlib.sha256).hexdigest()
    assert request["headers"]["X-Karmchari-Signature"] == f"sha256={expected}"
    assert request["headers"]["X-Karmchari-Event"] == "test"
    timed = request["headers"]["X-Karmchari-Signature-V1"]
    assert notification_sending.webhook_verify(secret="s3", body=body, header=timed)
    delivery = NotificationDelivery.objects.get(pk=queued.json()["id"])
    assert (delivery.status, delivery.attempts) == ("sent", 1)


@pytest.mark.django_db
def test_it_fails_a_delivery_whose_secret_no_key_can_decrypt_at_once(
    receiver: Receiver,
) -> None:
    """Retrying cannot help until an operator acts: the first attempt is the last,
    even with attempts left, and says what to do."""
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        token = encrypt("s3")
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target=receiver.url, secret=token
    )
    delivery = NotificationDelivery.objects.create(
        channel=channel, event="test", payload={"event": "test", "app": "a", "job": "j"}
    )

    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_2]):
        done = notification_sending.notification_deliver(
            delivery_id=delivery.pk, final=False
        )

    assert receiver.requests == []
    assert (done.status, done.attempts) == ("failed", 1)
    assert done.error.startswith(
        "Not sent: The secret of notification channel 'hook' cannot be decrypted"
    )
    assert "set it again" in done.error
    stored = NotificationDelivery.objects.get()
    assert (stored.status, stored.error) == ("failed", done.error)


@pytest.mark.django_db
def test_it_sends_a_webhook_unsigned_when_its_channel_has_no_secret(
    receiver: Receiver,
) -> None:
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target=receiver.url
    )
    delivery = NotificationDelivery.objects.create(
        channel=channel, event="test", payload={"event": "test", "app": "a", "job": "j"}
    )

    done = notification_sending.notification_deliver(
        delivery_id=delivery.pk, final=True
    )

    assert done.status == "sent"
    [request] = receiver.requests
    assert "X-Karmchari-Signature" not in request["headers"]


@pytest.mark.django_db(transaction=True)
def test_it_encrypts_the_secrets_stored_before_and_decrypts_them_going_back() -> None:
    before = [("jobs", "0022_notification_flood_control")]
    after = [("jobs", "0023_notificationchannel_secret_encrypted")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    OldChannel = executor.loader.project_state(before).apps.get_model(
        "jobs", "NotificationChannel"
    )
    signed = OldChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h", secret="p" * 200
    )
    plain = OldChannel.objects.create(
        name="mail", kind="email", target="ops@example.com"
    )
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        NewChannel = executor.loader.project_state(after).apps.get_model(
            "jobs", "NotificationChannel"
        )
        token = NewChannel.objects.get(pk=signed.pk).secret
        assert token != "p" * 200
        assert decrypt(token) == "p" * 200
        assert NewChannel.objects.get(pk=plain.pk).secret == ""

        executor = MigrationExecutor(connection)
        executor.migrate(before)
        assert OldChannel.objects.get(pk=signed.pk).secret == "p" * 200
        assert OldChannel.objects.get(pk=plain.pk).secret == ""
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_it_will_not_migrate_back_a_secret_no_key_can_decrypt() -> None:
    before = [("jobs", "0022_notification_flood_control")]
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        token = encrypt("lost")
    NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h", secret=token
    )
    try:
        executor = MigrationExecutor(connection)
        with (
            override_settings(KARMCHARI_SECRETS_KEYS=[KEY_2]),
            pytest.raises(RuntimeError, match="'hook' cannot be decrypted"),
        ):
            executor.migrate(before)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert NotificationChannel.objects.get().secret == token  # rolled back, kept
