"""Starting a task: validating the config, threads, the run directory, extra processes for sampling and
likelihood under ``trainer=ddp`` (Lightning Fabric's launcher), and -- for the tasks on a trained model --
the model of ``ckpt_path``, checked against the configured data and any model setting given with it."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from scoresde.train import CheckpointError, ScoreModel
from scoresde.train.build import adapt_network_config, instantiate, plain
from scoresde.train.checkpoint import MODEL_KEYS, check_same_config, load_checkpoint, parse_ckpt_path
from scoresde.train.distributed import local_rank, rank_and_world

from .common import (
    ConfigError,
    config_errors,
    data_info,
    datamodule_from_config,
    local_processes,
    output_dir,
    set_threads,
    validate_config,
)
from .model_files import load_model_file
from .paths import export_paths
from .record import write_run_record
from .rundir import check_writable, is_secondary_process, task_output_dir

__all__ = [
    "checkpoint_model",
    "device_of",
    "given_model_settings",
    "launch_processes",
    "prepare_run",
    "start_from_checkpoint",
]

log = logging.getLogger(__name__)


def prepare_run(cfg: DictConfig) -> Path:
    """Validate ``cfg``, set the torch threads, return the run directory (checked for writing)."""
    validate_config(cfg)
    export_paths(cfg)
    set_threads(cfg, local_processes(cfg))
    run_dir = output_dir(cfg)
    if not is_secondary_process():
        check_writable(run_dir, "run directory")
    return run_dir


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
    """The device this process computes on (``cuda:<local rank>`` for GPU presets, else the CPU; the local
    rank, not the global one, so that every node of a multi-node job uses its own GPUs from 0). A GPU preset
    on a machine without one: training is refused (a clear error), a task on a trained model (sample,
    likelihood, evaluate) runs on the CPU with a warning."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            if str(cfg.task.name) not in ("train", "train_classifier"):
                log.warning("trainer.accelerator=%s but no CUDA device is available: task=%s runs on the "
                            "CPU (slow for CIFAR-10 networks; add trainer=cpu to silence this)",
                            accelerator, cfg.task.name)
                return torch.device("cpu")
            raise ConfigError(
                f"trainer.accelerator={accelerator} but no CUDA device is available; use trainer=cpu"
            )
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def checkpoint_model(cfg: DictConfig) -> ScoreModel:
    """The ScoreModel of ``ckpt_path`` with its EMA weights, in eval mode, on :func:`device_of`; a
    :class:`CheckpointError` listing the differences when a model setting given on the command line
    (:func:`given_model_settings`) differs from the checkpoint's (see :mod:`scoresde.tasks.model_files`
    for the kinds of file)."""
    spec = parse_ckpt_path(cfg.ckpt_path)
    if spec.kind in ("none", "auto"):  # auto: training's resume mode
        raise ConfigError(f"task={cfg.task.name} needs a trained model: ckpt_path=/path/to/last.ckpt")
    if spec.kind == "last":
        raise ConfigError(
            f"task={cfg.task.name} takes the checkpoint file itself: "
            "ckpt_path=<training run directory>/checkpoints/last.ckpt (ckpt_path=last resumes training)"
        )
    path = spec.file
    if not path.is_file() and not path.is_dir():  # a folder: a diffusers model (model=diffusers)
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".ckpt":  # scoresde's own checkpoint: the model settings given must match it
        ckpt = load_checkpoint(path)
        check_same_config(ckpt, given_model_settings(cfg, ckpt), MODEL_KEYS, path, f"task={cfg.task.name}")
    return load_model_file(cfg, path, device_of(cfg))  # .ckpt, .safetensors or an official .pth


def command_line_overrides(cfg: DictConfig) -> list[str]:
    """The overrides the run was started with (Hydra's record; ``compose_config`` keeps them too)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return list(OmegaConf.select(cfg, "_overrides_", default=None) or [])


def given_model_settings(cfg: DictConfig, ckpt: dict[str, Any]) -> dict[str, Any]:
    """The model-defining settings (``sde``, ``model``, ``module.parameterization``, ``module.loss``)
    that the command line of a task on a trained model names, as the checkpoint's hyper-parameters spell
    them: a whole block for a group choice (``sde=ve``), one key for a key (``sde.beta_max=5``). The
    others come from the checkpoint and are not compared."""
    hp = ckpt.get("hyper_parameters", {})
    out: dict[str, Any] = {}
    blocks = {"sde": "sde", "model": "net", "module.parameterization": "parameterization",
              "module.loss": "loss"}
    for override in command_line_overrides(cfg):
        key = override.split("=", 1)[0].lstrip("+~")
        for prefix, name in blocks.items():
            if key == prefix:
                if name == "net":
                    try:
                        out[name] = adapt_network_config(plain(cfg.model), tuple(hp.get("data_shape") or ()))
                    except ValueError:  # a network that cannot even take the checkpoint's data: differs
                        out[name] = plain(cfg.model)
                else:
                    out[name] = plain(OmegaConf.select(cfg, prefix))
            elif key.startswith(prefix + "."):
                if not isinstance(out.get(name), dict):
                    out[name] = copy.deepcopy(dict(hp.get(name) or {}))
                _set_nested(out[name], key[len(prefix) + 1 :].split("."), plain(OmegaConf.select(cfg, key)))
    return out


def _set_nested(d: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def start_from_checkpoint(cfg: DictConfig, load_data: bool = True) -> tuple[Path, ScoreModel, Any]:
    """What a task on a trained model starts with: its output directory (the run directory, or a fresh
    subfolder of it when that holds another run's results), the model of ``ckpt_path`` (EMA weights; the
    other processes started under DDP) and the configured data module, checked to match the model
    (``load_data=False``: the module is only built, its files are not read)."""
    run_dir = task_output_dir(prepare_run(cfg), str(cfg.task.name))
    if not is_secondary_process():
        check_writable(run_dir, "output directory")
    launch_processes(cfg)
    model = checkpoint_model(cfg)
    if load_data:
        dm = datamodule_from_config(cfg)
    else:
        with config_errors("data"):
            dm = instantiate(cfg.data)
    official = parse_ckpt_path(cfg.ckpt_path).file.suffix == ".pth"  # data shape: the configured network's
    if load_data or not official:
        check_data_matches(model, dm, str(cfg.ckpt_path))
    write_run_record(cfg)  # Hydra's record and run.log: only now that the checks have passed
    return run_dir, model, dm


def check_data_matches(model: ScoreModel, dm: Any, path: str) -> None:
    """A :class:`CheckpointError` listing the differences when the configured data (shape, levels,
    range) are not those the checkpoint's model was trained on."""
    info = data_info(dm)
    hp = model.hparams
    trained = {"data_shape": list(hp.data_shape or []), "levels": hp.levels,
               "data_range": [float(v) for v in hp.data_range]}
    given = {"data_shape": list(info["shape"]), "levels": info["levels"],
             "data_range": list(info["data_range"])}
    if not trained["data_shape"]:
        return
    try:
        check_same_config({"hyper_parameters": trained}, given, tuple(trained), path, f"data={dm.name}")
    except CheckpointError as err:
        raise CheckpointError(f"{err} Pass the same data=... as for training.") from None
