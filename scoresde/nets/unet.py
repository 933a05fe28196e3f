"""Small noise-conditional U-Net for 8x8 to 32x32 images (default network for the 8x8 digits)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import batch_labels, class_labels, make_embedding
from .layers import AttnBlock, Downsample, ResnetBlockDDPM, Upsample, conv3x3, dense, group_norm


class _Level(nn.Module):
    """One resolution of the U-Net: residual blocks, optional attention after each, optional resampler."""

    def __init__(self, blocks: list[nn.Module], attn: list[nn.Module], resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn)
        self.resample = resample


class UNet(nn.Module):
    """DDPM-style U-Net: x (B, in_channels, image_size, image_size), c (B,) -> shaped like x.

    Levels have ch * ch_mult[i] channels at resolution image_size / 2^i, each with `num_res_blocks`
    residual blocks (GroupNorm, SiLU, 3x3 convs, per-channel shift from the noise embedding; dropout)
    on the way down and num_res_blocks + 1 on the way up (fed the matching encoder output by
    concatenation); self-attention after the blocks at the resolutions in `attn_resolutions`; a
    residual block, attention (`mid_attention`) and residual block in the middle. Resampling is
    average pooling / nearest neighbour, or a strided 3x3 conv / nearest + 3x3 conv with
    `resample_with_conv`.
    The label embedding ('positional' or 'fourier', width ch) goes through Linear-SiLU-Linear to 4 ch.
    The last conv of every residual branch and the output conv start near zero (`init_scale`).

    Class conditioning (`num_classes` > 0, for classifier-free guidance): a learned embedding of the
    label y in 0..num_classes, where y = num_classes (`null_label`) is "no class" (label dropout), is
    added to the noise embedding before its SiLU; `forward(x, c, y)`. With `num_classes=0` (default)
    the network, its outputs and its state-dict keys are those of the unconditional U-Net.
    """

    def __init__(self, in_channels: int = 1, ch: int = 32, ch_mult: Sequence[int] = (1, 2),
                 num_res_blocks: int = 1, attn_resolutions: Sequence[int] = (), image_size: int = 8,
                 dropout: float = 0.0, embedding: str = "positional", fourier_scale: float = 16.0,
                 max_positions: float = 10000.0, mid_attention: bool = True, resample_with_conv: bool = False,
                 skip_rescale: bool = True, init_scale: float = 0.0, num_classes: int = 0):
        super().__init__()
        if int(num_classes) < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        ch_mult = tuple(int(m) for m in ch_mult)
        attn_resolutions = tuple(int(r) for r in attn_resolutions)
        n_levels = len(ch_mult)
        if image_size % 2 ** (n_levels - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{n_levels - 1}")
        self.in_channels, self.image_size = in_channels, image_size
        temb_dim = 4 * ch
        self.embed = make_embedding(embedding, ch, fourier_scale, max_positions)
        self.embed_mlp = nn.Sequential(dense(ch, temb_dim), nn.SiLU(), dense(temb_dim, temb_dim))
        self.num_classes = int(num_classes)
        if self.num_classes:
            self.class_embed = nn.Embedding(self.num_classes + 1, temb_dim)  # last row: the null label

        def res(i: int, o: int) -> ResnetBlockDDPM:
            return ResnetBlockDDPM(i, o, temb_dim=temb_dim, act="swish", dropout=dropout,
                                   skip_rescale=skip_rescale, init_scale=init_scale)

        def attn(c: int, on: bool) -> nn.Module:
            return AttnBlock(c, skip_rescale=skip_rescale, init_scale=init_scale) if on else nn.Identity()

        self.conv_in = conv3x3(in_channels, ch)
        skips, c = [ch], ch
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            on = image_size // 2**i in attn_resolutions
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(res(c, ch * mult))
                c = ch * mult
                attns.append(attn(c, on))
                skips.append(c)
            down = Downsample(c, with_conv=resample_with_conv) if i < n_levels - 1 else None
            if down is not None:
                skips.append(c)
            self.down.append(_Level(blocks, attns, down))
        self.mid = nn.ModuleList([res(c, c), attn(c, mid_attention), res(c, c)])
        self.up = nn.ModuleList()
        for i in reversed(range(n_levels)):
            on = image_size // 2**i in attn_resolutions
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(res(c + skips.pop(), ch * ch_mult[i]))
                c = ch * ch_mult[i]
                attns.append(attn(c, on))
            up = Upsample(c, with_conv=resample_with_conv) if i > 0 else None
            self.up.append(_Level(blocks, attns, up))
        assert not skips
        self.norm_out = group_norm(c)
        self.conv_out = conv3x3(c, in_channels, init_scale=init_scale)

    @property
    def null_label(self) -> int:
        """The class label meaning "no class" (classifier-free guidance's unconditional model)."""
        return self.num_classes

    def forward(self, x: torch.Tensor, c: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Network output for images x (B, C, H, W) at noise labels c (B,) and, for a class-conditional
        network, class labels y (B,) in 0..num_classes (None: the null label)."""
        emb = self.embed_mlp(self.embed(batch_labels(c, x)).to(x.dtype))
        if self.num_classes:
            emb = emb + self.class_embed(class_labels(y, x, self.num_classes)).to(x.dtype)
        elif y is not None:
            raise ValueError("this network has no class conditioning (num_classes=0): it takes no labels y; "
                             "train one with model.num_classes=K for classifier-free guidance")
        emb = F.silu(emb)
        hs = [self.conv_in(x)]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attn):
                hs.append(attn(block(hs[-1], emb)))
            if level.resample is not None:
                hs.append(level.resample(hs[-1]))
        h = self.mid[0](hs[-1], emb)
        h = self.mid[2](self.mid[1](h), emb)
        for level in self.up:
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb))
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
