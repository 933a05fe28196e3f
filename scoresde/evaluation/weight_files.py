"""Where feature-network weights live, and a content digest of a state dict (for fingerprints).

Nothing is downloaded: weights shipped with the package lie in ``scoresde/evaluation/weights/``; weights a
user trains or obtains go to :func:`default_weights_dir` (``$SCORESDE_WEIGHTS_DIR`` or
``~/.cache/scoresde/weights``), unless a path is given explicitly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["default_weights_dir", "package_weights_dir", "state_dict_digest"]


def package_weights_dir() -> Path:
    """The directory of the weights shipped with the package (``scoresde/evaluation/weights``)."""
    return Path(__file__).resolve().parent / "weights"


def default_weights_dir() -> Path:
    """``$SCORESDE_WEIGHTS_DIR`` if set, else ``~/.cache/scoresde/weights`` (absolute)."""
    env = os.environ.get("SCORESDE_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/scoresde/weights").expanduser()


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over the names, dtypes, shapes and values of a state dict, independent of how it was
    serialized."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()
