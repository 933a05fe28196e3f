"""FIR up/down-sampling of NCHW images in plain PyTorch (no compiled extension).

These are the StyleGAN2 resampling operations that NCSN++ uses when `fir=True`:

* `upfirdn2d`: upsample by zero insertion, pad, filter with a 2-D FIR kernel, keep every
  `down`-th sample; the building block of the others.
* `upsample_2d` / `downsample_2d`: FIR-filtered 2x resampling, kernel normalised so a constant
  image keeps its value.
* `upsample_conv_2d` / `conv_downsample_2d`: a 3x3 convolution fused with the resampling (one
  padding, as in StyleGAN2), used by `FIRConv2d`.
* `naive_upsample_2d` / `naive_downsample_2d`: nearest-neighbour repeat / 2x2 average (fir=False).

The filtering is a depthwise convolution (one group per channel), which is what the reference's
CPU fall-back computes with a single-channel convolution over a (B*C, 1, H, W) view.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .init import variance_scaling_


def make_fir_kernel(k: Sequence[float] | torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """2-D float32 kernel from a separable 1-D tap list (outer product) or a 2-D array, normalised to
    sum to `gain`."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {tuple(k.shape)}")
    return k / k.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample (zero insertion by `up`), pad (`pad[0]` before, `pad[1]` after, on both axes; negative
    values crop), convolve each channel with `kernel` (a true convolution, i.e. the kernel flipped),
    and keep every `down`-th output sample."""
    B, C, H, W = x.shape
    if up > 1:
        z = x.new_zeros(B, C, H, up, W, up)
        z[:, :, :, 0, :, 0] = x
        x = z.reshape(B, C, H * up, W * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        h_end = x.shape[2] - max(-p1, 0)
        w_end = x.shape[3] - max(-p1, 0)
        x = x[:, :, max(-p0, 0):h_end, max(-p0, 0):w_end]
    kh, kw = kernel.shape
    weight = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)
    weight = weight.view(1, 1, kh, kw).expand(C, 1, kh, kw)
    return F.conv2d(x, weight, stride=down, groups=C)


def upsample_2d(x: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> torch.Tensor:
    """FIR upsampling by `factor`: (B, C, H, W) -> (B, C, H*factor, W*factor)."""
    kernel = make_fir_kernel(k, gain=factor**2)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> torch.Tensor:
    """FIR downsampling by `factor`: (B, C, H, W) -> (B, C, H//factor, W//factor)."""
    kernel = make_fir_kernel(k)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling: every pixel repeated factor x factor times."""
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Mean over non-overlapping factor x factor blocks."""
    return F.avg_pool2d(x, factor, stride=factor)


def upsample_conv_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1),
                     factor: int = 2) -> torch.Tensor:
    """Fused 'upsample by zero insertion, convolve with `w` (out, in, K, K), FIR-filter': one transposed
    convolution with stride `factor` followed by the FIR filter, padded once.

    The reference's PyTorch port of this function flips the kernel with a negative-step slice, which
    PyTorch does not support (it raises), so NCSN++ with FIR and a learned upsampling convolution
    (progressive='residual', or resblock_type='ddpm') cannot run there; here the flip is `torch.flip`
    and the operation is the StyleGAN2 one it was ported from.
    """
    out_c, in_c, kh, kw = w.shape
    if kh != kw:
        raise ValueError("upsample_conv_2d needs a square convolution kernel")
    kernel = make_fir_kernel(k, gain=factor**2)
    p = (kernel.shape[0] - factor) - (kw - 1)
    # conv_transpose2d wants (in, out, K, K); flipping makes it the adjoint of a correlation with w.
    wt = torch.flip(w, (2, 3)).transpose(0, 1)
    x = F.conv_transpose2d(x, wt, stride=factor)
    return upfirdn2d(x, kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1),
                       factor: int = 2) -> torch.Tensor:
    """Fused 'FIR-filter, then convolve with `w` (out, in, K, K) at stride `factor`' with one padding."""
    kw = w.shape[-1]
    kernel = make_fir_kernel(k)
    p = (kernel.shape[0] - factor) + (kw - 1)
    x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, w, stride=factor)


class FIRConv2d(nn.Module):
    """K x K convolution fused with FIR 2x upsampling (`up=True`) or downsampling (`down=True`), or a
    plain 'same' convolution when neither; `weight` (out, in, K, K) and `bias` (out,) as in the
    reference's `up_or_down_sampling.Conv2d`."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, up: bool = False, down: bool = False,
                 resample_kernel: Sequence[float] = (1, 3, 3, 1), use_bias: bool = True):
        super().__init__()
        if up and down:
            raise ValueError("FIRConv2d cannot both upsample and downsample")
        if kernel < 1 or kernel % 2 != 1:
            raise ValueError(f"kernel size must be odd and positive, got {kernel}")
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
        variance_scaling_(self.weight)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if use_bias else None
        self.up, self.down = up, down
        self.resample_kernel = tuple(resample_kernel)
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = upsample_conv_2d(x, self.weight, k=self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, self.weight, k=self.resample_kernel)
        else:
            x = F.conv2d(x, self.weight, padding=self.kernel // 2)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return x
