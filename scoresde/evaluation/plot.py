"""Line charts as PNG with matplotlib (the ``plot`` extra: ``pip install 'scoresde[plot]'``): quality versus
cost curves, with the spread over seed sets as error bars."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["save_line_plot"]


def _finite_points(points: Sequence[Sequence[float]], logx: bool) -> list[tuple[float, float, float]]:
    """``(x, y)`` or ``(x, y, err)`` -> sorted ``(x, y, err)`` with finite x, y (err NaN/None -> 0)."""
    out = []
    for p in points:
        x, y = float(p[0]), float(p[1])
        err = float(p[2]) if len(p) > 2 and p[2] is not None else 0.0
        if math.isfinite(x) and math.isfinite(y) and (x > 0 or not logx):
            out.append((x, y, err if math.isfinite(err) else 0.0))
    return sorted(out)


def save_line_plot(
    series: Mapping[str, Sequence[Sequence[float]]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    size: tuple[int, int] = (900, 600),
    dpi: int = 100,
) -> Path:
    """Draw each named series of points ``(x, y)`` or ``(x, y, err)`` as markers joined by lines, with
    ``err`` (e.g. the standard deviation over seed sets) as a vertical error bar, and a legend beside the
    axes; points with non-finite coordinates are skipped. ``logx``: logarithmic x axis (x > 0).
    ``size``: pixels. Returns the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'scoresde[plot]'") from None
    pts = {name: _finite_points(v, logx) for name, v in series.items()}
    pts = {k: v for k, v in pts.items() if v}
    if not pts:
        raise ValueError("nothing to plot: no finite points")
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, v in pts.items():
        xs, ys, errs = zip(*v)
        ax.errorbar(xs, ys, yerr=errs if any(errs) else None, marker="o", markersize=4, capsize=3,
                    linewidth=1.5, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path
