"""``task=train``: fit a ScoreModel (or resume one), then with the EMA weights write the inference
weights, a sample grid and the held-out bits/dim into the run directory.

Run directory layout::

    checkpoints/last.ckpt   resumable checkpoint (EMA weights in state_dict), every checkpoint.every_n_steps
    weights_ema.pt          the EMA network weights + configs (inference only)
    weights_ema.safetensors the same, loadable without pickle (configs in the metadata)
    samples.png/.pt/.npz    num_samples samples from the EMA weights with the configured solver
    samples/val_step*.png   validation grids
    logs/metrics.csv        training curves (CSV logger; a resume keeps the earlier rows)
    metrics.json            summary: steps, times, losses, bits/dim, sampling statistics, paths

The steps, one function each: :func:`prepare_training` (build and check everything, claim the run
directory), :func:`fit`, :func:`training_report`, :func:`save_inference_weights`,
:func:`sample_after_training`, :func:`likelihood_after_training`, then ``metrics.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from scoresde.train import (
    EMA,
    LastCheckpoint,
    ScoreModel,
    TrainingDivergedError,
    atomic_torch_save,
    check_compatible,
    load_checkpoint,
    resolve_ckpt_path,
)
from scoresde.train.build import plain
from scoresde.train.checkpoint import RESUME_KEYS, check_same_config
from scoresde.train.distributed import is_global_zero, rank_and_world
from scoresde.train.progress import on_terminal
from scoresde.train.summaries import log_results
from scoresde.train.weights import save_weights_safetensors

from .common import (
    Terminated,
    check_batch_fits_data,
    config_errors,
    data_info,
    datamodule_from_config,
    per_item_seeds,
    score_model_from_config,
    show_progress,
    solver_from_config,
    write_json,
)
from .launch import device_of, prepare_run
from .likelihood import LikelihoodSettings, evaluate_likelihood, log_summary
from .record import write_run_record
from .rundir import (
    CKPT_DIR,
    check_writable,
    claim_for_training,
    is_secondary_process,
    lock_run_dir,
    remove_stale_temporaries,
    unlock_run_dir,
)
from .sample import generate, save_samples
from .trainer import build_trainer

__all__ = [
    "ContinueLogs",
    "ResumeHint",
    "TrainingRun",
    "fit",
    "likelihood_after_training",
    "prepare_training",
    "run_train",
    "sample_after_training",
    "save_inference_weights",
    "training_report",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingRun:
    """Everything a training run uses, built and checked before its first step."""

    cfg: DictConfig
    run_dir: Path
    ckpt_dir: Path
    dm: Any
    info: dict[str, Any]
    model: ScoreModel
    solver: Any | None
    likelihood: LikelihoodSettings | None
    resume: str | None
    trainer: pl.Trainer
    ema: EMA | None
    checkpoint: LastCheckpoint
    lock: int | None = None  # the run directory's lock (rundir.lock_run_dir), held until the run ends


class ResumeHint(pl.Callback):
    """On Ctrl-C or SIGTERM (:class:`~scoresde.tasks.common.Terminated`) during training (Lightning then
    exits with status 1): say where the last checkpoint is and how to resume."""

    def __init__(self, run_dir: Path, ckpt_dir: Path):
        self.run_dir, self.ckpt_dir = run_dir, ckpt_dir

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        how = "terminated (SIGTERM)" if isinstance(exception, Terminated) else "interrupted"
        last = self.ckpt_dir / "last.ckpt"
        where = (
            f"the last checkpoint is {last}; resume with the same command plus hydra.run.dir={self.run_dir} "
            "ckpt_path=last"
            if last.is_file()
            else "no checkpoint was written yet (checkpoint.every_n_steps); start again to train"
        )
        print(
            f"error: training {how} at step {trainer.global_step}: {where}", file=sys.stderr, flush=True
        )


class ContinueLogs(pl.Callback):
    """A resumed run continues ``logs/metrics.csv``: the rows of the run before the checkpoint's step are
    read before Lightning's CSV logger replaces the file and written back first (rows logged after the
    checkpoint by the interrupted run are dropped: the resumed run logs those steps again)."""

    def __init__(self, csv_path: Path, step: int):
        self.rows: list[dict[str, str]] = []
        if csv_path.is_file():
            with csv_path.open(newline="") as f:
                for row in csv.DictReader(f):
                    s = int(float(row.get("step") or 0))
                    if s < step or (s == step and not row.get("train/loss")):
                        self.rows.append(row)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from pytorch_lightning.loggers import CSVLogger

        if not self.rows or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                writer = logger.experiment  # created now (the old file is gone): put the old rows back
                writer.metrics[:0] = self.rows
                writer.save()


#: data settings that may change on resume (where the files are and how they are loaded)
DATA_KEYS_FREE_ON_RESUME = ("root", "num_workers", "pin_memory", "eval_batch_size")


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that shape the training but live outside the model's hyper-parameters: the EMA and
    the data (without :data:`DATA_KEYS_FREE_ON_RESUME`). Recorded in each checkpoint (``scoresde_run``)."""
    data = {k: v for k, v in plain(cfg.data).items() if k not in DATA_KEYS_FREE_ON_RESUME}
    return {"ema": plain(cfg.ema), "data": data}


