"""Server-side SVG charts for the operator console: no JavaScript library, no CDN.

Colours come from CSS classes (static/karmchari/console.css) so charts follow the
admin's light and dark themes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from jobs.stats import OUTCOMES

LABELS = {
    "succeeded": "succeeded",
    "failed": "failed / timed out / lost",
    "killed": "killed",
    "skipped": "skipped",
    "active": "in progress",
}


def _nice_max(value: int) -> int:
    """A round axis maximum at or above `value` (1, 2, 5 times a power of ten)."""
    if value <= 4:
        return 4
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def hourly_svg(
    series: Sequence[dict[str, Any]],
    *,
    width: int = 720,
    height: int = 170,
    label: str = "Executions per hour",
) -> SafeString:
    """Stacked bars of executions per hour by outcome (stats.stats_hourly())."""
    left, right, top, bottom = 30, 6, 8, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(hour[name] for name in OUTCOMES) for hour in series]
    y_max = _nice_max(max(totals, default=0))
    slot = plot_w / max(len(series), 1)
    bar = max(slot * 0.72, 1.0)
    parts: list[str] = []
    for tick in range(5):
        value = y_max * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(
            f'<line class="k-grid" x1="{left}" x2="{width - right}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{value:g}</text>'
        )
    zone = timezone.get_current_timezone()
    for i, hour in enumerate(series):
        x = left + i * slot + (slot - bar) / 2
        base = top + plot_h
        local = hour["hour"].astimezone(zone)
        when = f"{local:%Y-%m-%d %H:%M}"  # a half-hour zone starts at :30
        for name in OUTCOMES:
            count = hour[name]
            if not count:
                continue
            h = plot_h * count / y_max
            base -= h
            parts.append(
                f'<rect class="k-fill-{name}" data-outcome="{name}" '
                f'x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}">'
                f"<title>{escape(when)}: {count} {escape(LABELS[name])}</title></rect>"
            )
        if i % 3 == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - 6}" '
                f'text-anchor="middle">{local:%H:%M}</text>'
            )
    parts.append(
        f'<line class="k-axis" x1="{left}" x2="{width - right}" '
        f'y1="{top + plot_h}" y2="{top + plot_h}"/>'
    )
    legend = "".join(
        f'<span><i class="k-swatch k-fill-{name}"></i>{escape(LABELS[name])}</span>'
        for name in OUTCOMES
    )
    # Only numbers, constants and escaped text went into the markup.
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="k-chart k-hourly" '
        'viewBox="0 0 {} {}" width="{}" height="{}" role="img" aria-label="{}">'
        "{}</svg>"
        '<p class="k-legend">{}</p>',
        width,
        height,
        width,
        height,
        label,
        mark_safe("".join(parts)),  # noqa: S308
        mark_safe(legend),  # noqa: S308
    )
