"""System checks for the compatibility APIs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register


@register()
def check_compat_open(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    opened = list(settings.KARMCHARI_COMPAT_OPEN)
    if not opened:
        return []
    return [
        Warning(
            f"Compatibility APIs open without authentication: {', '.join(opened)}. "
            "Anyone who can reach this server can create, run and stop jobs there.",
            hint="Only on a trusted network. Unset KARMCHARI_COMPAT_OPEN to require "
            "a token or basic auth again (see docs/compat.md).",
            id="karmchari.W101",
        )
    ]


@register()
def check_compat_open_with_per_app_access(
    app_configs: Any, **kwargs: Any
) -> list[CheckMessage]:
    opened = list(settings.KARMCHARI_COMPAT_OPEN)
    if not (opened and settings.KARMCHARI_PER_APP_ACCESS):
        return []
    return [
        Warning(
            f"Per-app access is on, but compatibility APIs are open: "
            f"{', '.join(opened)}. Anonymous callers there see and act on every app.",
            hint="An open API is trusted by configuration. Unset KARMCHARI_COMPAT_OPEN "
            "so that each caller is limited to their apps (see docs/compat.md).",
            id="karmchari.W102",
        )
    ]
