"""Sample-based distances between two point clouds (plain torch): sliced Wasserstein-2 and MMD."""

from __future__ import annotations

import torch

__all__ = ["sliced_wasserstein", "mmd_rbf"]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = 500,
                       generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-2 distance ``sqrt(E_theta W_2^2(theta^T x, theta^T y))`` over random unit
    directions ``theta``; each 1-D ``W_2`` is computed exactly from sorted projections. ``x`` and
    ``y`` must hold the same number of points."""
    x, y = _flat(x), _flat(y)
    if x.shape != y.shape:
        raise ValueError(f"point clouds must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    theta = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.3, 1.0, 3.0)) -> float:
    """Unbiased squared maximum mean discrepancy with a sum of Gaussian kernels
    ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))``."""
    x, y = _flat(x), _flat(y)

    def kernel(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())
