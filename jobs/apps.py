from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        # Registers system checks, the lost-work receiver for agents, and the
        # OpenAPI extensions.
        from jobs import checks, recovery, schema  # noqa: F401
