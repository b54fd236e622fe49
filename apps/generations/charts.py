"""Charts drawn on the server as SVG (the cost report in admin): no scripts, no CDN, readable at a glance.

Two shapes, enough for the report: horizontal bars with a value label (one per route and tier) and vertical
bars by day. Labels are escaped; the SVG is inlined in the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

FONT = "font-family='system-ui, -apple-system, Segoe UI, Roboto, sans-serif'"
BAR = "#417690"  # Django admin's blue
GRID = "#ddd"


def horizontal_bars(title: str, bars: Sequence[tuple[str, float, str]], *, width: int = 760) -> str:
    """`bars`: (label, value, value text); one row each, longest bar = the largest value."""
    row, top, label_w, text_w = 30, 40, 190, 230
    height = top + row * max(len(bars), 1) + 10
    span = width - label_w - text_w
    peak = max((value for _, value, _ in bars), default=0) or 1
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
        f"aria-label='{escape(title)}' {FONT}>",
        f"<text x='0' y='20' font-size='15' font-weight='600'>{escape(title)}</text>",
    ]
    if not bars:
        parts.append(f"<text x='0' y='{top + 16}' font-size='13' fill='#666'>No data in this period.</text>")
    for i, (label, value, text) in enumerate(bars):
        y = top + i * row
        w = max(span * value / peak, 1 if value > 0 else 0)
        parts += [
            f"<text x='{label_w - 8}' y='{y + 17}' font-size='13' text-anchor='end'>{escape(label)}</text>",
            f"<rect x='{label_w}' y='{y + 4}' width='{w:.1f}' height='{row - 10}' fill='{BAR}' rx='2'/>",
            f"<text x='{label_w + w + 6:.1f}' y='{y + 17}' font-size='13'>{escape(text)}</text>",
        ]
    parts.append("</svg>")
    return "".join(parts)


def daily_bars(title: str, days: Sequence[tuple[str, float]], *, unit: str, width: int = 760) -> str:
    """`days`: (day label, value) in order; a bar per day with its value above, a baseline and a peak line."""
    height, top, bottom, left = 240, 40, 40, 50
    plot_h = height - top - bottom
    peak = max((value for _, value in days), default=0) or 1
    slot = (width - left - 10) / max(len(days), 1)
    bar_w = max(min(slot * 0.7, 48), 2)
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
        f"aria-label='{escape(title)}' {FONT}>",
        f"<text x='0' y='20' font-size='15' font-weight='600'>{escape(title)}</text>",
        f"<line x1='{left}' y1='{top}' x2='{width - 10}' y2='{top}' stroke='{GRID}'/>",
        f"<text x='{left - 6}' y='{top + 4}' font-size='11' text-anchor='end'>{escape(_short(peak))}</text>",
        f"<line x1='{left}' y1='{top + plot_h}' x2='{width - 10}' y2='{top + plot_h}' stroke='#999'/>",
        f"<text x='{left - 6}' y='{top + plot_h + 4}' font-size='11' text-anchor='end'>0</text>",
        f"<text x='{width - 10}' y='20' font-size='12' text-anchor='end' fill='#666'>{escape(unit)}</text>",
    ]
    if not days:
        parts.append(
            f"<text x='{left + 10}' y='{top + 40}' font-size='13' fill='#666'>No data in this period.</text>"
        )
    label_every = max(1, round(len(days) / 12))  # about a dozen day labels at most
    for i, (day, value) in enumerate(days):
        h = plot_h * value / peak
        x = left + i * slot + (slot - bar_w) / 2
        parts.append(
            f"<rect x='{x:.1f}' y='{top + plot_h - h:.1f}' width='{bar_w:.1f}' height='{h:.1f}' "
            f"fill='{BAR}'/>"
        )
        if len(days) <= 14:
            parts.append(
                f"<text x='{x + bar_w / 2:.1f}' y='{top + plot_h - h - 4:.1f}' font-size='11' "
                f"text-anchor='middle'>{escape(_short(value))}</text>"
            )
        if i % label_every == 0:
            parts.append(
                f"<text x='{x + bar_w / 2:.1f}' y='{top + plot_h + 16}' font-size='11' "
                f"text-anchor='middle'>{escape(day)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _short(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
