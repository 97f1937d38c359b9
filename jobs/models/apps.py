"""App: a named group of jobs, with retention defaults and per-app access; the
route names an app may not take."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from jobs.models.base import slug_validator

# App names become URL segments in the JobStreamer compat API (/{app}/jobs), so names
# of top-level routes are refused.
RESERVED_APP_NAMES = (
    "admin",
    "api",
    "static",
    "media",
    "apps",
    "agents",
    "agent",
    "registerJob",
    "jobState",
    "metrics",
    "ping",
)


def validate_not_reserved(name: str) -> None:
    """The friendly twin of the jobs_app_name_not_reserved constraint."""
    if name.lower() in {reserved.lower() for reserved in RESERVED_APP_NAMES}:
        raise ValidationError(f"{name!r} is reserved for a route; choose another name.")


class App(models.Model):
    name = models.CharField(
        max_length=100, unique=True, validators=[slug_validator, validate_not_reserved]
    )
    description = models.TextField(blank=True)
    meta = models.JSONField(
        default=dict, blank=True, help_text="Free-form data, e.g. a classpath."
    )
    # Retention defaults for the app's jobs (empty: the KARMCHARI_KEEP_* settings).
    keep_succeeded = models.PositiveIntegerField(
        null=True, blank=True, help_text="Succeeded executions kept per job."
    )
    keep_failed = models.PositiveIntegerField(
        null=True, blank=True, help_text="Other finished executions kept per job."
    )
    keep_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Finished executions older than this go."
    )
    # Per-app access (jobs/access.py): who sees and acts on the app's jobs.
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="karmchari_apps",
        help_text="Users who see and act on this app's jobs. Matters only with "
        "per-app access on (KARMCHARI_PER_APP_ACCESS).",
    )
    groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="karmchari_apps",
        help_text="Groups whose members see and act on this app's jobs. Matters "
        "only with per-app access on (KARMCHARI_PER_APP_ACCESS).",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            # With per-app access on, sees every app as if it were off.
            ("access_all_apps", "Can access every app"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(name__in=RESERVED_APP_NAMES),
                name="jobs_app_name_not_reserved",
                violation_error_message="This name is reserved for a route.",
            ),
        ]

    def __str__(self) -> str:
        return self.name
