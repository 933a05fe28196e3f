"""The model a task on a trained model uses (``ckpt_path``), from any of three kinds of file:

* a scoresde Lightning checkpoint (``.ckpt``): the EMA weights and the configs it was trained with;
* scoresde safetensors weights (``.safetensors``, written by ``task=train``): the same, without pickle;
* an official score_sde_pytorch checkpoint (``checkpoint_<n>.pth``, {'model', 'ema', 'optimizer',
  'step'}): it holds no config, so the network, SDE and parameterization come from the configured
  experiment preset (e.g. ``experiment=cifar10_ve_ncsnpp_cont``), the data shape from the network config
  (``in_channels``, ``image_size``) -- sampling needs no data set on disk -- and the EMA weights are
  loaded. A checkpoint that does not fit the preset's network is a clear error naming the first tensor;
* a diffusers pipeline folder (``model=diffusers``; :func:`scoresde.interop.from_diffusers`): a
  ``UNet2DModel`` and its scheduler's VP SDE; the levels and range of the configured data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from scoresde.nets.checkpoint import CheckpointMismatchError, is_score_sde_checkpoint, load_score_sde_state
from scoresde.train import CheckpointError, ScoreModel, load_score_model
from scoresde.train.build import import_target, plain
from scoresde.train.weights import load_weights_safetensors

__all__ = ["load_model_file", "load_official_checkpoint"]


def load_model_file(cfg: DictConfig, path: str | Path, device: torch.device | str = "cpu") -> ScoreModel:
    """The :class:`ScoreModel` (eval mode, EMA weights) of ``path``, whichever of the three kinds it is."""
    path = Path(path).expanduser()
    diffusers = str(OmegaConf.select(cfg, "model._target_", default="")).startswith("scoresde.interop.")
    if path.is_dir() or diffusers:
        return load_diffusers_folder(cfg, path, diffusers).to(device)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        return load_weights_safetensors(path, map_location=device)
    if path.suffix == ".pth":
        return load_official_checkpoint(cfg, path, device)
    return load_score_model(path, map_location=device)


def load_diffusers_folder(cfg: DictConfig, path: Path, diffusers: bool) -> ScoreModel:
    """``model=diffusers ckpt_path=<folder>``: the diffusers pipeline folder as a ScoreModel."""
    if not diffusers:
        raise CheckpointError(f"ckpt_path={path} is a folder: a diffusers pipeline folder loads with "
                              "model=diffusers; scoresde's own checkpoints are files (.ckpt, .safetensors)")
    if not path.is_dir():
        raise CheckpointError(f"model=diffusers takes ckpt_path=<a diffusers pipeline folder>; {path} is not "
                              "a folder")
    from scoresde.interop.diffusers_in import from_diffusers

    data_cls = import_target(OmegaConf.select(cfg, "data._target_"))
    try:
        return from_diffusers(path, levels=getattr(data_cls, "levels", 256),
                              data_range=tuple(OmegaConf.select(cfg, "data.data_range", default=(-1.0, 1.0))))
    except (ValueError, ImportError) as err:
        raise CheckpointError(str(err)) from None


def _read_official(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read means the file is unusable
        raise CheckpointError(
            f"cannot read {path} as a score_sde_pytorch checkpoint: {type(err).__name__}: {err}"
        ) from err
    if not is_score_sde_checkpoint(ckpt):
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path} is not an official score_sde_pytorch checkpoint (expected the entries 'model' and "
            f"'ema', found {keys}); scoresde's own checkpoints end in .ckpt or .safetensors"
        )
    return ckpt


def load_official_checkpoint(
    cfg: DictConfig, path: str | Path, device: torch.device | str = "cpu"
) -> ScoreModel:
    """A ScoreModel built from the configured ``model``/``sde``/``module.parameterization`` (the experiment
    preset) with the EMA weights of the official checkpoint ``path``."""
    path = Path(path)
    ckpt = _read_official(path)
    net_cfg = plain(cfg.model)
    if "image_size" not in net_cfg or "in_channels" not in net_cfg:
        raise CheckpointError(
            f"{path} is an official score_sde_pytorch checkpoint, but model={net_cfg.get('_target_')} is not "
            "an image network of the paper: choose the matching preset, e.g. "
            "experiment=cifar10_ve_ncsnpp_cont"
        )
    data_cls = import_target(OmegaConf.select(cfg, "data._target_"))
    model = ScoreModel(
        net=net_cfg,
        sde=plain(cfg.sde),
        parameterization=str(cfg.module.parameterization),
        data_shape=(int(net_cfg["in_channels"]), int(net_cfg["image_size"]), int(net_cfg["image_size"])),
        levels=int(getattr(data_cls, "levels", 256)),
        data_range=tuple(OmegaConf.select(cfg, "data.data_range", default=(-1.0, 1.0))),
    )
    try:
        load_score_sde_state(model.net, ckpt, use_ema=True)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(
            f"the official checkpoint {path} does not fit the configured network "
            f"({net_cfg['_target_']}, nf={net_cfg.get('nf')}, ch_mult={net_cfg.get('ch_mult')}, "
            f"num_res_blocks={net_cfg.get('num_res_blocks')}): {err}. Pass the experiment preset the "
            "checkpoint was trained with (ve/cifar10_ncsnpp_continuous -> experiment=cifar10_ve_ncsnpp_cont, "
            "vp/cifar10_ddpmpp_continuous -> experiment=cifar10_vp_ddpmpp_cont, ...)"
        ) from None
    model.global_step_loaded = int(ckpt.get("step", 0))
    return model.to(device).eval()
