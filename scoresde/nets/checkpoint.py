"""Loading the official Score-SDE PyTorch checkpoints (score_sde_pytorch `.pth` files).

Layout of such a file: {'model': state dict of the nn.DataParallel-wrapped network (keys start
with 'module.'), 'ema': {'decay', 'num_updates', 'shadow_params': trainable parameters in
`model.parameters()` order}, 'optimizer': ..., 'step': int}. `NCSNpp` keeps the reference's module
structure, so the stripped keys are ours and the EMA list follows our trainable parameters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from .ncsnpp import NCSNpp

_PREFIX = "module."


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the network built from the config."""


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the nn.DataParallel 'module.' prefix when every key carries it."""
    if state and all(k.startswith(_PREFIX) for k in state):
        return {k[len(_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def _check_state(net: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise CheckpointMismatchError naming the first tensor (in network order) that is missing, has
    another shape, or is unexpected."""
    ours = net.state_dict()
    for key, tensor in ours.items():
        if key not in state:
            raise CheckpointMismatchError(f"checkpoint has no tensor {key!r} (shape {tuple(tensor.shape)}) "
                                          "that the configured network needs")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointMismatchError(f"tensor {key!r}: checkpoint shape {tuple(state[key].shape)}, "
                                          f"configured network shape {tuple(tensor.shape)}")
    for key in state:
        if key not in ours:
            raise CheckpointMismatchError(f"checkpoint tensor {key!r} has no place in the configured network")


def _load_ema(net: torch.nn.Module, ema: Mapping[str, Any]) -> None:
    """Copy EMA shadow parameters onto the trainable parameters, in order, checking count and shapes."""
    shadow = list(ema["shadow_params"])
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    for i, (name, param) in enumerate(named):
        if i >= len(shadow):
            raise CheckpointMismatchError(f"EMA has {len(shadow)} shadow parameters; none for {name!r} "
                                          f"(the network has {len(named)} trainable parameters)")
        if tuple(shadow[i].shape) != tuple(param.shape):
            raise CheckpointMismatchError(f"EMA shadow parameter {i} ({name!r}): checkpoint shape "
                                          f"{tuple(shadow[i].shape)}, network shape {tuple(param.shape)}")
    if len(shadow) != len(named):
        raise CheckpointMismatchError(f"EMA has {len(shadow)} shadow parameters, the network "
                                      f"{len(named)} trainable ones")
    with torch.no_grad():
        for (_, param), value in zip(named, shadow):
            param.copy_(value)


def load_score_sde_checkpoint(path_or_dict: str | os.PathLike | Mapping[str, Any], config: Mapping[str, Any],
                              use_ema: bool = True, map_location: str | torch.device = "cpu") -> NCSNpp:
    """Build `NCSNpp` from the reference's model `config` and load an official checkpoint into it.

    Args:
        path_or_dict: a `.pth` file (read with `torch.load(weights_only=True)`) or its loaded dict.
        config: the reference's `config.model` options with image_size, num_channels and centered
            added (like the `model` section of the fixtures' meta.json), or a mapping with 'model' and
            'data' sections; options that do not concern the network are ignored.
        use_ema: load the EMA weights (what the paper samples with) instead of the raw weights.
        map_location: where the tensors are loaded.

    Returns the network in eval mode; `net(x, labels)` reproduces the reference network's outputs
    (labels as the reference calls it: 999 t for VP/sub-VP, sigma(t) for VE).
    Raises CheckpointMismatchError naming the first tensor that does not fit the config.
    """
    if isinstance(path_or_dict, Mapping):
        ckpt = path_or_dict
    else:
        ckpt = torch.load(os.fspath(path_or_dict), map_location=map_location, weights_only=True)
    net = NCSNpp.from_config(config)
    load_score_sde_state(net, ckpt, use_ema=use_ema)
    return net.to(map_location).eval()


def is_score_sde_checkpoint(ckpt: Any) -> bool:
    """Whether a loaded file has the official layout (``model`` and ``ema`` entries, no Lightning
    ``state_dict``)."""
    return isinstance(ckpt, Mapping) and "model" in ckpt and "ema" in ckpt and "state_dict" not in ckpt


def load_score_sde_state(net: torch.nn.Module, ckpt: Mapping[str, Any], use_ema: bool = True) -> None:
    """Load an official checkpoint's (loaded) dict into an already built ``net`` (an `NCSNpp` whose
    structure matches), in place: the raw weights, then the EMA shadow parameters when ``use_ema``.
    Raises CheckpointMismatchError naming the first tensor that does not fit."""
    if "model" not in ckpt:
        raise CheckpointMismatchError(f"not a score_sde checkpoint: no 'model' entry (keys: {sorted(ckpt)})")
    state = _strip_prefix(ckpt["model"])
    if "sigmas" not in state and hasattr(net, "sigmas"):  # older layouts did not store the sigma table
        state["sigmas"] = net.sigmas
    _check_state(net, state)
    net.load_state_dict(state, strict=True)
    if use_ema:
        if not isinstance(ckpt.get("ema"), Mapping) or "shadow_params" not in ckpt["ema"]:
            raise CheckpointMismatchError("use_ema=True but the checkpoint has no 'ema' shadow_params")
        _load_ema(net, ckpt["ema"])
