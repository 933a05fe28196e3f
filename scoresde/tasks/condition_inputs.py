"""Inputs of the conditional tasks shared by :mod:`.condition` and :mod:`.restore`: mask presets and files,
the test images, and config values that may be lists (``task=evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import ConfigError

__all__ = ["MASK_PRESETS", "make_mask", "test_images", "values_of"]

MASK_PRESETS = ("half", "center", "random")


def make_mask(spec: str, shape: tuple[int, ...], rate: float = 0.5, seed: int = 0) -> torch.Tensor:
    """A bool mask (True where known) broadcastable to images of ``shape = (C, H, W)``: a preset or a file."""
    c, h, w = shape
    if spec == "half":
        mask = torch.zeros(1, h, w, dtype=torch.bool)
        mask[:, : h // 2] = True
        return mask
    if spec == "center":
        mask = torch.ones(1, h, w, dtype=torch.bool)
        mask[:, h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = False
        return mask
    if spec == "random":
        if not 0 < float(rate) < 1:
            raise ConfigError(f"condition.rate={rate}: the fraction of known pixels must lie in (0, 1)")
        return torch.rand(1, h, w, generator=torch.Generator().manual_seed(int(seed))) < float(rate)
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise ConfigError(f"condition.mask={spec!r}: neither a preset ({', '.join(MASK_PRESETS)}) "
                          "nor a mask file")
    mask = torch.as_tensor(np.load(path) if path.suffix == ".npy" else torch.load(path, weights_only=True))
    if tuple(mask.shape) not in ((h, w), (c, h, w), (1, h, w)):
        raise ConfigError(f"condition.mask={spec}: a mask of shape {tuple(mask.shape)} does not fit the "
                          f"data; expected (H, W) = ({h}, {w}) or (C, H, W) = ({c}, {h}, {w}), "
                          "True where known")
    return mask.bool().reshape(-1, h, w)


def values_of(cond, key: str, many: bool) -> list[Any]:
    """``condition.<key>`` as a list: one value, or (``task=evaluate``) a list of them."""
    value = cond[key]
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values or (len(values) > 1 and not many):
        raise ConfigError(f"condition.{key}={value}: task=sample takes one value (lists: task=evaluate)")
    return values


def test_images(dm, n: int, device) -> torch.Tensor:
    """The first ``n`` test images in model space, as the test loader gives them."""
    images = []
    for batch in dm.test_dataloader():
        images.append(batch[0] if isinstance(batch, list | tuple) else batch)
        if sum(len(b) for b in images) >= n:
            break
    return torch.cat(images)[:n].to(device)
