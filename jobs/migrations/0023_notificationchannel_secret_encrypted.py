"""Notification channels' secrets (the webhook signing keys) encrypted at rest, as job
secrets are: the column becomes text (a Fernet token is longer than the 200
characters a secret may have) and each stored secret is replaced by its token
(jobs.secrets.encrypt, under the first of KARMCHARI_SECRETS_KEYS).

Backward, tokens are decrypted again; a token no configured key decrypts stops the
migration, naming its channel, rather than leave a token where a key belongs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cryptography.fernet import InvalidToken
from django.db import migrations, models

from jobs.secrets import decrypt, encrypt

BATCH = 500
# The old column's width (jobs.models.notifications.MAX_SECRET_LENGTH).
OLD_LENGTH = 200


def _secrets(Channel: Any) -> Iterator[tuple[int, str, str]]:
    """(pk, name, secret) of the channels with one, a batch at a time (no cursor left
    open on the table being written: SQLite would not isolate it)."""
    rows = Channel.objects.exclude(secret="")
    pks = list(rows.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), BATCH):
        yield from rows.filter(pk__in=pks[start : start + BATCH]).values_list(
            "pk", "name", "secret"
        )


def encrypt_secrets(apps: Any, schema_editor: Any) -> None:
    Channel = apps.get_model("jobs", "NotificationChannel")
    for pk, _, secret in _secrets(Channel):
        Channel.objects.filter(pk=pk, secret=secret).update(secret=encrypt(secret))


def decrypt_secrets(apps: Any, schema_editor: Any) -> None:
    Channel = apps.get_model("jobs", "NotificationChannel")
    for pk, name, token in _secrets(Channel):
        try:
            secret = decrypt(token)
        except InvalidToken:
            raise RuntimeError(
                f"The secret of notification channel {name!r} cannot be decrypted "
                "with KARMCHARI_SECRETS_KEYS: add back the key that made it, or clear "
                "the secret, then migrate back again."
            ) from None
        if len(secret) > OLD_LENGTH:
            raise RuntimeError(
                f"The secret of notification channel {name!r} is longer than "
                f"{OLD_LENGTH} characters, which the old column cannot hold: shorten "
                "it, then migrate back again."
            )
        Channel.objects.filter(pk=pk, secret=token).update(secret=secret)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0022_notification_flood_control"),
    ]

    operations = [
        migrations.AlterField(
            model_name="notificationchannel",
            name="secret",
            field=models.TextField(
                blank=True,
                editable=False,
                help_text="Webhooks: key of the X-Karmchari-Signature HMAC-SHA256 "
                "header, encrypted; never shown.",
            ),
        ),
        migrations.RunPython(encrypt_secrets, decrypt_secrets, elidable=False),
    ]
