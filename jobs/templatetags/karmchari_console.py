"""Template tags of the operator console (the admin index is the dashboard)."""

from __future__ import annotations

from typing import Any

from django import template
from django.template import Context
from django.utils.safestring import SafeString

from jobs import access, charts, stats
from karmchari_site.admin_ui import badge as make_badge

register = template.Library()


@register.simple_tag(takes_context=True)
def karmchari_dashboard(context: Context) -> dict[str, Any]:
    """The dashboard's figures (cached aggregates, or with per-app access those of
    the user's apps) and its chart."""
    request = context.get("request")
    figures = stats.stats_dashboard(apps=access.scope(getattr(request, "user", None)))
    figures["chart"] = charts.hourly_svg(figures["hourly"])
    return figures


@register.simple_tag
def badge(state: str) -> SafeString:
    return make_badge(state)


@register.filter
def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
