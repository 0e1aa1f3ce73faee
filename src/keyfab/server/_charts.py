"""Tiny server-side SVG bar charts: no chart script, nothing to load, readable on a phone.

A chart is a ``viewBox``-scaled SVG (the stylesheet makes it as wide as its
column), one ``rect`` per value with a ``title`` a pointer or screen reader
shows, and a few axis labels. Sixty lines do what the dashboard needs; a
charting library would bring a script or a dependency for every page.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 600, 170
LEFT, BOTTOM, TOP = 44, 22, 10


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def bar_chart(
    points: Sequence[tuple[str, float]], *, title: str, unit: str = "", top: float | None = None
) -> Markup:
    """Bars for (label, value) pairs, scaled to ``top`` (default: the largest value)."""
    if not points:
        return Markup('<p class="empty">{}</p>').format(f"{title}: nothing yet")
    peak = top if top is not None else max(v for _, v in points) or 1.0
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    step = plot_w / len(points)
    bar = max(step * 0.8, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">'
        f"{_number(peak)}{escape(unit)}</text>",
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    every = max(len(points) // 6, 1)  # at most about seven labels under the axis
    for i, (label, value) in enumerate(points):
        h = plot_h * min(value / peak, 1.0) if peak else 0.0
        x = LEFT + i * step + (step - bar) / 2
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}: {_number(value)}{escape(unit)}'
            "</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{x + bar / 2:.1f}" y="{HEIGHT - 6}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every label and title is escaped above
