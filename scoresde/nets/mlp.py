"""Residual MLP score network for vector data (2-D toy distributions and other flat data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import batch_labels, make_embedding


class ResidualMLPBlock(nn.Module):
    """Pre-activation residual block: h + Linear(dropout(SiLU(h)))."""

    def __init__(self, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(self.dropout(F.silu(h)))


class MLP(nn.Module):
    """Noise-conditional residual MLP: x (B, dim), c (B,) -> (B, dim).

    h = Linear(dim, hidden)(x) + Linear(embed_dim, hidden)(embed(c)), where `embed` gives
    `embed_dim` sinusoidal ('positional') or Gaussian Fourier ('fourier', frequencies ~
    N(0, fourier_scale^2)) features of c; then `depth` residual SiLU blocks; output
    Linear(hidden, dim)(SiLU(h)). One hidden-width matrix per block keeps it cheap for 2-D toys.
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, embed_dim: int = 128,
                 embedding: str = "positional", fourier_scale: float = 16.0, max_positions: float = 10000.0,
                 dropout: float = 0.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.dim, self.hidden, self.depth = dim, hidden, depth
        self.embed = make_embedding(embedding, embed_dim, fourier_scale, max_positions)
        self.embed_proj = nn.Linear(embed_dim, hidden)
        self.input = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualMLPBlock(hidden, dropout) for _ in range(depth))
        self.output = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Network output for x (B, dim) at noise labels c (B,)."""
        c = batch_labels(c, x)
        h = self.input(x) + self.embed_proj(self.embed(c).to(x.dtype))
        for block in self.blocks:
            h = block(h)
        return self.output(F.silu(h))
