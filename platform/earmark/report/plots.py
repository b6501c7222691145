"""Small inline-SVG charts: horizontal bars, histograms and time series.

Written by hand so the report needs no plotting library and no network: each function returns one
`<svg>` element (scalable through its viewBox) that the HTML page embeds as is.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

WIDTH = 560  # viewBox width, px; the page scales it to its column
PALETTE = ("#3b6fb6", "#d9822b", "#3a9d5d", "#c0392b", "#8e5ea2", "#7f8c8d")
FONT = 'font-family="Helvetica, Arial, sans-serif" font-size="11" fill="#333"'
LABEL_CHARS = 28  # bar labels longer than this are cut (full text in the tooltip)


def nice_ticks(lo: float, hi: float, count: int = 5, cover: bool = False) -> list[float]:
    """About `count` round ticks (steps of 1, 2 or 5 × 10^k) inside [lo, hi].

    With `cover`, the ticks extend outward to round values so that they enclose [lo, hi]
    (used for the y axis, whose top must not cut the tallest bar).
    """
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    eps = step * 1e-9
    start = math.floor((lo + eps) / step) if cover else math.ceil((lo - eps) / step)
    stop = math.ceil((hi - eps) / step) if cover else math.floor((hi + eps) / step)
    return [round(k * step, 12) for k in range(start, stop + 1)]


def fmt_number(v: float) -> str:
    """Compact tick/value label: 1234 → 1.2k, 0.25 → 0.25."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.3g}"


def fmt_seconds(s: float) -> str:
    """Duration label: 0.5 s, 45 s, 12 min, 3.5 h."""
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


# Round durations used as ticks on a logarithmic axis, seconds.
LOG_DURATION_TICKS = (0.01, 0.1, 1, 10, 60, 600, 3600, 36000, 360000)


def duration_ticks(lo: float, hi: float, log: bool) -> list[tuple[float, str]]:
    """(value in seconds, label) ticks in round seconds, minutes or hours."""
    if log:
        return [(t, fmt_seconds(t)) for t in LOG_DURATION_TICKS if lo <= t <= hi]
    unit = 3600.0 if hi >= 3 * 3600 else 60.0 if hi >= 180 else 1.0
    return [(t * unit, fmt_seconds(t * unit)) for t in nice_ticks(lo / unit, hi / unit, 6)]


