"""Benchmark figures with matplotlib: readable labels, the seed-set spread as error bars."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _pixels(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_error_bars_are_drawn(tmp_path):
    from scoresde.evaluation.plot import save_line_plot

    points = {
        "vp SDE, em solver": [(101, 9.3, 1.2), (1001, 12.4, 0.8)],
        "ve SDE, pc solver": [(201, 15.0, 2.0)],
    }
    with_err = save_line_plot(points, tmp_path / "err.png", xlabel="NFE", ylabel="FID", logx=True)
    no_err = {k: [p[:2] for p in v] for k, v in points.items()}
    without = save_line_plot(no_err, tmp_path / "plain.png", xlabel="NFE", ylabel="FID", logx=True)
    a, b = _pixels(with_err), _pixels(without)
    assert a.shape == b.shape == (600, 900, 3)
    # the error bars add coloured pixels above and below the markers, nothing else changes
    coloured = lambda img: (img.max(axis=2) - img.min(axis=2)) > 60  # noqa: E731
    assert coloured(a).sum() > coloured(b).sum() + 50


def test_quality_vs_cost_report_writes_table_and_figure(tmp_path):
    import quality_vs_cost

    rows = [
        {"sde": sde, "solver": "em", "budget": f"{n} steps", "nfe": n + 1, "seconds": 1.0, "fid": fid,
         "fid_std": 0.9, "kid": 0.01, "kid_std": 0.002, "confidence": 0.97, "memorization": 0.02, "bpd": 1.9}
        for sde, n, fid in (("vp", 100, 9.3), ("vp", 1000, 12.4), ("ve", 100, 17.5))
    ]
    quality_vs_cost.report(rows, "test rows", tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "| vp | em | 100 steps | 101 | 1.0 | 9.30 +- 0.90 | 0.0100 +- 0.0020 |" in table
    assert _pixels(tmp_path / "quality_vs_nfe.png").shape == (600, 900, 3)


def test_labelled_grid_keeps_the_images_and_adds_labels(tmp_path):
    """A 2 x 3 grid redrawn with labels: the figure is larger than the grid, the labels (dark text) sit
    left of and below the images, and a column group adds a red separator."""
    import torch

    from scoresde.evaluation.plot import save_labelled_grid
    from scoresde.train.images import save_samples_png

    x = torch.linspace(-1, 1, 6 * 64).reshape(6, 1, 8, 8)
    grid = save_samples_png(x, tmp_path / "grid.png", levels=17, data_range=(-1.0, 1.0), nrow=3)
    plain = save_labelled_grid(grid, tmp_path / "plain.png", ["row a", "row b"], ["c1", "c2", "c3"],
                               title="a grid")
    grouped = save_labelled_grid(grid, tmp_path / "grouped.png", ["row a", "row b"], ["c1", "c2", "c3"],
                                 title="a grid", col_groups=[("first", 1), ("rest", 2)])
    g, p, q = _pixels(grid), _pixels(plain), _pixels(grouped)
    assert p.shape[0] > g.shape[0] and p.shape[1] > g.shape[1]
    left = p[:, : p.shape[1] // 5]
    assert (left.min(axis=2) < 100).sum() > 20  # the row labels
    red = lambda img: ((img[..., 0] > 180) & (img[..., 1] < 80) & (img[..., 2] < 80)).sum()  # noqa: E731
    assert red(p) == 0 and red(q) > 10
