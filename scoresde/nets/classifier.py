"""A noise-conditional image classifier ``p_t(y | x_t)`` for classifier guidance (Song et al. 2021,
section 5): the encoder half of the U-Net (the same residual blocks, conditioned on the noise label
``c``), global average pooling and a linear head to ``num_classes`` logits. Like the score networks it
knows nothing of SDEs: ``forward(x, c)`` with ``c = sde.noise_label(t)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import batch_labels, make_embedding
from .layers import Downsample, ResnetBlockDDPM, conv3x3, dense, group_norm

__all__ = ["NoiseConditionalClassifier"]


class NoiseConditionalClassifier(nn.Module):
    """x (B, in_channels, image_size, image_size), c (B,) -> logits (B, num_classes).

    Levels of ``num_res_blocks`` residual blocks with ``ch * ch_mult[i]`` channels at resolution
    ``image_size / 2^i`` (average-pool downsampling between levels), a middle residual block, then
    GroupNorm, SiLU, global average pooling and a linear layer. The noise label is embedded
    ('positional' or 'fourier', width ch) and mapped by Linear-SiLU-Linear to 4 ch, as in the U-Net.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, ch: int = 32,
                 ch_mult: Sequence[int] = (1, 2), num_res_blocks: int = 1, image_size: int = 8,
                 dropout: float = 0.0, embedding: str = "positional", fourier_scale: float = 16.0,
                 max_positions: float = 10000.0):
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"a classifier needs num_classes >= 2, got {num_classes}")
        ch_mult = tuple(int(m) for m in ch_mult)
        if image_size % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(ch_mult) - 1}")
        self.num_classes, self.in_channels, self.image_size = int(num_classes), in_channels, image_size
        temb_dim = 4 * ch
        self.embed = make_embedding(embedding, ch, fourier_scale, max_positions)
        self.embed_mlp = nn.Sequential(dense(ch, temb_dim), nn.SiLU(), dense(temb_dim, temb_dim))
        self.conv_in = conv3x3(in_channels, ch)
        self.blocks = nn.ModuleList()
        c = ch
        for i, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.blocks.append(ResnetBlockDDPM(c, ch * mult, temb_dim=temb_dim, dropout=dropout))
                c = ch * mult
            if i < len(ch_mult) - 1:
                self.blocks.append(Downsample(c))
        self.blocks.append(ResnetBlockDDPM(c, c, temb_dim=temb_dim, dropout=dropout))
        self.norm_out = group_norm(c)
        self.head = dense(c, self.num_classes)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Logits of ``p_t(y | x)`` for images x (B, C, H, W) at noise labels c (B,)."""
        emb = F.silu(self.embed_mlp(self.embed(batch_labels(c, x)).to(x.dtype)))
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb) if isinstance(block, ResnetBlockDDPM) else block(h)
        return self.head(F.silu(self.norm_out(h)).mean(dim=(2, 3)))
