"""The standard FID Inception-v3 (pool3 features, 2048-d; 1008 class logits) in plain PyTorch.

The architecture is the TensorFlow ``2015-12-05`` Inception graph used by the original FID and Inception
Score code, whose converted weights pytorch-fid (https://github.com/mseitzer/pytorch-fid) and torch-fidelity
(https://github.com/toshas/torch-fidelity) publish (both Apache License 2.0): the module and parameter names
here are the ones those weight files load into, and the TensorFlow quirks (average pools that do not count
padding, a max-pool in the last block, TensorFlow-1.x bilinear resizing) follow the graph. It is written here
because torch-fidelity (which torchmetrics' default extractor wraps) requires torchvision, and because its
default path downloads the weights; nothing here downloads.

Weights: ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid) or
``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity); both hold the same converted TensorFlow
weights under the same parameter names. The file is looked for, in order, at the explicit ``weights`` path,
at ``$SCORESDE_INCEPTION_WEIGHTS``, in torch hub's checkpoint directory
(``torch.hub.get_dir()/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``, where pytorch-fid and
torch-fidelity keep it) and in :func:`~scoresde.evaluation.weight_files.default_weights_dir`. When it is
missing, :class:`~scoresde.evaluation.errors.WeightsNotFoundError` says where to get it and where to put it.

Preprocessing (as torch-fidelity): integers ``k`` in ``[0, levels)`` become 8-bit values
``round(255 k / (levels - 1))``, grey images are repeated to 3 channels, images are resized to 299x299
(TensorFlow-1.x bilinear by default, ``resize="bilinear"`` for PyTorch's) and scaled by ``(x - 128) / 128``.
The logits are the *unbiased* ones (no bias term), as in the original Inception Score code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from scoresde.evaluation.errors import WeightsFormatError, WeightsNotFoundError
from scoresde.evaluation.features import FeatureExtractor
from scoresde.evaluation.weight_files import default_weights_dir, state_dict_digest

__all__ = [
    "INCEPTION_FILENAMES",
    "INCEPTION_URLS",
    "FIDInceptionV3",
    "InceptionFeatureExtractor",
    "find_inception_weights",
    "inception_weights_candidates",
    "resize_bilinear_tf1",
]

INCEPTION_FILENAMES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_URLS = {
    "pt_inception-2015-12-05-6726825d.pth":
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "weights-inception-2015-12-05-6726825d.pth":
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
}
INPUT_SIZE = 299


# ----------------------------------------------------------------------------------------------- resize
def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float ``(N, C, H, W)`` to ``size`` exactly as TensorFlow 1.x's
    ``resize_bilinear(align_corners=False)`` (sample points ``i * in/out``, no half-pixel offset)."""
    out_h, out_w = size
    in_h, in_w = x.shape[2], x.shape[3]

    def grid(n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.arange(n_out, dtype=x.dtype, device=x.device) * torch.tensor(
            n_in / n_out, dtype=torch.float32, device=x.device
        )
        lo = pos.long()
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, pos - lo.to(x.dtype)

    y_lo, y_hi, dy = grid(out_h, in_h)
    x_lo, x_hi, dx = grid(out_w, in_w)
    top, bottom = x[:, :, y_lo, :], x[:, :, y_hi, :]
    tl, tr, bl, br = top[..., x_lo], top[..., x_hi], bottom[..., x_lo], bottom[..., x_hi]
    t = tl + (tr - tl) * dx.view(1, 1, 1, out_w)
    b = bl + (br - bl) * dx.view(1, 1, 1, out_w)
    return t + (b - t) * dy.view(1, 1, out_h, 1)


# ----------------------------------------------------------------------------------------------- network
class BasicConv2d(nn.Module):
    """Convolution (no bias) + batch norm (eps 1e-3) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool does not count the zero padding.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block; ``max_pool=True`` in the last one (a quirk of the TensorFlow graph)."""

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_tf(x)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the FID: input float ``(N, 3, 299, 299)`` scaled to about ``[-1, 1]``; ``forward``
    gives ``(pool3 features (N, 2048), unbiased logits (N, 1008))``. Parameter names match the weights
    files of pytorch-fid and torch-fidelity."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        blocks = (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                  self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        for block in blocks:
            x = block(x)
        feats = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return feats, feats @ self.fc.weight.T


# ----------------------------------------------------------------------------------------------- weights
def inception_weights_candidates(weights: str | Path | None = None) -> list[Path]:
    """The paths searched for the weights, in order (see the module docstring)."""
    if weights is not None:
        return [Path(weights).expanduser()]
    out = []
    env = os.environ.get("SCORESDE_INCEPTION_WEIGHTS")
    if env:
        out.append(Path(env).expanduser())
    dirs = [Path(torch.hub.get_dir()).expanduser() / "checkpoints", default_weights_dir()]
    return out + [d / name for d in dirs for name in INCEPTION_FILENAMES]


def find_inception_weights(weights: str | Path | None = None) -> Path:
    """The first existing candidate path; :class:`WeightsNotFoundError` (saying how to get the file and
    where to put it) when there is none. Never downloads."""
    candidates = inception_weights_candidates(weights)
    for path in candidates:
        if path.is_file():
            return path
    hub = Path(torch.hub.get_dir()).expanduser() / "checkpoints"
    name = INCEPTION_FILENAMES[0]
    raise WeightsNotFoundError(
        "FID Inception weights not found. Searched: " + ", ".join(map(str, candidates)) + ". "
        "Nothing is downloaded automatically: on a machine with internet access download "
        f"{INCEPTION_URLS[name]} "
        f"(pytorch-fid's file; torch-fidelity's {INCEPTION_URLS[INCEPTION_FILENAMES[1]]} works too) and put "
        f"it at {hub / name}, or anywhere and point to it with the `weights` option (e.g. "
        "`weights=/path/to/pt_inception-2015-12-05-6726825d.pth`) or the SCORESDE_INCEPTION_WEIGHTS "
        "environment variable."
    )


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WeightsFormatError(f"cannot read Inception weights {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFormatError(f"{path} does not hold a state dict of tensors")
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


class InceptionFeatureExtractor(FeatureExtractor):
    """The ``inception`` feature network: 2048 pool3 features and 1008 (unbiased) logits of integer images
    ``(N, 1 or 3, H, W)`` in ``[0, levels)`` of any size.

    Args:
        weights: path of the weights file; None: search the usual places (module docstring).
        levels: grey levels of the input integers (256 for 8-bit images).
        resize: ``"tf1"`` (TensorFlow-1.x bilinear, as the original FID; default) or ``"bilinear"``.
        device: where the network runs.
    """

    name = "inception"
    num_features = 2048
    num_classes = 1008

    def __init__(
        self,
        weights: str | Path | None = None,
        levels: int = 256,
        resize: str = "tf1",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if resize not in ("tf1", "bilinear"):
            raise ValueError(f"unknown resize {resize!r}; valid: 'tf1', 'bilinear'")
        if not 2 <= int(levels) <= 256:
            raise ValueError(f"levels must lie in [2, 256] for the Inception network, got {levels}")
        path = find_inception_weights(weights)
        state = _load_state_dict(path)
        net = FIDInceptionV3()
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise WeightsFormatError(
                f"{path} is not an FID Inception state dict: missing keys {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                f"{'...' if len(unexpected) > 5 else ''}"
            )
        self.net = net.eval().requires_grad_(False)
        self.weights_path = path
        self.levels = int(levels)
        self.resize = resize
        digest = state_dict_digest(state)[:16]
        self._fingerprint = f"inception-fid-v3:{digest}:levels={self.levels}:resize={resize}"
        self.to(device).eval()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def check(self, images: torch.Tensor) -> None:
        super().check(images)
        if images.shape[1] not in (1, 3):
            raise ValueError(
                f"the Inception network takes 1- or 3-channel images, got {images.shape[1]} channels"
            )

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.to(torch.float32)
        if self.levels != 256:
            x = torch.round(x * (255.0 / (self.levels - 1)))
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize == "tf1":
            x = resize_bilinear_tf1(x, (INPUT_SIZE, INPUT_SIZE))
        else:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.net((x - 128.0) / 128.0)
