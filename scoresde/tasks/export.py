"""``task=export format=diffusers``: a trained model (``ckpt_path``) as a folder another library loads
(:mod:`scoresde.interop`), checked after writing: loaded back by that library, the folder reproduces the
network's outputs on random inputs at several times; the largest difference goes to ``metrics.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from scoresde.train import ScoreModel

from .common import ConfigError, write_json
from .launch import start_from_checkpoint

__all__ = ["FORMATS", "check_diffusers_folder", "run_export"]

log = logging.getLogger(__name__)

#: export formats
FORMATS = ("diffusers",)

#: the round trip must reproduce the network's outputs within this (float32)
TOLERANCE = 1e-5


def check_diffusers_folder(model: ScoreModel, folder: Path, num_train_timesteps: int, seed: int = 0) -> float:
    """The largest absolute difference between our network's noise prediction and that of the folder
    loaded by diffusers (``ScoresdeUNet.from_pretrained``), on 4 random inputs at timesteps from 0 to
    ``N - 1``."""
    from scoresde.interop import ScoresdeUNet

    unet = ScoresdeUNet.from_pretrained(folder / "unet", low_cpu_mem_usage=False).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((4, *model.data_shape), generator=g)
    n = torch.linspace(0, num_train_timesteps - 1, 4).round()
    t = n / (num_train_timesteps - 1)
    model = model.cpu()
    with torch.no_grad():
        ours = model.net(x, model.sde.noise_label(t))  # the noise prediction (parameterization eps)
        if model.hparams.parameterization == "score":  # the network's output is the score: eps = -s(t) score
            ours = -model.sde.std(t).view(-1, 1, 1, 1) * ours
        theirs = unet(x, n).sample
    return float((ours - theirs).abs().max())


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """Export the model of ``ckpt_path`` in ``format`` into ``<run dir>/<format>/``."""
    fmt = str(cfg.get("format"))
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format={fmt}; valid: {', '.join(FORMATS)}")
    try:
        from scoresde.interop.diffusers_out import export_diffusers
    except ImportError as err:
        raise ConfigError(f"format=diffusers needs the diffusers package ({err}): "
                          "pip install -e '.[diffusers]'") from None
    run_dir, model, _ = start_from_checkpoint(cfg, load_data=False)
    n = int(cfg.task.num_train_timesteps)
    folder = run_dir / fmt
    try:
        export_diffusers(model, folder, num_train_timesteps=n)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    error = check_diffusers_folder(model, folder, n)
    if not error <= TOLERANCE:
        raise RuntimeError(f"the exported folder {folder} reproduces the network only within {error:.3g}")
    log.info("wrote %s (diffusers reproduces the network within %.2g)", folder, error)
    metrics = {"task": "export", "format": fmt, "ckpt_path": str(cfg.ckpt_path), "folder": str(folder),
               "max_abs_error": error, "scheduler": (folder / "scheduler").is_dir()}
    write_json(run_dir / "metrics.json", metrics)
    return metrics
