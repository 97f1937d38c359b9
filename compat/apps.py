from __future__ import annotations

from django.apps import AppConfig


class CompatConfig(AppConfig):
    name = "compat"
    verbose_name = "Compatibility APIs"

    def ready(self) -> None:
        from compat import checks  # noqa: F401 (registers the system checks)
