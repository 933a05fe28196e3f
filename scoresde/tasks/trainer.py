"""The Lightning trainer of ``task=train``: the ``trainer`` group's arguments, the ``callbacks`` group (EMA,
last checkpoint, one progress bar, learning-rate monitor, ...) and the ``logger`` group (csv,
tensorboard, wandb), each entry a ``_target_`` config as in lightning-hydra-template.

The app fills in what depends on the run: a logger's ``save_dir`` (the run directory) and a checkpoint
callback's ``dirpath`` (``<run dir>/checkpoints``) when the config leaves them out.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from scoresde.train import EMA, AtomicCheckpointIO, LastCheckpoint
from scoresde.train.build import import_target, instantiate, plain

from .common import ConfigError

__all__ = ["build_callbacks", "build_trainer"]

log = logging.getLogger(__name__)

#: logger class -> the package it needs and the extra that installs it
_LOGGER_PACKAGES = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard"),
    "WandbLogger": (("wandb",), "wandb"),
}


def _entries(group: Any, name: str) -> dict[str, dict[str, Any]]:
    """The ``{key: {_target_: ..., ...}}`` entries of a ``logger``/``callbacks`` config (null ones
    dropped; a key without ``_target_`` is an error)."""
    entries = plain(group) if group is not None else {}
    if not isinstance(entries, dict):
        raise ConfigError(
            f"{name}={entries!r}: expected a group option (e.g. {name}=csv) or a mapping of _target_ configs"
        )
    out = {}
    for key, value in entries.items():
        if value is None:
            continue
        if not isinstance(value, dict) or "_target_" not in value:
            raise ConfigError(f"{name}.{key}: every entry needs a _target_ (a class to build), got {value!r}")
        out[key] = value
    return out


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    """The loggers of the ``logger`` group, writing under ``run_dir`` (their ``save_dir``) unless set."""
    loggers = []
    for key, spec in _entries(OmegaConf.select(cfg, "logger"), "logger").items():
        cls_name = str(spec["_target_"]).rsplit(".", 1)[-1]
        packages, extra = _LOGGER_PACKAGES.get(cls_name, ((), None))
        if packages and not any(importlib.util.find_spec(p) for p in packages):
            raise ConfigError(
                f"logger={key} needs the {packages[0]} package: pip install {packages[0]} "
                f"(or pip install 'scoresde[{extra}]')"
            )
        if spec.get("save_dir") is None:
            spec["save_dir"] = str(run_dir)
        loggers.append(instantiate(spec))
    return loggers


def build_callbacks(cfg: DictConfig, ckpt_dir: Path, has_logger: bool) -> list[pl.Callback]:
    """The callbacks of the ``callbacks`` group. ``ema.decay=null`` drops the EMA; a checkpoint callback
    without ``dirpath`` writes to ``ckpt_dir``; the learning-rate monitor is dropped without a logger (it
    has nowhere to write); a progress bar with ``refresh_rate=0`` is dropped."""
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.callbacks.progress import ProgressBar

    callbacks: list[pl.Callback] = []
    for key, spec in _entries(OmegaConf.select(cfg, "callbacks"), "callbacks").items():
        try:
            cls = import_target(spec["_target_"])
        except ValueError as err:
            raise ConfigError(f"callbacks.{key}: {err}") from err
        if isinstance(cls, type):
            if issubclass(cls, EMA) and (spec.get("decay") is None):
                continue
            if issubclass(cls, ModelCheckpoint) and spec.get("dirpath") is None:
                spec["dirpath"] = str(ckpt_dir)
            if issubclass(cls, LearningRateMonitor) and not has_logger:
                log.info("callbacks.%s: no logger configured, so the learning rate is not logged", key)
                continue
            if issubclass(cls, ProgressBar) and int(spec.get("refresh_rate", 1) or 0) == 0:
                continue
        try:
            callbacks.append(instantiate(spec))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"callbacks.{key}: {err}") from err
    return callbacks


def build_trainer(
    cfg: DictConfig, run_dir: Path, ckpt_dir: Path, extra_callbacks: list | None = None
) -> tuple[pl.Trainer, EMA | None, LastCheckpoint | None]:
    """The Lightning trainer of ``cfg.trainer`` with the ``callbacks`` and ``logger`` groups and atomic
    checkpoint IO. Returns ``(trainer, the EMA callback or None, the checkpoint callback or None)``."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.callbacks.progress import ProgressBar

    kwargs = plain(cfg.trainer)
    loggers = build_loggers(cfg, run_dir)
    callbacks = build_callbacks(cfg, ckpt_dir, has_logger=bool(loggers)) + list(extra_callbacks or [])
    ema = next((c for c in callbacks if isinstance(c, EMA)), None)
    ckpt = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    strategy = kwargs.get("strategy", "auto")
    if strategy == "ddp" and kwargs.get("accelerator") in ("cpu", "auto") and not torch.cuda.is_available():
        from pytorch_lightning.strategies import DDPStrategy

        kwargs["strategy"] = DDPStrategy(process_group_backend="gloo")
    plugins: list = [AtomicCheckpointIO()]
    from lightning_fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        # submitit requeues preempted / timed-out jobs (conf/hydra/launcher/slurm.yaml) and they resume with
        # ckpt_path=auto: Lightning's own SLURM requeue (SIGUSR1 -> hpc_ckpt_*.ckpt) stays off
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = pl.Trainer(
        **kwargs,
        default_root_dir=str(run_dir),
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=ckpt is not None,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        plugins=plugins,
    )
    return trainer, ema, ckpt
