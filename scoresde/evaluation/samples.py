"""Samples -> the integer form of the data, before any feature is computed.

Generated images are quantized exactly like the data: a model-space sample ``x`` in ``data_range`` becomes
the bin index :func:`scoresde.quantization.quantize` gives (the inverse of the dequantization the data
went through), stored as ``uint8``. Integer input is only checked.
"""

from __future__ import annotations

import torch

from scoresde.quantization import check_integer_data, quantize

__all__ = ["to_uint8"]


def to_uint8(
    samples: torch.Tensor, levels: int, data_range: tuple[float, float] = (-1.0, 1.0)
) -> torch.Tensor:
    """``uint8`` integers in ``[0, levels)`` from model-space float samples (quantized with
    :func:`~scoresde.quantization.quantize`) or from integer samples (checked, converted).

    Raises ``ValueError`` for NaN/inf samples (naming how many), for integers outside ``[0, levels)`` and
    for ``levels`` above 256.
    """
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
    if not 2 <= int(levels) <= 256:
        raise ValueError(f"levels must lie in [2, 256] to be stored as uint8, got {levels}")
    if samples.is_floating_point():
        finite = torch.isfinite(samples.reshape(len(samples), -1)).all(dim=1) if samples.dim() else None
        if finite is not None and not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"{bad} of {len(samples)} samples contain NaN or inf values; the sampler diverged. "
                "Drop or regenerate them (and report how many) before computing metrics"
            )
        return quantize(samples, int(levels), data_range).to(torch.uint8)
    check_integer_data(samples, int(levels))
    return samples.to(torch.uint8)
