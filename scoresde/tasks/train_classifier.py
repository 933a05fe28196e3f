"""``task=train_classifier``: fit a noise-conditional classifier ``p_t(y | x_t)`` (for classifier
guidance) on the labelled data perturbed by the configured SDE, with the same Lightning trainer,
checkpointing and logging as ``task=train``.

Run directory: ``checkpoints/last.ckpt`` (resumable with ``ckpt_path=last``), ``classifier.pt`` (the
EMA weights + configs, loadable with :func:`scoresde.train.classifier.load_classifier`) and
``metrics.json`` (held-out accuracy on nearly clean data and at random times).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from scoresde.train.build import adapt_network_config, plain
from scoresde.train.checkpoint import resolve_ckpt_path
from scoresde.train.classifier import ClassifierModel, labelled_loader, save_classifier

from .common import check_batch_fits_data, data_info, datamodule_from_config, write_json
from .launch import prepare_run
from .record import write_run_record
from .rundir import check_writable, claim_for_training, is_secondary_process, remove_stale_temporaries
from .trainer import build_trainer

__all__ = ["run_train_classifier"]

log = logging.getLogger(__name__)


def run_train_classifier(cfg: DictConfig) -> dict[str, Any]:
    """Train the classifier of ``cfg.task.classifier``; returns the metrics written to ``metrics.json``."""
    run_dir = prepare_run(cfg)
    ckpt_dir = run_dir / "checkpoints"
    resume = resolve_ckpt_path(cfg.ckpt_path, ckpt_dir)
    if not is_secondary_process():  # the same run-directory rules as task=train: nothing is overwritten
        check_writable(ckpt_dir, "checkpoint directory")
        claim_for_training(run_dir, resume)
        remove_stale_temporaries(ckpt_dir)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = datamodule_from_config(cfg)
    check_batch_fits_data(dm)
    info = data_info(dm)
    train_loader, val_loader = labelled_loader(dm, "train", True), labelled_loader(dm, "test", False)
    task = plain(cfg.task)
    net = adapt_network_config(task["classifier"], info["shape"])
    net["num_classes"] = int(dm.labels("train").max()) + 1
    model = ClassifierModel(net, plain(cfg.sde), lr=task["lr"], weight_decay=task["weight_decay"],
                            warmup_steps=task["warmup_steps"], eps=task["eps"], seed=int(cfg.seed))
    trainer, ema, _ = build_trainer(cfg, run_dir, ckpt_dir)
    write_run_record(cfg)  # Hydra's record and run.log: only now that the checks have passed
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=resume)
    infer = ema.averaged_module() if ema is not None else model
    infer.eval()
    results = trainer.validate(infer, dataloaders=val_loader, verbose=False)[0]
    path = run_dir / "classifier.pt"
    save_classifier(infer, path, data_shape=list(info["shape"]))
    metrics = {"task": "train_classifier", "global_step": int(trainer.global_step),
               "train_seconds": time.perf_counter() - t0, "classifier": str(path),
               "num_classes": net["num_classes"], **{k: float(v) for k, v in results.items()}}
    write_json(run_dir / "metrics.json", metrics)
    log.info("classifier: test accuracy %.3f at t = eps, %.3f at random t; weights in %s",
             metrics.get("val/acc_t0", float("nan")), metrics.get("val/acc", float("nan")), path)
    return metrics
