from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        # Registers system checks; connects the lost-work receiver to agents.
        from jobs import checks, recovery  # noqa: F401
