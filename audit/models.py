"""The audit log: every write and control action through the web (API, admin,
compat routes): who, when, what, from where, and how it ended."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Kept as text too: the entry outlives the user.
    actor_name = models.CharField("who", max_length=150, blank=True)
    method = models.CharField(max_length=10)
    path = models.CharField("what", max_length=500)
    status = models.PositiveSmallIntegerField(help_text="HTTP status of the answer.")
    address = models.GenericIPAddressField("from", null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            # "What did this user do": the admin's actor filter, newest first.
            models.Index(fields=["actor_name", "-created"], name="audit_entry_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name or 'anonymous'} {self.method} {self.path}"
