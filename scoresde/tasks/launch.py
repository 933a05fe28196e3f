"""Starting a task: validating the config, threads, the run directory, extra processes for sampling and
likelihood under ``trainer=ddp`` (Lightning Fabric's launcher), and the model of ``ckpt_path``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from scoresde.train import CheckpointError, ScoreModel
from scoresde.train.distributed import rank_and_world

from .common import ConfigError, local_processes, output_dir, set_threads, validate_config
from .model_files import load_model_file
from .paths import export_paths

__all__ = ["checkpoint_model", "device_of", "launch_processes", "prepare_run"]

log = logging.getLogger(__name__)


def prepare_run(cfg: DictConfig) -> Path:
    """Validate ``cfg``, set the torch threads, return the run directory."""
    validate_config(cfg)
    export_paths(cfg)
    set_threads(cfg, local_processes(cfg))
    return output_dir(cfg)


def launch_processes(cfg: DictConfig) -> Any:
    """Under ``trainer=ddp`` (``devices`` > 1 or several nodes) start the other processes and the process
    group (Lightning Fabric re-runs the command, as Lightning's trainer does); a no-op otherwise.
    Returns the Fabric object or None."""
    devices = local_processes(cfg)
    nodes = int(OmegaConf.select(cfg, "trainer.num_nodes", default=1) or 1)
    if devices * nodes <= 1 or rank_and_world()[1] > 1:
        return None
    from lightning_fabric import Fabric

    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=nodes, strategy="ddp")
    fabric.launch()
    log.info("process %d of %d started", fabric.global_rank, fabric.world_size)
    return fabric


def device_of(cfg: DictConfig) -> torch.device:
    """The device this process computes on (``cuda:<local rank>`` for GPU presets, else the CPU)."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator} but no CUDA device is available; use trainer=cpu"
            )
        rank, _ = rank_and_world()
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def checkpoint_model(cfg: DictConfig) -> ScoreModel:
    """The ScoreModel of ``ckpt_path`` with its EMA weights, in eval mode, on :func:`device_of` (see
    :mod:`scoresde.tasks.model_files` for the kinds of file)."""
    if cfg.ckpt_path is None:
        raise ConfigError(f"task={cfg.task.name} needs a trained model: ckpt_path=/path/to/last.ckpt")
    path = Path(str(cfg.ckpt_path)).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    return load_model_file(cfg, path, device_of(cfg))  # .ckpt, .safetensors or an official .pth