def _svg(element_id: str, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg id="{escape(element_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def empty_chart(element_id: str, title: str, message: str) -> str:
    """A placeholder with the same id, so the page layout and ids stay stable."""
    body = [
        f'<rect x="0.5" y="0.5" width="{WIDTH - 1}" height="59" fill="#fafafa" stroke="#ddd"/>',
        f'<text x="{WIDTH / 2}" y="34" text-anchor="middle" {FONT}>{escape(message)}</text>',
    ]
    return _svg(element_id, 60, title, body)


def bar_chart(
    items: Sequence[tuple[str, float]],
    element_id: str,
    title: str,
    color: str = PALETTE[0],
    colors: dict[str, str] | None = None,
) -> str:
    """Horizontal bars, one per (label, value), largest first as given."""
    if not items:
        return empty_chart(element_id, title, "no data")
    left, right, top, bar_h, gap = 180, 60, 8, 18, 6
    height = top + len(items) * (bar_h + gap) + 4
    vmax = max(v for _, v in items) or 1.0
    span = WIDTH - left - right
    body = []
    for i, (label, value) in enumerate(items):
        y = top + i * (bar_h + gap)
        w = max(span * value / vmax, 1.0 if value else 0.0)
        fill = (colors or {}).get(label, color)
        short = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
        body.append(
            f'<g class="bar"><title>{escape(label)}: {fmt_number(value)}</title>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{fill}"/>'
            f'<text x="{left - 6}" y="{y + bar_h * 0.7:.1f}" text-anchor="end" {FONT}>'
            f"{escape(short)}</text>"
            f'<text x="{left + w + 4:.1f}" y="{y + bar_h * 0.7:.1f}" {FONT}>'
            f"{fmt_number(value)}</text></g>"
        )
    return _svg(element_id, height, title, body)


class _Frame:
    """Plot area geometry and the axes around it."""

    left, right, top, bottom, height = 56, 16, 12, 44, 260

    def __init__(self, x_lo: float, x_hi: float, y_hi: float, log_x: bool = False):
        self.log_x = log_x
        self.x_lo, self.x_hi = (math.log10(x_lo), math.log10(x_hi)) if log_x else (x_lo, x_hi)
        if self.x_hi <= self.x_lo:
            self.x_hi = self.x_lo + 1.0
        self.y_ticks = nice_ticks(0.0, y_hi if y_hi > 0 else 1.0, cover=True)
        self.y_hi = self.y_ticks[-1] or 1.0
        self.w = WIDTH - self.left - self.right
        self.h = self.height - self.top - self.bottom

    def x(self, v: float) -> float:
        v = math.log10(max(v, 1e-12)) if self.log_x else v
        return self.left + self.w * (v - self.x_lo) / (self.x_hi - self.x_lo)

    def y(self, v: float) -> float:
        return self.top + self.h * (1 - v / self.y_hi)

    def axes(self, x_ticks: list[tuple[float, str]], x_label: str, y_label: str) -> list[str]:
        out = []
        for t in self.y_ticks:
            y = self.y(t)
            out.append(
                f'<line x1="{self.left}" x2="{self.left + self.w}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="#e6e6e6"/><text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                f"{FONT}>{fmt_number(t)}</text>"
            )
        base = self.top + self.h
        out.append(
            f'<line x1="{self.left}" x2="{self.left + self.w}" y1="{base}" y2="{base}" '
            'stroke="#888"/>'
        )
        for v, label in x_ticks:
            x = self.x(v)
            if self.left - 1 <= x <= self.left + self.w + 1:
                out.append(
                    f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#888"/>'
                    f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle" {FONT}>'
                    f"{escape(label)}</text>"
                )
        out.append(
            f'<text x="{self.left + self.w / 2}" y="{self.height - 6}" text-anchor="middle" '
            f"{FONT}>{escape(x_label)}</text>"
            f'<text transform="translate(12 {self.top + self.h / 2}) rotate(-90)" '
            f'text-anchor="middle" {FONT}>{escape(y_label)}</text>'
        )
        return out


def histogram(
    edges: Sequence[float],
    counts: Sequence[int],
    element_id: str,
    title: str,
    x_label: str,
    log_x: bool = False,
    color: str = PALETTE[0],
) -> str:
    """Vertical bars over bins `[edges[i], edges[i+1])`; x labels formatted as durations."""
    if not counts or sum(counts) == 0:
        return empty_chart(element_id, title, "no data")
    f = _Frame(edges[0], edges[-1], max(counts), log_x)
    body = f.axes(duration_ticks(edges[0], edges[-1], log_x), x_label, "files")
    for i, c in enumerate(counts):
        if not c:
            continue
        x0, x1 = f.x(edges[i]), f.x(edges[i + 1])
        y = f.y(c)
        body.append(
            f'<rect class="bin" x="{x0 + 0.5:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
            f'height="{f.top + f.h - y:.1f}" fill="{color}">'
            f"<title>{fmt_seconds(edges[i])}–{fmt_seconds(edges[i + 1])}: {c}</title></rect>"
        )
    return _svg(element_id, f.height, title, body)


def _time_label(t: float, span: float) -> str:
    when = dt.datetime.fromtimestamp(t, dt.UTC)
    if span >= 2 * 86400:
        return when.strftime("%m-%d %H:%M")
    return when.strftime("%H:%M:%S" if span < 600 else "%H:%M")


def time_series(
    times: Sequence[float],
    values: Sequence[float],
    element_id: str,
    title: str,
    y_label: str,
    color: str = PALETTE[2],
) -> str:
    """A line with shaded area over UTC epoch-second `times` (x labelled in UTC)."""
    if not times:
        return empty_chart(element_id, title, "no timestamps")
    t0, t1 = min(times), max(times)
    if t1 <= t0:
        t0, t1 = t0 - 0.5, t1 + 0.5
    f = _Frame(t0, t1, max(values) if values else 1.0)
    span = t1 - t0
    ticks = [(t0 + d, _time_label(t0 + d, span)) for d in nice_ticks(0.0, span, 5)]
    body = f.axes(ticks, "time (UTC)", y_label)
    pts = [(f.x(t), f.y(v)) for t, v in zip(times, values, strict=True)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    base = f.top + f.h
    area = f"{pts[0][0]:.1f},{base} {line} {pts[-1][0]:.1f},{base}"
    body.append(f'<polygon points="{area}" fill="{color}" fill-opacity="0.18"/>')
    body.append(f'<polyline class="series" points="{line}" fill="none" stroke="{color}" '
                'stroke-width="2"/>')  # fmt: skip
    if len(pts) <= 80:
        for (x, y), v in zip(pts, values, strict=True):
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}">'
                f"<title>{fmt_number(v)}</title></circle>"
            )
    return _svg(element_id, f.height, title, body)
