"""NCSN++ / DDPM++: the Score-SDE paper's U-Net family, in plain PyTorch.

One class covers DDPM++ (VP / sub-VP: BigGAN blocks, positional embedding of 999 t, no FIR) and
NCSN++ (VE: FIR resampling, residual input pyramid, Gaussian Fourier embedding of log sigma,
output divided by sigma) through its options. The layers are kept in one flat `all_modules`
ModuleList in the reference's order, so its state dicts ('module.' prefix removed) load by key and
its EMA parameter lists line up with `parameters()`; see `scoresde.nets.checkpoint`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .embeddings import GaussianFourierProjection, batch_labels, class_labels, sinusoidal_embedding
from .layers import (
    AttnBlock,
    Combine,
    Downsample,
    ResnetBlockBigGAN,
    ResnetBlockDDPM,
    Upsample,
    conv3x3,
    dense,
    get_activation,
    group_norm,
    residual_sum,
)

_PROGRESSIVE = ("none", "output_skip", "residual")
_PROGRESSIVE_INPUT = ("none", "input_skip", "residual")


class NCSNpp(nn.Module):
    """Noise-conditional U-Net of the Score-SDE paper (NCSN++ and DDPM++), `forward(x, c, y=None)`.

    Args (names as in the reference's `config.model`, plus the data options):
        in_channels: image channels (the reference's `data.num_channels`).
        image_size: input height = width; attention is placed by resolution.
        centered: inputs are already in [-1, 1]; if False they are taken to be in [0, 1] and mapped
            by 2x - 1 first.
        nf: base width; level i has nf * ch_mult[i] channels. The noise embedding has 4 nf features.
        ch_mult, num_res_blocks: resolutions (each halves the previous) and residual blocks per level.
        attn_resolutions: resolutions with self-attention (one more always sits in the middle).
        dropout: inside the residual blocks.
        resblock_type: 'biggan' (resampling inside residual blocks) or 'ddpm' (separate
            Downsample/Upsample layers, with a conv if `resamp_with_conv`).
        fir, fir_kernel: FIR resampling with these taps (else nearest / average pooling).
        progressive: output pyramid, 'none' | 'output_skip' | 'residual'.
        progressive_input: input pyramid, 'none' | 'input_skip' | 'residual'.
        progressive_combine: how an 'input_skip' pyramid joins the features, 'sum' | 'cat'.
        skip_rescale: divide residual sums by sqrt 2.
        embedding_type: 'positional' (sinusoidal embedding of c read as a timestep) or 'fourier'
            (Gaussian Fourier features of log c, c a noise level sigma), with `fourier_scale`.
        init_scale: variance-scaling scale of the last conv of every block (0 means 1e-10).
        scale_by_sigma: divide the output by sigma: c itself for 'fourier'; for 'positional',
            sigmas[int(c)] from the table geomspace(sigma_max, sigma_min, num_scales) (c is then an
            index, as in discrete SMLD training).
        conditional: use the noise embedding at all.
        nonlinearity: 'swish' (SiLU), 'elu', 'relu' or 'lrelu'.
        num_classes: class conditioning for classifier-free guidance (not in the reference): K > 0
            adds a learned embedding of the class label y in 0..K (y = K, `null_label`, is "no class",
            used by label dropout) to the noise embedding before its final activation, as `UNet` does.
            None or 0 (default): unconditional, with exactly the reference's parameters and outputs.

    Input x (B, in_channels, image_size, image_size), labels c (B,) float, class labels y (B,) int or
    None (the null label; only for num_classes > 0); output shaped like x.
    """

    def __init__(self, *, in_channels: int = 3, image_size: int = 32, centered: bool = True, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1, resblock_type: str = "biggan",
                 resamp_with_conv: bool = True, fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1),
                 progressive: str = "none", progressive_input: str = "none", progressive_combine: str = "sum",
                 skip_rescale: bool = True, embedding_type: str = "positional", fourier_scale: float = 16.0,
                 init_scale: float = 0.0, scale_by_sigma: bool = False, conditional: bool = True,
                 nonlinearity: str = "swish", sigma_min: float = 0.01, sigma_max: float = 50.0,
                 num_scales: int = 1000, num_classes: int | None = None):
        super().__init__()
        num_classes = 0 if num_classes is None else int(num_classes)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (or None: unconditional), got {num_classes}")
        ch_mult = tuple(int(m) for m in ch_mult)
        attn_resolutions = tuple(int(r) for r in attn_resolutions)
        fir_kernel = tuple(float(k) for k in fir_kernel)
        resblock_type, embedding_type = resblock_type.lower(), embedding_type.lower()
        progressive, progressive_input = progressive.lower(), progressive_input.lower()
        progressive_combine = progressive_combine.lower()
        _check_choice("resblock_type", resblock_type, ("biggan", "ddpm"))
        _check_choice("progressive", progressive, _PROGRESSIVE)
        _check_choice("progressive_input", progressive_input, _PROGRESSIVE_INPUT)
        _check_choice("progressive_combine", progressive_combine, ("sum", "cat"))
        _check_choice("embedding_type", embedding_type, ("positional", "fourier"))
        n_levels = len(ch_mult)
        if image_size % 2 ** (n_levels - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{n_levels - 1}")

        self.in_channels, self.image_size, self.centered = in_channels, image_size, centered
        self.nf, self.num_res_blocks, self.n_levels = nf, num_res_blocks, n_levels
        self.resblock_type, self.embedding_type = resblock_type, embedding_type
        self.progressive, self.progressive_input = progressive, progressive_input
        self.skip_rescale, self.scale_by_sigma, self.conditional = skip_rescale, scale_by_sigma, conditional
        self.act = get_activation(nonlinearity)
        self.resolutions = [image_size // 2**i for i in range(n_levels)]
        self.attn_at = [r in attn_resolutions for r in self.resolutions]
        # Noise levels of discrete SMLD training (descending); only read when scale_by_sigma with a
        # positional embedding. A buffer because the reference's state dicts carry it.
        self.register_buffer("sigmas", torch.exp(torch.linspace(
            math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64)))

        temb_dim = 4 * nf

        def resblock(in_ch: int, out_ch: int | None = None, up: bool = False, down: bool = False):
            common = dict(temb_dim=temb_dim, act=nonlinearity, dropout=dropout, skip_rescale=skip_rescale,
                          init_scale=init_scale)
            if resblock_type == "ddpm":
                return ResnetBlockDDPM(in_ch, out_ch, **common)
            return ResnetBlockBigGAN(in_ch, out_ch, up=up, down=down, fir=fir, fir_kernel=fir_kernel,
                                     **common)

        def attn(ch: int) -> nn.Module:
            return AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        m: list[nn.Module] = []
        # Noise-label embedding -> Dense(4nf) -> act -> Dense(4nf).
        if embedding_type == "fourier":
            m.append(GaussianFourierProjection(nf, fourier_scale))
        if conditional:
            m.append(dense(2 * nf if embedding_type == "fourier" else nf, temb_dim))
            m.append(dense(temb_dim, temb_dim))

        # Encoder.
        channels = in_channels
        pyramid_ch = channels
        m.append(conv3x3(channels, nf))
        skips = [nf]
        ch = nf
        for level in range(n_levels):
            for _ in range(num_res_blocks):
                m.append(resblock(ch, nf * ch_mult[level]))
                ch = nf * ch_mult[level]
                if self.attn_at[level]:
                    m.append(attn(ch))
                skips.append(ch)
            if level != n_levels - 1:
                if resblock_type == "ddpm":
                    m.append(Downsample(ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    m.append(resblock(ch, down=True))
                if progressive_input == "input_skip":
                    m.append(Downsample(pyramid_ch, with_conv=False, fir=fir, fir_kernel=fir_kernel))
                    m.append(Combine(pyramid_ch, ch, method=progressive_combine))
                    if progressive_combine == "cat":
                        ch *= 2
                elif progressive_input == "residual":
                    m.append(Downsample(pyramid_ch, ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyramid_ch = ch
                skips.append(ch)

        # Middle.
        ch = skips[-1]
        m += [resblock(ch), attn(ch), resblock(ch)]

        # Decoder.
        out_pyramid_ch = 0
        for level in reversed(range(n_levels)):
            for _ in range(num_res_blocks + 1):
                m.append(resblock(ch + skips.pop(), nf * ch_mult[level]))
                ch = nf * ch_mult[level]
            if self.attn_at[level]:
                m.append(attn(ch))
            if progressive != "none":
                if level == n_levels - 1:
                    m.append(group_norm(ch))
                    if progressive == "output_skip":
                        m.append(conv3x3(ch, channels, init_scale=init_scale))
                        out_pyramid_ch = channels
                    else:
                        m.append(conv3x3(ch, ch))
                        out_pyramid_ch = ch
                elif progressive == "output_skip":
                    m.append(Upsample(out_pyramid_ch, with_conv=False, fir=fir, fir_kernel=fir_kernel))
                    m.append(group_norm(ch))
                    m.append(conv3x3(ch, channels, init_scale=init_scale))
                    out_pyramid_ch = channels
                else:
                    m.append(Upsample(out_pyramid_ch, ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    out_pyramid_ch = ch
            if level != 0:
                if resblock_type == "ddpm":
                    m.append(Upsample(ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    m.append(resblock(ch, up=True))
        assert not skips
        if progressive != "output_skip":
            m.append(group_norm(ch))
            m.append(conv3x3(ch, channels, init_scale=init_scale))
        self.all_modules = nn.ModuleList(m)
        # Registered after all_modules, so parameters() starts in the reference's order.
        self.num_classes = num_classes
        if num_classes:
            self.class_embed = nn.Embedding(num_classes + 1, temb_dim)  # last row: the null label

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NCSNpp:
        """Build from the reference's option names (a `config.model`-like mapping with `image_size`,
        `num_channels` and `centered` added; unrelated keys such as ema_rate or beta_min are ignored)."""
        return cls(**ncsnpp_kwargs_from_config(config))

    @property
    def null_label(self) -> int:
        """The class label meaning "no class" (classifier-free guidance's unconditional model)."""
        return self.num_classes

    # ---------------------------------------------------------------- forward helpers
    def _embed(self, c: torch.Tensor, y: torch.Tensor | None, x: torch.Tensor,
               mods: Iterator[nn.Module]) -> torch.Tensor | None:
        """Noise-label embedding plus the class embedding, after the final activation (what every
        residual block consumes); None for a network with neither."""
        if self.embedding_type == "fourier":
            temb = next(mods)(torch.log(c))
        else:
            temb = sinusoidal_embedding(c, self.nf)
        if self.conditional:
            temb = next(mods)(temb)
            temb = next(mods)(self.act(temb))
        else:
            temb = None
        if self.num_classes:
            yemb = self.class_embed(class_labels(y, x, self.num_classes)).to(x.dtype)
            temb = yemb if temb is None else temb + yemb
        elif y is not None:
            raise ValueError("this network has no class conditioning (num_classes=None): it takes no labels "
                             "y; train one with model.num_classes=K for classifier-free guidance")
        return None if temb is None else self.act(temb)

    @staticmethod
    def _resample(mod: nn.Module, h: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        """Apply a resampling layer: a plain Down/Upsample, or a BigGAN block that resamples."""
        return mod(h) if isinstance(mod, (Downsample, Upsample)) else mod(h, emb)

    def forward(self, x: torch.Tensor, c: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Score-network output for images x (B, C, H, W) at noise labels c (B,) and, for a
        class-conditional network, class labels y (B,) in 0..num_classes (None: the null label)."""
        c = batch_labels(c, x)
        mods = iter(self.all_modules)
        emb = self._embed(c, y, x, mods)
        if not self.centered:
            x = 2 * x - 1.0

        # Encoder: keep every block's output for the skip connections.
        pyramid = x if self.progressive_input != "none" else None
        hs = [next(mods)(x)]
        for level in range(self.n_levels):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], emb)
                if self.attn_at[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.n_levels - 1:
                h = self._resample(next(mods), hs[-1], emb)
                if self.progressive_input == "input_skip":
                    pyramid = next(mods)(pyramid)
                    h = next(mods)(pyramid, h)
                elif self.progressive_input == "residual":
                    pyramid = residual_sum(next(mods)(pyramid), h, self.skip_rescale)
                    h = pyramid
                hs.append(h)

        # Middle: residual block, attention, residual block.
        h = next(mods)(hs[-1], emb)
        h = next(mods)(h)
        h = next(mods)(h, emb)

        # Decoder, with the optional output pyramid.
        out_pyramid = None
        for level in reversed(range(self.n_levels)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), emb)
            if self.attn_at[level]:
                h = next(mods)(h)
            if self.progressive != "none":
                if level == self.n_levels - 1:
                    norm, conv = next(mods), next(mods)
                    out_pyramid = conv(self.act(norm(h)))
                elif self.progressive == "output_skip":
                    upsample, norm, conv = next(mods), next(mods), next(mods)
                    out_pyramid = upsample(out_pyramid) + conv(self.act(norm(h)))
                else:
                    out_pyramid = residual_sum(next(mods)(out_pyramid), h, self.skip_rescale)
                    h = out_pyramid
            if level != 0:
                h = self._resample(next(mods), h, emb)

        if self.progressive == "output_skip":
            h = out_pyramid
        else:
            norm, conv = next(mods), next(mods)
            h = conv(self.act(norm(h)))

        if self.scale_by_sigma:
            sigma = c if self.embedding_type == "fourier" else self.sigmas[c.long()]
            h = h / sigma.to(h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
        return h


def _check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")


# Reference option -> our keyword (identity unless listed); options whose only accepted value is fixed.
_RENAMED = {"num_channels": "in_channels"}
_FIXED = {"name": "ncsnpp", "normalization": "groupnorm", "attention_type": "ddpm", "conv_size": 3}


def ncsnpp_kwargs_from_config(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Map a reference model config (see `NCSNpp.from_config`) onto `NCSNpp` keyword arguments.

    A nested config with 'model' and 'data' sections is flattened (data: image_size, num_channels,
    centered). Options the reference hard-codes or that select another architecture are checked.
    """
    if hasattr(config, "to_dict"):  # ml_collections.ConfigDict, as the reference's configs are
        config = config.to_dict()
    config = dict(config)
    if isinstance(config.get("model"), Mapping):
        flat = dict(config["model"])
        data = config.get("data", {})
        for key in ("image_size", "num_channels", "centered"):
            if key in data and key not in flat:
                flat[key] = data[key]
        config = flat
    for key, expected in _FIXED.items():
        if key in config and str(config[key]).lower() != str(expected):
            raise ValueError(f"unsupported reference option {key}={config[key]!r} (only {expected!r})")
    accepted = set(inspect.signature(NCSNpp.__init__).parameters) - {"self"}
    kwargs = {}
    for key, value in config.items():
        key = _RENAMED.get(key, key)
        if key in accepted:
            kwargs[key] = value
    return kwargs
