from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        # Registers system checks, the lost-work receiver for agents, and the
        # OpenAPI extensions.
        from django.db.models.signals import post_delete, post_save

        from jobs import checks, notifications, recovery, schema  # noqa: F401
        from jobs.models import NotificationRule

        for signal in (post_save, post_delete):
            signal.connect(
                notifications.forget_rule_targets,
                sender=NotificationRule,
                dispatch_uid=f"jobs.forget_rule_targets.{signal is post_save}",
            )