class RecordRunSettings(pl.Callback):
    """Store :func:`run_settings` in every checkpoint, so that a resume can check them."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["scoresde_run"] = self.settings


#: what ``trainer.fast_dev_run`` leaves of the work around the training step (see :func:`smoke_test_config`)
SMOKE_TEST = {"samples": 4, "examples": 2, "steps": 10, "tolerance": 1e-2, "bound_samples": 2}


def smoke_test_config(cfg: DictConfig) -> DictConfig:
    """With ``trainer.fast_dev_run`` (Lightning: one batch of training and validation, no checkpoint, a
    run to find bugs) the validation, the sampling and the likelihood around it are smoke tests too: at most
    :data:`SMOKE_TEST` samples, examples, solver steps, a coarse ODE tolerance. ``cfg`` otherwise."""
    if not cfg.trainer.get("fast_dev_run"):
        return cfg
    cfg = cfg.copy()
    n, k, steps, tol = (SMOKE_TEST[key] for key in ("samples", "examples", "steps", "tolerance"))

    def cap(key: str, most: float, at_least: bool = False) -> None:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            OmegaConf.update(cfg, key, max(value, most) if at_least else min(value, most), merge=False)

    for key in ("solver", "validation.solver"):
        cap(f"{key}.steps", steps)
        cap(f"{key}.rtol", tol, at_least=True)
        cap(f"{key}.atol", tol, at_least=True)
    cap("num_samples", n)
    cap("validation.num_samples", n)
    cap("validation.bpd_examples", k)
    cap("validation.bound_samples", SMOKE_TEST["bound_samples"])
    cap("likelihood.bound_samples", SMOKE_TEST["bound_samples"])
    cap("likelihood.rtol", tol, at_least=True)
    cap("likelihood.atol", tol, at_least=True)
    OmegaConf.update(cfg, "likelihood.num_examples", min(cfg.likelihood.num_examples or k, k), merge=False)
    if cfg.sample_seeds is not None:
        OmegaConf.update(cfg, "sample_seeds", list(cfg.sample_seeds)[:n], merge=False)
    log.warning("trainer.fast_dev_run: a smoke test (no checkpoint; %d samples, %d likelihood examples, at "
                "most %d solver steps, ODE tolerance >= %g)", n, k, steps, tol)
    return cfg


def prepare_training(cfg: DictConfig) -> TrainingRun:
    """Build every part of the run (data, model, samplers, likelihood settings, trainer) so that a bad
    setting fails in seconds; check the checkpoint to resume against the configured model; claim the
    run directory and check that its folders can be written."""
    cfg = smoke_test_config(cfg)
    run_dir = prepare_run(cfg)
    lock = None if is_secondary_process() else lock_run_dir(run_dir)  # one training run per directory
    try:
        return _prepare_training(cfg, run_dir, lock)
    except BaseException:
        unlock_run_dir(lock)
        raise


def _prepare_training(cfg: DictConfig, run_dir: Path, lock: int | None) -> TrainingRun:
    ckpt_dir = run_dir / CKPT_DIR
    resume = resolve_ckpt_path(cfg.ckpt_path, ckpt_dir)
    if not is_secondary_process():
        check_writable(ckpt_dir, "checkpoint directory")
        if str(cfg.get("logger", "csv")) != "none":
            check_writable(run_dir / "logs", "log directory")
        claim_for_training(run_dir, resume)
    device_of(cfg)  # trainer=gpu on a machine without one: a clear error
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = datamodule_from_config(cfg)
    check_batch_fits_data(dm)
    info = data_info(dm)
    model = score_model_from_config(cfg, info)
    solver = solver_from_config(cfg) if cfg.task.get("sample", True) else None
    likelihood = LikelihoodSettings.from_config(cfg.likelihood) if cfg.task.get("likelihood", True) else None
    settings = run_settings(cfg)
    callbacks: list[pl.Callback] = [ResumeHint(run_dir, ckpt_dir), RecordRunSettings(settings)]
    start = 0
    if resume is not None:
        ckpt = load_checkpoint(resume)
        # every differing setting in one error (model, SDE, loss, optimizer, seed, EMA, data), then weights
        recorded = {**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], **ckpt.get("scoresde_run", {})}}
        current = {**dict(model.hparams), **(settings if "scoresde_run" in ckpt else {})}
        check_same_config(recorded, current, (*RESUME_KEYS, "ema", "data"), resume, "the resumed run")
        check_compatible(ckpt, model, resume)
        start = int(ckpt.get("global_step", 0))
        callbacks.append(ContinueLogs(run_dir / "logs" / "metrics.csv", start))
        log.info("resuming from %s (step %d)", resume, start)
    with config_errors("trainer (with ema and checkpoint)"):
        trainer, ema, ckpt_cb = build_trainer(cfg, run_dir, ckpt_dir, extra_callbacks=callbacks)
    for logger in trainer.loggers:
        if resume is not None and type(logger).__name__ == "TensorBoardLogger" and hasattr(logger, "_kwargs"):
            # TensorBoard drops the interrupted run's events from the checkpoint's step on
            logger._kwargs.setdefault("purge_step", start)
    if not is_secondary_process():
        remove_stale_temporaries(ckpt_dir)  # a killed save's leftovers, once the run is accepted
    write_run_record(cfg)  # Hydra's record and run.log: only now that every check has passed
    return TrainingRun(
        cfg, run_dir, ckpt_dir, dm, info, model, solver, likelihood, resume, trainer, ema, ckpt_cb, lock
    )


def fit(run: TrainingRun) -> float:
    """``trainer.fit`` (from the checkpoint when resuming); returns the wall time in seconds."""
    from contextlib import nullcontext

    from tqdm.contrib.logging import logging_redirect_tqdm

    t0 = time.perf_counter()
    bar_on_terminal = show_progress(run.cfg) and on_terminal()
    try:  # on a terminal, log lines (validation, ...) go above the bar, not through it
        with logging_redirect_tqdm() if bar_on_terminal else nullcontext():
            if getattr(run.model.net, "num_classes", 0):  # class-conditional: (x, y) batches, label dropout
                from scoresde.train.classifier import labelled_loader

                run.trainer.fit(run.model, train_dataloaders=labelled_loader(run.dm, "train", True),
                                val_dataloaders=labelled_loader(run.dm, "val", False), ckpt_path=run.resume)
            else:
                run.trainer.fit(run.model, datamodule=run.dm, ckpt_path=run.resume)
    except TrainingDivergedError:
        log.error("training diverged; nothing after the last checkpoint was written")
        raise
    return time.perf_counter() - t0


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


def training_report(run: TrainingRun, train_seconds: float) -> dict[str, Any]:
    """What training did: steps (and whether ``trainer.max_time`` stopped it), losses, paths."""
    trainer = run.trainer
    max_steps = int(run.cfg.trainer.max_steps)
    stopped_early = trainer.global_step < max_steps and not trainer.fast_dev_run
    if stopped_early and is_global_zero():
        log.warning(
            "training stopped at step %d of %d by trainer.max_time=%s (a slow or busy machine); "
            "the results below are for step %d",
            trainer.global_step,
            max_steps,
            run.cfg.trainer.get("max_time"),
            trainer.global_step,
        )
    return {
        "task": "train",
        "global_step": int(trainer.global_step),
        "max_steps": max_steps,
        "stopped_by_max_time": stopped_early,
        "resumed_from": run.resume,
        "start_step": getattr(run.model, "_fit_start_step", None),
        "train_seconds": train_seconds,
        "ema_updates": run.ema.num_updates if run.ema is not None else 0,
        "train_loss": _metric(trainer, "train/loss"),
        "val_loss": _metric(trainer, "val/loss"),
        "val_bpd": _metric(trainer, "val/bpd"),
        "val_bound_bpd": _metric(trainer, "val/bound_bpd"),
        "checkpoint": run.checkpoint.last_model_path if run.checkpoint is not None else None,
        "num_parameters": sum(p.numel() for p in run.model.net.parameters()),
        "data": plain(run.info),
    }


def sample_after_training(run: TrainingRun, infer: ScoreModel, progress: bool) -> dict[str, Any]:
    """``num_samples`` samples (or ``sample_seeds``) with the EMA weights, written as ``samples.*``."""
    cfg = run.cfg
    n = None if cfg.sample_seeds is not None else int(cfg.num_samples)
    seeds = per_item_seeds(cfg.sample_seeds, n, cfg.seed)
    x, stats = generate(infer, run.solver, seeds, int(cfg.sample_batch_size), progress=progress)
    files = save_samples(
        x, run.run_dir, levels=run.info["levels"], data_range=run.info["data_range"], seeds=seeds
    )
    return {"sampling": {**stats, "solver": repr(run.solver)}, "samples": files}


def likelihood_after_training(run: TrainingRun, infer: ScoreModel, progress: bool) -> dict[str, Any]:
    """Bits/dim (nats for continuous data) of ``likelihood.split`` with the EMA weights."""
    summary, _ = evaluate_likelihood(infer, run.dm, run.likelihood, int(run.cfg.seed), progress=progress)
    log_summary(summary)
    return summary


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Train per ``cfg`` and evaluate; returns the metrics written to ``metrics.json``."""
    run = prepare_training(cfg)
    try:
        return _train_and_evaluate(run)
    finally:
        unlock_run_dir(run.lock)


