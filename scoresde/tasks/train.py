"""``task=train``: fit a ScoreModel (or resume one), then with the EMA weights write the inference
weights, a sample grid and the held-out bits/dim into the run directory.

Run directory layout::

    checkpoints/last.ckpt   resumable checkpoint (EMA weights in state_dict), every checkpoint.every_n_steps
    weights_ema.pt          the EMA network weights + configs (inference only)
    weights_ema.safetensors the same, loadable without pickle (configs in the metadata)
    samples.png/.pt/.npz    num_samples samples from the EMA weights with the configured solver
    samples/val_step*.png   validation grids
    logs/metrics.csv        training curves (CSV logger)
    metrics.json            summary: steps, times, losses, bits/dim, sampling statistics, paths
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from scoresde.train import (
    ScoreModel,
    TrainingDivergedError,
    atomic_torch_save,
    check_compatible,
    load_checkpoint,
    resolve_ckpt_path,
)
from scoresde.train.build import plain
from scoresde.train.distributed import is_global_zero, rank_and_world
from scoresde.train.weights import save_weights_safetensors

from .common import (
    build_datamodule,
    build_score_model,
    build_solver,
    data_info,
    per_item_seeds,
    write_json,
)
from .launch import prepare_run
from .likelihood import evaluate_likelihood
from .sample import generate, save_samples
from .trainer import build_trainer

__all__ = ["run_train", "save_inference_weights"]

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"


def save_inference_weights(model: ScoreModel, path: Path) -> None:
    """The (EMA) network weights with everything needed to use them: network and SDE configs,
    parameterization, data shape/levels/range, the training step. Rank 0 only; atomic."""
    if not is_global_zero():
        return
    hp = model.hparams
    atomic_torch_save(
        {
            "net": hp.net,
            "sde": hp.sde,
            "parameterization": hp.parameterization,
            "data_shape": hp.data_shape,
            "levels": hp.levels,
            "data_range": hp.data_range,
            "global_step": int(model.global_step),
            "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        },
        path,
    )


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Train per ``cfg`` and evaluate; returns the metrics written to ``metrics.json``."""
    run_dir = prepare_run(cfg)
    ckpt_dir = run_dir / CKPT_DIR
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build_datamodule(cfg)
    info = data_info(dm)
    model = build_score_model(cfg, info)
    solver = build_solver(cfg) if cfg.task.get("sample", True) else None  # fail fast on a bad solver config
    resume = resolve_ckpt_path(cfg.ckpt_path, ckpt_dir)
    if resume is not None:
        check_compatible(load_checkpoint(resume), model, resume)
        log.info("resuming from %s", resume)
    trainer, ema, ckpt_cb = build_trainer(cfg, run_dir, ckpt_dir)

    t0 = time.perf_counter()
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=resume)
    except TrainingDivergedError:
        log.error("training diverged; nothing after the last checkpoint was written")
        raise
    train_seconds = time.perf_counter() - t0
    if trainer.interrupted:
        raise KeyboardInterrupt(
            f"training was interrupted at step {trainer.global_step}; resume with "
            f"hydra.run.dir={run_dir} ckpt_path=last"
        )
    start_step = getattr(model, "_fit_start_step", None)
    max_steps = int(cfg.trainer.max_steps)
    stopped_early = trainer.global_step < max_steps and not trainer.fast_dev_run
    if stopped_early and is_global_zero():
        log.warning(
            "training stopped at step %d of %d by trainer.max_time=%s (a slow or busy machine); "
            "the results below are for step %d",
            trainer.global_step,
            max_steps,
            cfg.trainer.get("max_time"),
            trainer.global_step,
        )

    rank, world = rank_and_world()
    if world > 1:
        log.info("process %d of %d: sampling and likelihood are sharded across the processes", rank, world)
    infer = ema.averaged_module() if ema is not None else model
    infer.eval()
    weights = run_dir / "weights_ema.pt"
    save_inference_weights(infer, weights)
    if is_global_zero():  # the same weights without pickle, configs in the metadata
        save_weights_safetensors(infer, run_dir / "weights_ema.safetensors", trainer.global_step)
    metrics: dict[str, Any] = {
        "task": "train",
        "global_step": int(trainer.global_step),
        "max_steps": max_steps,
        "stopped_by_max_time": stopped_early,
        "resumed_from": resume,
        "start_step": start_step,
        "train_seconds": train_seconds,
        "ema_updates": ema.num_updates if ema is not None else 0,
        "train_loss": _metric(trainer, "train/loss"),
        "val_loss": _metric(trainer, "val/loss"),
        "val_bpd": _metric(trainer, "val/bpd"),
        "checkpoint": ckpt_cb.last_model_path if ckpt_cb is not None else None,
        "weights_ema": str(weights),
        "weights_safetensors": str(run_dir / "weights_ema.safetensors"),
        "num_parameters": sum(p.numel() for p in model.net.parameters()),
        "data": plain(info),
    }
    show = int(cfg.get("progress_bar_refresh_rate", 20) or 0) > 0
    if solver is not None:
        seeds = per_item_seeds(
            cfg.sample_seeds, None if cfg.sample_seeds is not None else int(cfg.num_samples), cfg.seed
        )
        x, stats = generate(infer, solver, seeds, int(cfg.sample_batch_size), progress=show)
        metrics["sampling"] = {**stats, "solver": repr(solver)}
        metrics["samples"] = save_samples(
            x, run_dir, levels=info["levels"], data_range=info["data_range"], seeds=seeds
        )
    if cfg.task.get("likelihood", True):
        summary, _ = evaluate_likelihood(infer, dm, plain(cfg.likelihood), int(cfg.seed), progress=show)
        metrics["likelihood"] = summary
        key = "bpd" if "bpd" in summary else "nll_nats"
        if is_global_zero():
            log.info("%s %s = %.4f (+- %.4f)", summary["split"], key, summary[key], summary[f"{key}_sem"])
    metrics["total_seconds"] = time.perf_counter() - t0
    write_json(run_dir / "metrics.json", metrics)
    if is_global_zero():
        log.info("results in %s", run_dir)
    return metrics


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)
