"""Building blocks of the convolutional score networks (U-Net and NCSN++/DDPM++).

Attribute names (`GroupNorm_0`, `Conv_0`, `Dense_0`, `NIN_0`, ...) and the order in which
parameters are registered follow the Score-SDE reference, so that its state dicts load by key and
its EMA parameter lists (in `parameters()` order) line up with ours.

Conventions: NCHW tensors; `emb` passed to residual blocks is the noise-label embedding *after*
the nonlinearity (the reference applies the activation inside every block; computing it once per
forward pass gives the same numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import fir as firlib
from .init import ddpm_init_, variance_scaling_

_SQRT2 = math.sqrt(2.0)


def leaky_relu_02(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with slope 0.2 (the reference's 'lrelu'); a named function so modules stay picklable."""
    return F.leaky_relu(x, 0.2)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "swish": F.silu,
    "silu": F.silu,
    "elu": F.elu,
    "relu": F.relu,
    "lrelu": leaky_relu_02,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Activation function by name (swish/silu, elu, relu, lrelu)."""
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown nonlinearity {name!r}; valid: {sorted(ACTIVATIONS)}") from None


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(C/4, 32) groups and eps 1e-6, as in DDPM++/NCSN++."""
    return nn.GroupNorm(num_groups=max(min(channels // 4, 32), 1), num_channels=channels, eps=1e-6)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = True, padding: int = 1,
            init_scale: float = 1.0) -> nn.Conv2d:
    """3x3 convolution with DDPM initialisation (variance scaling `init_scale`, zero bias)."""
    return ddpm_init_(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding, bias=bias), init_scale)


def conv1x1(in_ch: int, out_ch: int, bias: bool = True, init_scale: float = 1.0) -> nn.Conv2d:
    """1x1 convolution with DDPM initialisation."""
    return ddpm_init_(nn.Conv2d(in_ch, out_ch, 1, bias=bias), init_scale)


def dense(in_dim: int, out_dim: int, init_scale: float = 1.0) -> nn.Linear:
    """Linear layer with DDPM initialisation."""
    return ddpm_init_(nn.Linear(in_dim, out_dim), init_scale)


def residual_sum(x: torch.Tensor, h: torch.Tensor, rescale: bool) -> torch.Tensor:
    """x + h, divided by sqrt(2) when `rescale` (keeps the variance of a sum of two unit-variance terms)."""
    return (x + h) / _SQRT2 if rescale else x + h


class NIN(nn.Module):
    """Per-pixel linear map across channels ("network in network"): y[b, :, i, j] = W^T x[b, :, i, j] + b.

    `W` is stored (in, out) as in the reference; the map is computed as a 1x1 convolution.
    """

    def __init__(self, in_dim: int, out_dim: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_dim, out_dim))
        variance_scaling_(self.W, init_scale)
        self.b = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.W.t()[:, :, None, None], self.b)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection.

    h = GroupNorm(x); q, k, v = NIN_0..2(h); out = NIN_3(softmax(q^T k / sqrt(C)) v);
    returns x + out (divided by sqrt 2 if `skip_rescale`). NIN_3 starts near zero (`init_scale`).
    """

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.GroupNorm_0(x)
        # q, k and v in one 1x1 convolution: (B, 3C, H, W).
        w_qkv = torch.cat([self.NIN_0.W, self.NIN_1.W, self.NIN_2.W], dim=1).t()[:, :, None, None]
        b_qkv = torch.cat([self.NIN_0.b, self.NIN_1.b, self.NIN_2.b])
        qkv = F.conv2d(h, w_qkv, b_qkv).reshape(B, 3, C, H * W).transpose(-1, -2)  # (B, 3, HW, C)
        q, k, v = qkv.unbind(1)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (B, HW, C)
        a = a.transpose(1, 2).reshape(B, C, H, W)
        return residual_sum(x, self.NIN_3(a), self.skip_rescale)


class Combine(nn.Module):
    """Merge a pyramid image p into features h: Conv(p) concatenated with h ('cat') or added ('sum')."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        if method not in ("cat", "sum"):
            raise ValueError(f"progressive_combine must be 'cat' or 'sum', got {method!r}")
        self.Conv = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.Conv(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class Upsample(nn.Module):
    """2x upsampling: nearest (+ 3x3 conv if `with_conv`), or with `fir`: FIR filter (or a fused conv)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv:
            if fir:
                self.Conv2d_0 = firlib.FIRConv2d(in_ch, out_ch, 3, up=True, resample_kernel=fir_kernel)
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch)
        elif out_ch != in_ch:
            raise ValueError("Upsample without a convolution cannot change the number of channels")
        self.fir, self.with_conv, self.fir_kernel = fir, with_conv, tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else firlib.upsample_2d(x, self.fir_kernel)
        h = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """2x downsampling: strided 3x3 conv or 2x2 average pool ('SAME' padding on the bottom/right, as in
    DDPM), or with `fir`: FIR filter (or a strided conv fused with it)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv:
            if fir:
                self.Conv2d_0 = firlib.FIRConv2d(in_ch, out_ch, 3, down=True, resample_kernel=fir_kernel)
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        elif out_ch != in_ch:
            raise ValueError("Downsample without a convolution cannot change the number of channels")
        self.fir, self.with_conv, self.fir_kernel = fir, with_conv, tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else firlib.downsample_2d(x, self.fir_kernel)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2, stride=2)  # the reference's extra zero row/column never enters a window


class ResnetBlockDDPM(nn.Module):
    """DDPM residual block: GN-act-conv, + Dense(emb) per channel, GN-act-dropout-conv; shortcut through a
    NIN when the channel count changes; output x + h (/ sqrt 2 if `skip_rescale`)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None, act: str = "swish",
                 dropout: float = 0.1, skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            self.NIN_0 = NIN(in_ch, out_ch)
        self.act = get_activation(act)
        self.skip_rescale = skip_rescale
        self.in_ch, self.out_ch = in_ch, out_ch

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if emb is not None:
            h = h + self.Dense_0(emb)[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.NIN_0(x)
        return residual_sum(x, h, self.skip_rescale)


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block that can also resample: GN-act, [up/down 2x of both branches], conv,
    + Dense(emb), GN-act-dropout-conv; 1x1-conv shortcut when channels change or it resamples.
    Resampling is FIR (`fir`) or nearest/average (`fir=False`)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None, up: bool = False,
                 down: bool = False, act: str = "swish", dropout: float = 0.1, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True,
                 init_scale: float = 0.0):
        super().__init__()
        if up and down:
            raise ValueError("a residual block cannot both upsample and downsample")
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.has_shortcut = in_ch != out_ch or up or down
        if self.has_shortcut:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act = get_activation(act)
        self.up, self.down, self.fir, self.fir_kernel = up, down, fir, tuple(fir_kernel)
        self.skip_rescale = skip_rescale

    def _resample(self, t: torch.Tensor) -> torch.Tensor:
        if self.up:
            return firlib.upsample_2d(t, self.fir_kernel) if self.fir else firlib.naive_upsample_2d(t)
        if self.down:
            return firlib.downsample_2d(t, self.fir_kernel) if self.fir else firlib.naive_downsample_2d(t)
        return t

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.GroupNorm_0(x))
        if self.up or self.down:
            h, x = self._resample(h), self._resample(x)
        h = self.Conv_0(h)
        if emb is not None:
            h = h + self.Dense_0(emb)[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.has_shortcut:
            x = self.Conv_2(x)
        return residual_sum(x, h, self.skip_rescale)
