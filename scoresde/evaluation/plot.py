"""Figures as PNG with matplotlib (the ``plot`` extra: ``pip install 'scoresde[plot]'``): quality versus
cost curves, with the spread over seed sets as error bars, and image grids with row and column labels."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["save_labelled_grid", "save_line_plot"]


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


def save_labelled_grid(png: str | Path, path: str | Path, rows: Sequence[str], cols: Sequence[str], *,
                       title: str = "", col_groups: Sequence[tuple[str, int]] = (), dpi: int = 100) -> Path:
    """Redraw ``png``, a grid of ``len(rows) x len(cols)`` images as :func:`scoresde.train.images.image_grid`
    draws it, with ``rows`` and ``cols`` as tick labels, optional column groups ``(label, number of
    columns)`` above the grid (separated by red lines) and ``title``. Returns the path."""
    try:
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from PIL import Image
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'scoresde[plot]'") from None
    img = np.asarray(Image.open(png).convert("L"))
    cell_h, cell_w = (img.shape[0] - 2) / len(rows), (img.shape[1] - 2) / len(cols)
    fig = Figure(figsize=(2 + img.shape[1] / dpi, 1.5 + img.shape[0] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(img, cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([1 + cell_w * (j + 0.5) for j in range(len(cols))], list(cols), fontsize=7, rotation=90)
    ax.set_yticks([1 + cell_h * (i + 0.5) for i in range(len(rows))], list(rows), fontsize=8)
    ax.tick_params(length=0)
    start = 0
    for label, n in col_groups:
        ax.annotate(label, xy=(1 + cell_w * (start + n / 2), 0), xytext=(0, 4), textcoords="offset points",
                    ha="center", va="bottom", fontsize=9)
        if start:
            ax.axvline(1 + cell_w * start - 1, color="red", lw=1)
        start += n
    if title:
        ax.set_title(title, pad=18 if col_groups else 6, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
