"""Weight initialisation used by the DDPM / Score-SDE networks.

The reference networks initialise every convolution and dense kernel with a "variance scaling"
rule (fan-average, uniform), as in DDPM's TensorFlow code, and every bias with zeros. A scale of 0
is replaced by 1e-10: the kernel is then (almost) zero, which makes a residual branch start as the
identity.
"""

from __future__ import annotations

import math

import torch


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """Fan-in and fan-out of a kernel laid out as (out, in, *receptive field).

    The same convention is applied to the reference's `NIN` matrices, which are stored (in, out):
    with the fan-average mode the two are interchangeable, so the result is the same.
    """
    if len(shape) < 2:
        raise ValueError(f"variance scaling needs a kernel with at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


@torch.no_grad()
def variance_scaling_(tensor: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Fill `tensor` in place with U(-a, a), a = sqrt(3 * scale / fan_avg), fan_avg = (fan_in + fan_out) / 2.

    This is the DDPM "default init" (variance `scale / fan_avg`). `scale == 0` means 1e-10.
    """
    scale = 1e-10 if scale == 0 else float(scale)
    fan_in, fan_out = _fans(tuple(tensor.shape))
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
    return tensor.uniform_(-bound, bound)


@torch.no_grad()
def ddpm_init_(module: torch.nn.Module, scale: float = 1.0) -> torch.nn.Module:
    """Variance-scaling init of `module.weight`, zero init of `module.bias` (if any); returns the module."""
    variance_scaling_(module.weight, scale)
    if getattr(module, "bias", None) is not None:
        module.bias.zero_()
    return module
