"""python manage.py rotate_secrets: encrypt every job secret and every webhook
channel's signing secret again under the first key of KARMCHARI_SECRETS_KEYS, so the
keys after it can be removed.

Key rotation: put a new key first (KARMCHARI_SECRETS_KEYS=new,old), restart web and
workers, run this, then drop the old key. Safe to run again, and while jobs run.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from jobs.secrets import secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every job secret and notification channel secret with the "
        "first key of KARMCHARI_SECRETS_KEYS."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        rotated, unreadable = secrets_rotate()
        self.stdout.write(f"Re-encrypted {rotated} secret(s) with the first key.")
        if unreadable:
            for where in unreadable:
                self.stderr.write(f"cannot decrypt {where}")
            raise CommandError(
                f"{len(unreadable)} secret(s) no configured key can decrypt were left "
                "as they are: add back the key that made them, or set them again."
            )
