"""Small pieces of the operator console shared by the jobs and agents admins.

The colours live in static/karmchari/console.css, on top of the admin's CSS variables,
so badges follow the light and dark themes.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString


def badge(state: str, label: str | None = None, *, element_id: str = "") -> SafeString:
    """A small coloured span for a status or liveness (`k-badge-<state>` in CSS)."""
    text = label if label is not None else state.replace("_", " ")
    if element_id:
        return format_html(
            '<span id="{}" class="k-badge k-badge-{}" data-state="{}">{}</span>',
            element_id,
            state,
            state,
            text,
        )
    return format_html('<span class="k-badge k-badge-{}">{}</span>', state, text)


class CappedPaginator(Paginator):  # type: ignore[type-arg]
    """Counts at most CAP + 1 rows (a LIMITed subquery), never the whole table: a
    list of a table that grows without bound (executions, notification deliveries,
    the audit log) shows "more than CAP" instead of an exact total
    (templates/admin/pagination.html)."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        rows: QuerySet[Any] = self.object_list  # type: ignore[assignment]
        return rows[: self.CAP + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > self.CAP
