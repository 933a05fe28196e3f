"""Discrete data <-> continuous model space.

Image data are integers ``k`` in ``[0, levels)``. The model sees a continuous variable in
``data_range = (lo, hi)``. With uniform dequantization (Theis et al. 2016; Ho et al. 2019),

    y = (k + u) / levels,  u ~ U[0, 1)^D          (y in [0, 1), density on each bin's cell)
    x = lo + (hi - lo) * y                        (x in [lo, hi))

so a model density ``p(x)`` over the scaled variable defines a discrete distribution whose
probability of ``k`` is lower-bounded (Jensen) by ``E_u p(x) * (Delta x)^D`` with the cell width
``Delta x = (hi - lo) / levels``. Per dimension, in bits:

    bits/dim = -log p(x) / (D ln 2) - log2((hi - lo) / levels)
             = -log p(x) / (D ln 2) + log2(levels) - log2(hi - lo).

For ``levels=256, data_range=(-1, 1)`` this is ``+ 7``, for ``(0, 1)`` it is ``+ 8`` -- exactly the
offsets of the paper's code (``7 - inverse_scaler(-1)``), here derived rather than hard-coded.
A uniform density over the data range, ``p(x) = (hi - lo)^-D``, gives exactly ``log2(levels)``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["bits_per_dim_from_logp", "check_integer_data", "dequantize", "quantize"]


def _check_range(data_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(data_range[0]), float(data_range[1])
    if not hi > lo:
        raise ValueError(f"data_range must satisfy lo < hi, got {data_range!r}")
    return lo, hi


def check_integer_data(x_int: torch.Tensor, levels: int) -> None:
    """Raise a clear ``ValueError`` unless ``x_int`` holds integers in ``[0, levels)``."""
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    if x_int.is_floating_point():
        if not torch.isfinite(x_int).all():
            raise ValueError("integer data contains NaN or inf; expected integers in [0, levels)")
        if not torch.equal(x_int, x_int.round()):
            raise ValueError(
                "expected integer-valued data in [0, levels) (e.g. uint8 pixels), got non-integer values; "
                "pass the raw quantized data, not data already scaled to the model's range"
            )
    lo, hi = int(x_int.min()), int(x_int.max())
    if lo < 0 or hi >= levels:
        raise ValueError(f"integer data must lie in [0, {levels}) but spans [{lo}, {hi}]; check `levels`")


def dequantize(
    x_int: torch.Tensor,
    levels: int,
    data_range: tuple[float, float] = (-1.0, 1.0),
    dequantization: str = "uniform",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    u: torch.Tensor | None = None,
) -> torch.Tensor:
    """Map integers ``k`` in ``[0, levels)`` to the continuous model space.

    ``dequantization="uniform"``: ``x = lo + (hi - lo) (k + u) / levels`` with ``u ~ U[0, 1)``.
    ``dequantization="none"``: bin centres, ``u = 1/2`` (deterministic; use for display, not for
    likelihoods). A given ``u`` (shaped like ``x_int``, in ``[0, 1)``) replaces the uniform draw.
    """
    lo, hi = _check_range(data_range)
    k = x_int.to(dtype)
    if dequantization == "uniform":
        if u is None:
            u = torch.rand(k.shape, generator=generator, dtype=dtype, device=k.device)
    elif dequantization == "none":
        u = torch.full_like(k, 0.5)
    else:
        raise ValueError(f"unknown dequantization {dequantization!r}; valid: 'uniform', 'none'")
    return lo + (hi - lo) * (k + u) / levels


def quantize(x: torch.Tensor, levels: int, data_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Inverse of :func:`dequantize`: the bin index ``floor(levels (x - lo) / (hi - lo))``, clipped to
    ``[0, levels)``, as int64 (``uint8`` conversion is the caller's choice)."""
    lo, hi = _check_range(data_range)
    k = torch.floor(levels * (x - lo) / (hi - lo))
    return k.clamp_(0, levels - 1).to(torch.int64)


def bits_per_dim_from_logp(
    logp: torch.Tensor, num_dims: int, levels: int, data_range: tuple[float, float] = (-1.0, 1.0)
) -> torch.Tensor:
    """Bits per dimension of discrete data from the log-density ``logp`` (nats) of its dequantized,
    scaled version: ``-logp / (D ln 2) + log2(levels) - log2(hi - lo)`` (see the module docstring)."""
    lo, hi = _check_range(data_range)
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}")
    return -logp / (num_dims * math.log(2.0)) + math.log2(levels) - math.log2(hi - lo)
