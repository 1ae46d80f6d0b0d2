"""Small inline SVG charts for the HTML report: a histogram with percentile markers, horizontal bars, and a
series of values with their noise bands. Plain SVG text, no script and nothing fetched; every label escaped.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

WIDTH, HEIGHT = 720, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 40
_MARKER_COLOURS = ("#b35806", "#7b3294", "#c51b7d")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _frame(body: list[str], title: str, height: int = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" class="chart"><title>{escape(title)}</title>{"".join(body)}</svg>'
    )


def _ticks(lo: float, hi: float, n: int = 5) -> np.ndarray:
    return np.linspace(lo, hi, n) if hi > lo else np.array([lo])


def histogram(values: Sequence[float], *, title: str, unit: str, markers: dict[str, float]) -> str:
    """Counts of `values` in up to 40 bins, with a labelled vertical line per marker (e.g. p50, p99).

    Latencies have long tails (one slow step among hundreds fast ones): when the largest value is more than
    20 times the smallest the axis is logarithmic and the bins equally wide on it, so both ends stay visible.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return _frame(
            [f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no samples</text>'], title
        )
    bins = int(min(40, max(5, np.sqrt(x.size) * 2)))
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        lo, hi = lo * 0.95, hi * 1.05 + 1e-12
    log = lo > 0 and hi / lo > 20
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(x, bins=edges)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    top = max(int(counts.max()), 1)
    to_axis = np.log10 if log else float

    def sx(v: float) -> float:
        return _LEFT + (to_axis(v) - to_axis(lo)) / (to_axis(hi) - to_axis(lo)) * plot_w

    def sy(c: float) -> float:
        return _TOP + plot_h - c / top * plot_h

    body = [_axes(plot_w, plot_h)]
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        if c:
            body.append(
                f'<rect class="bar" x="{sx(a):.1f}" y="{sy(c):.1f}" width="{max(sx(b) - sx(a) - 1, 1):.1f}" '
                f'height="{sy(0) - sy(c):.1f}"><title>{_fmt(a)}-{_fmt(b)} {escape(unit)}: {c}</title></rect>'
            )
    for v in np.geomspace(lo, hi, 5) if log else _ticks(lo, hi):
        body.append(
            f'<text x="{sx(v):.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="middle">{_fmt(v)}</text>'
        )
    body.append(f'<text x="{_LEFT - 8}" y="{_TOP + 10}" text-anchor="end">{top}</text>')
    body.append(f'<text x="{_LEFT - 8}" y="{sy(0):.1f}" text-anchor="end">0</text>')
    scale = ", log scale" if log else ""
    body.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{escape(unit)}{scale} (count per bin)</text>"
    )
    for i, (name, v) in enumerate(markers.items()):
        if lo <= v <= hi:
            colour = _MARKER_COLOURS[i % len(_MARKER_COLOURS)]
            right = sx(v) > _LEFT + plot_w * 0.8  # label on the left of lines near the right edge
            tx, anchor = (sx(v) - 3, "end") if right else (sx(v) + 3, "start")
            body.append(
                f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{_TOP}" y2="{sy(0):.1f}" stroke="{colour}" '
                f'stroke-dasharray="4 3"/><text x="{tx:.1f}" y="{_TOP + 12 + 14 * i}" fill="{colour}" '
                f'text-anchor="{anchor}">{escape(name)} {_fmt(v)}</text>'
            )
    return _frame(body, title)


def bars(items: Sequence[tuple[str, float]], *, title: str, unit: str) -> str:
    """One horizontal bar per (label, value), scaled to the largest."""
    row = 22
    height = _TOP + row * max(len(items), 1) + 24
    label_w = 150
    plot_w = WIDTH - label_w - _RIGHT - 90
    top = max((v for _, v in items), default=0.0) or 1.0
    body = []
    for i, (label, v) in enumerate(items):
        y = _TOP + i * row
        w = max(v / top * plot_w, 1.0)
        body.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}">'
            f"<title>{escape(label)}: {_fmt(v)} {escape(unit)}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{_fmt(v)} {escape(unit)}</text>'
        )
    return _frame(body, title, height)


@dataclass(frozen=True)
class Point:
    """One receipt of a series: label (date, commit), value, noise band, and whether it is the one shown."""

    label: str
    value: float
    low: float
    high: float
    current: bool = False


def series(points: Sequence[Point], *, title: str, unit: str) -> str:
    """Values in order with their bands as error bars; the current receipt drawn apart."""
    if not points:
        return _frame(
            [f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no history</text>'], title
        )
    lo = min(min(p.low, p.value) for p in points)
    hi = max(max(p.high, p.value) for p in points)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    step = plot_w / max(len(points), 1)

    def sx(i: int) -> float:
        return _LEFT + step * (i + 0.5)

    def sy(v: float) -> float:
        return _TOP + plot_h - (v - lo) / (hi - lo) * plot_h

    body = [_axes(plot_w, plot_h)]
    for v in _ticks(lo, hi):
        body.append(f'<text x="{_LEFT - 8}" y="{sy(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(i):.1f},{sy(p.value):.1f}" for i, p in enumerate(points))
    body.append(f'<path d="{path}" class="line"/>')
    for i, p in enumerate(points):
        cls = "point current" if p.current else "point"
        body.append(
            f'<line x1="{sx(i):.1f}" x2="{sx(i):.1f}" y1="{sy(p.low):.1f}" y2="{sy(p.high):.1f}" '
            'class="band"/>'
            f'<circle cx="{sx(i):.1f}" cy="{sy(p.value):.1f}" r="{6 if p.current else 4}" class="{cls}">'
            f"<title>{escape(p.label)}: {_fmt(p.value)} {escape(unit)} (band {_fmt(p.low)}-{_fmt(p.high)})"
            "</title></circle>"
        )
    every = max(1, len(points) // 8)
    for i, p in enumerate(points):
        if i % every == 0 or p.current:
            body.append(
                f'<text x="{sx(i):.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="middle">'
                f"{escape(p.label[:16])}</text>"
            )
    return _frame(body, title)


def _axes(plot_w: float, plot_h: float) -> str:
    return (
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}" class="axis"/>'
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" class="axis"/>'
    )