def _train_and_evaluate(run: TrainingRun) -> dict[str, Any]:
    cfg = run.cfg
    t0 = time.perf_counter()
    train_seconds = fit(run)
    metrics = training_report(run, train_seconds)
    rank, world = rank_and_world()
    if world > 1:
        log.info("process %d of %d: sampling and likelihood are sharded across the processes", rank, world)
    infer = run.ema.averaged_module() if run.ema is not None else run.model
    infer.eval()
    metrics["weights_ema"] = str(run.run_dir / "weights_ema.pt")
    save_inference_weights(infer, run.run_dir / "weights_ema.pt")
    metrics["weights_safetensors"] = str(run.run_dir / "weights_ema.safetensors")
    if is_global_zero():  # the same weights without pickle, configs in the metadata
        save_weights_safetensors(infer, run.run_dir / "weights_ema.safetensors", run.trainer.global_step)
    progress = show_progress(cfg)
    if run.solver is not None:
        metrics.update(sample_after_training(run, infer, progress))
    if run.likelihood is not None:
        metrics["likelihood"] = likelihood_after_training(run, infer, progress)
    metrics["total_seconds"] = time.perf_counter() - t0
    if is_global_zero():  # test metrics and the config (TensorBoard's HParams tab) to the loggers
        log_results(run.trainer.loggers, metrics, plain(cfg), run.trainer.global_step)
    write_json(run.run_dir / "metrics.json", metrics)
    if is_global_zero():
        log.info("results in %s", run.run_dir)
    return metrics


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)
