"""Line charts as PNG with Pillow alone (no plotting library is a dependency): quality versus cost curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["save_line_plot"]

_COLORS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:  # positions in log10 units: decades, and 2x / 5x when fewer than two decades show
        marks = [k + math.log10(m) for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
        marks = [t for t in marks if lo - 1e-9 <= t <= hi + 1e-9]
        decades = [t for t in marks if abs(t - round(t)) < 1e-9]
        return decades if len(decades) >= 2 else marks
    span = hi - lo or 1.0
    step = 10 ** math.floor(math.log10(span / 5))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= 6:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def save_line_plot(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    size: tuple[int, int] = (900, 600),
) -> Path:
    """Draw each named series of ``(x, y)`` points (sorted by x, markers and lines) with a legend; points with
    non-finite coordinates are skipped. ``logx``: logarithmic x axis (x > 0). Returns the path."""
    pts = {
        k: sorted(
            (float(x), float(y))
            for x, y in v
            if math.isfinite(x) and math.isfinite(y) and (x > 0 or not logx)
        )
        for k, v in series.items()
    }
    pts = {k: v for k, v in pts.items() if v}
    if not pts:
        raise ValueError("nothing to plot: no finite points")
    fx = (lambda x: math.log10(x)) if logx else (lambda x: x)
    xs = [fx(x) for v in pts.values() for x, _ in v]
    ys = [y for v in pts.values() for _, y in v]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    xpad = 0.04 * (x1 - x0)
    x0, x1 = x0 - xpad, x1 + xpad
    pad = 0.05 * ((y1 - y0) or abs(y1) or 1.0)
    y0, y1 = y0 - pad, y1 + pad
    w, h = size
    left, right, top, bottom = 80, 230, 40, 60
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (fx(x) - x0) / (x1 - x0) * (w - left - right),
            h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom),
        )

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for t in _ticks(x0, x1, logx):
        xt = 10**t if logx else t
        u, _ = px(xt, y0)
        if logx:
            xt = round(xt, 6)
        d.line([u, h - bottom, u, h - bottom + 5], fill="black")
        d.text((u - 12, h - bottom + 8), f"{xt:g}", fill="black", font=font)
    for t in _ticks(y0, y1, False):
        _, v = px(10**x0 if logx else x0, t)
        d.line([left - 5, v, left, v], fill="black")
        d.line([left, v, w - right, v], fill=(230, 230, 230))
        d.text((8, v - 6), f"{t:g}", fill="black", font=font)
    d.text(((left + w - right) / 2 - 40, h - 25), xlabel, fill="black", font=font)
    d.text((8, 12), ylabel, fill="black", font=font)
    if title:
        d.text((left + 150, 12), title, fill="black", font=font)
    for i, (name, v) in enumerate(pts.items()):
        color = _COLORS[i % len(_COLORS)]
        coords = [px(x, y) for x, y in v]
        if len(coords) > 1:
            d.line(coords, fill=color, width=2)
        for u, q in coords:
            d.ellipse([u - 4, q - 4, u + 4, q + 4], fill=color)
        ly = top + 10 + 18 * i
        d.line([w - right + 15, ly + 6, w - right + 40, ly + 6], fill=color, width=3)
        d.text((w - right + 46, ly), name, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
