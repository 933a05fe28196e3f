"""Inference weights as a safetensors file: the (EMA) network tensors, and in the file's metadata everything
needed to use them -- the network and SDE configs, the parameterization, the data shape, levels and range,
the training step. Loading never unpickles anything (unlike ``torch.load`` of a ``.pt``/``.ckpt``), so a
file from an untrusted source cannot run code.

    save_weights_safetensors(model, "weights_ema.safetensors")
    model = load_weights_safetensors("weights_ema.safetensors")     # a ScoreModel in eval mode

Metadata keys (all strings, as safetensors requires): ``format`` (:data:`FORMAT`), ``net``, ``sde``
(JSON configs with ``_target_``), ``parameterization``, ``data_shape``, ``levels``, ``data_range``,
``global_step`` (JSON values).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError

__all__ = ["FORMAT", "load_weights_safetensors", "read_weights_metadata", "save_weights_safetensors"]

FORMAT = "scoresde.weights/1"
_JSON_KEYS = ("net", "sde", "data_shape", "levels", "data_range", "global_step")


def save_weights_safetensors(model: Any, path: str | Path, global_step: int | None = None) -> Path:
    """Write ``model.net``'s weights (a :class:`~scoresde.train.module.ScoreModel`, e.g. the EMA copy)
    with its configs in the metadata, atomically (temporary file, then ``os.replace``). ``global_step``:
    the training step to record (default ``model.global_step``, which a detached EMA copy does not know)."""
    from safetensors.torch import save_file

    hp = model.hparams
    meta = {"format": FORMAT, "parameterization": str(hp.parameterization)}
    values = {
        "net": hp.net,
        "sde": hp.sde,
        "data_shape": hp.data_shape,
        "levels": hp.levels,
        "data_range": hp.data_range,
        "global_step": int(model.global_step if global_step is None else global_step),
    }
    meta.update({k: json.dumps(v) for k, v in values.items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def read_weights_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a scoresde safetensors weights file; :class:`CheckpointError` if the file
    is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - any parse failure means the file is unusable
        raise CheckpointError(f"cannot read {path} as safetensors: {type(err).__name__}: {err}") from err
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not scoresde weights (metadata format "
            f"{raw.get('format')!r}, expected {FORMAT!r}); it lacks the network/SDE configs"
        )
    meta: dict[str, Any] = {"format": raw["format"], "parameterization": raw.get("parameterization", "eps")}
    try:
        meta.update({k: json.loads(raw[k]) for k in _JSON_KEYS})
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: broken scoresde metadata ({type(err).__name__}: {err})") from err
    return meta


def load_weights_safetensors(path: str | Path, map_location: str | torch.device = "cpu"):
    """A :class:`~scoresde.train.module.ScoreModel` (eval mode) with the file's network weights."""
    from safetensors.torch import load_file

    from .module import ScoreModel

    meta = read_weights_metadata(path)
    try:
        model = ScoreModel(
            net=meta["net"],
            sde=meta["sde"],
            parameterization=meta["parameterization"],
            data_shape=meta["data_shape"],
            levels=meta["levels"],
            data_range=meta["data_range"],
        )
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"cannot rebuild the model of {path}: {type(err).__name__}: {err}") from err
    state = load_file(str(path), device="cpu")
    want = model.net.state_dict()
    bad = sorted(set(want) ^ set(state)) + sorted(
        k for k in set(want) & set(state) if want[k].shape != state[k].shape
    )
    if bad:
        raise CheckpointError(f"{path}: the tensors do not fit the network of its metadata (e.g. {bad[:3]})")
    model.net.load_state_dict(state)
    model.global_step_loaded = int(meta["global_step"])
    return model.to(map_location).eval()
