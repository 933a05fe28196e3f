"""Embeddings of the scalar noise label c (one per example) into feature vectors.

Two kinds, as in the Score-SDE paper:

* positional (sinusoidal, DDPM / Transformer style): c is read as a (possibly fractional) time
  step; DDPM++ embeds 999 t with it.
* Gaussian Fourier features: sin/cos of 2 pi c w for fixed random frequencies w ~ N(0, scale^2);
  NCSN++ embeds log sigma with it (scale 16).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def batch_labels(c: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Noise labels as a (B,) tensor on x's device: a scalar or 0-dim label is repeated for the batch."""
    c = torch.as_tensor(c, device=x.device)
    if c.ndim == 0:
        c = c.expand(x.shape[0])
    if c.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},) for this batch, got {tuple(c.shape)}")
    return c


def class_labels(y: torch.Tensor | int | None, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class labels as a (B,) int64 tensor on x's device, checked to lie in 0..num_classes (the last,
    ``num_classes``, is the null label; None means the null label for the whole batch)."""
    if y is None:
        y = num_classes
    y = batch_labels(y, x)
    if y.is_floating_point():
        raise ValueError(f"class labels must be integers, got {y.dtype}")
    if ((y < 0) | (y > num_classes)).any():
        raise ValueError(f"class labels must lie in 0..{num_classes - 1} (or {num_classes}, the null label), "
                         f"got {int(y[(y < 0) | (y > num_classes)][0])}")
    return y.long()


def sinusoidal_embedding(c: torch.Tensor, dim: int, max_positions: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of labels c (B,) into (B, dim).

    Frequencies f_j = max_positions^(-j / (dim/2 - 1)), j = 0 .. dim/2 - 1; the result is
    [sin(c f), cos(c f)], zero-padded by one column when `dim` is odd. The arithmetic follows the
    reference (`layers.get_timestep_embedding`) operation by operation, so that float32 results
    agree to the last bit even for labels near 1000.
    """
    if c.ndim != 1:
        raise ValueError(f"labels must have shape (B,), got {tuple(c.shape)}")
    half = dim // 2
    step = math.log(max_positions) / (half - 1)
    dtype = torch.promote_types(c.dtype, torch.float32)  # float32, or float64 for float64 labels
    freqs = torch.exp(torch.arange(half, dtype=dtype, device=c.device) * -step)
    args = c.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class SinusoidalEmbedding(nn.Module):
    """Module form of `sinusoidal_embedding` (no parameters): c (B,) -> (B, dim)."""

    def __init__(self, dim: int, max_positions: float = 10000.0):
        super().__init__()
        if dim < 4:
            raise ValueError(f"sinusoidal embedding needs dim >= 4, got {dim}")
        self.dim = dim
        self.max_positions = max_positions

    @property
    def out_dim(self) -> int:
        return self.dim

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(c, self.dim, self.max_positions)


class GaussianFourierProjection(nn.Module):
    """Gaussian Fourier features: c (B,) -> [sin(2 pi c W), cos(2 pi c W)] of shape (B, 2 * size).

    `W` (size,) is drawn once from N(0, scale^2) and never trained. It is kept as a parameter with
    `requires_grad=False`, as in the reference: it then appears in the state dict under the same key
    and in the parameter counts the paper's code reports, and optimisers/EMA that skip frozen
    parameters ignore it.
    """

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    @property
    def out_dim(self) -> int:
        return 2 * self.W.shape[0]

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        # Same operation order as the reference: ((c * W) * 2) * pi (see sinusoidal_embedding).
        proj = c[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def make_embedding(kind: str, dim: int, fourier_scale: float = 16.0,
                   max_positions: float = 10000.0) -> nn.Module:
    """Build the label embedding `kind` ("positional" or "fourier") with output width `dim`.

    For "fourier", `dim` must be even (it uses dim/2 frequencies).
    """
    kind = kind.lower()
    if kind == "positional":
        return SinusoidalEmbedding(dim, max_positions)
    if kind == "fourier":
        if dim % 2:
            raise ValueError(f"Fourier embedding needs an even width, got {dim}")
        return GaussianFourierProjection(dim // 2, fourier_scale)
    raise ValueError(f"unknown embedding {kind!r}; valid: 'positional', 'fourier'")
