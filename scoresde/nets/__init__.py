"""Score networks in plain PyTorch: `forward(x, c)` with x (B, ...) and noise labels c (B,).

The SDE decides what c is (999 t for VP/sub-VP, sigma(t) or log sigma(t) for VE); the networks know
nothing of SDEs and return a tensor shaped like x.

* `MLP`: residual SiLU MLP for vector data (2-D toys).
* `UNet`: small U-Net for 8x8 to 32x32 images (the default for the embedded digits data).
* `NCSNpp`: the paper's DDPM++ / NCSN++ (presets in conf/model/).
* `load_score_sde_checkpoint`: official score_sde_pytorch checkpoints -> `NCSNpp`.

Speed on CPU: `net.to(memory_format=torch.channels_last)` makes the 32x32 networks' convolutions
run channels-last (about 10-20% faster forward passes for DDPM++/NCSN++; no gain at 8x8); the
output then has x's shape but channels-last strides. See benchmarks/bench_nets.py.
"""

from __future__ import annotations

from torch import nn

from .checkpoint import CheckpointMismatchError, load_score_sde_checkpoint
from .embeddings import GaussianFourierProjection, SinusoidalEmbedding, sinusoidal_embedding
from .mlp import MLP
from .ncsnpp import NCSNpp
from .unet import UNet


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all of them, as the paper's code counts, or only trainable ones)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MLP",
    "UNet",
    "NCSNpp",
    "count_parameters",
    "load_score_sde_checkpoint",
    "CheckpointMismatchError",
    "GaussianFourierProjection",
    "SinusoidalEmbedding",
    "sinusoidal_embedding",
]
