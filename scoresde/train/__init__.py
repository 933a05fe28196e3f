"""Training with PyTorch Lightning: the :class:`ScoreModel` LightningModule, the paper's EMA (on
Lightning's weight-averaging callback), atomic checkpoints with resume, and helpers to shard sampling and
likelihood work across processes. The math layer (SDEs, losses, solvers, likelihood) knows nothing of
Lightning; this package composes it."""

from .checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    LastCheckpoint,
    atomic_torch_save,
    check_compatible,
    check_same_config,
    config_differences,
    load_checkpoint,
    load_score_model,
    resolve_ckpt_path,
)
from .ema import EMA, ema_decay, ema_update_
from .module import ScoreModel, TrainingDivergedError, step_seed

__all__ = [
    "EMA",
    "AtomicCheckpointIO",
    "CheckpointError",
    "LastCheckpoint",
    "ScoreModel",
    "TrainingDivergedError",
    "atomic_torch_save",
    "check_compatible",
    "check_same_config",
    "config_differences",
    "ema_decay",
    "ema_update_",
    "load_checkpoint",
    "load_score_model",
    "resolve_ckpt_path",
    "step_seed",
]
