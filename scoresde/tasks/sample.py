"""``task=sample``: draw samples from a checkpoint's EMA weights; also used after training.

Sample ``i`` is drawn from its own seed (``seed * SEED_STRIDE + i``, or ``sample_seeds[i]``). With the ODE
and ``per_example=true`` it is the same bit for bit whatever the batch size or the number of processes;
with EM and PC (noise from the sample's own seed) up to the float rounding of the network's batched matrix
products, which differs with the number of rows (docs/app.md). Under several processes the samples are sharded
across ranks and gathered on every rank, and rank 0 writes the files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from scoresde.evaluation.samples import write_samples_folder, write_samples_npz
from scoresde.train import ScoreModel
from scoresde.train.distributed import chunks, gather_objects, is_global_zero, map_sharded, stack_in_order
from scoresde.train.images import save_samples_png
from scoresde.train.progress import on_terminal, progress_bar

from .common import ConfigError, per_item_seeds, show_progress, solver_from_config, write_json
from .launch import start_from_checkpoint

__all__ = ["generate", "run_sample", "save_samples"]

log = logging.getLogger(__name__)


def generate(
    model: ScoreModel, solver: Any, seeds: list[int], batch_size: int = 512, progress: bool = False,
    score_for: Callable[[list[int]], Callable] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``len(seeds)`` samples (``(N, *data_shape)``, model space, CPU) from ``model``'s score with
    ``solver``; sample ``i`` depends only on ``seeds[i]``. Returns the samples and statistics
    (mean score evaluations per batch, wall time). ``score_for(indices)``: the score to draw the samples
    of those indices with (e.g. guided towards their labels; default: the model's own)."""
    if model.data_shape is None:
        raise ValueError("the model does not know its data shape (data_shape=None); cannot sample")
    shape = model.data_shape
    nfe: list[int] = []
    t0 = time.perf_counter()

    def work(mine: list[int]) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        batches = chunks(mine, batch_size)
        show = progress and is_global_zero()
        for batch in progress_bar(batches, desc="sampling", enabled=show and len(batches) > 1, leave=False):
            with torch.no_grad():
                x = solver.sample(
                    model.score_fn if score_for is None else score_for(batch),
                    model.sde,
                    (len(batch), *shape),
                    seeds=[seeds[i] for i in batch],
                    device=model.device,
                    progress=show and on_terminal(),  # the solver's per-step bar: on a terminal only
                )
            nfe.append(int(solver.nfe))
            out.update({i: x[j].cpu() for j, i in enumerate(batch)})
        return out

    merged = map_sharded(work, len(seeds))
    all_nfe = [n for part in gather_objects(nfe) for n in part]
    stats = {
        "nfe_per_batch": float(np.mean(all_nfe)) if all_nfe else 0.0,
        "seconds": time.perf_counter() - t0,
        "num_samples": len(seeds),
    }
    return stack_in_order(merged, len(seeds)), stats


def save_samples(
    x: torch.Tensor,
    run_dir: Path,
    *,
    levels: int | None,
    data_range: tuple[float, float],
    seeds: list[int],
    stem: str = "samples",
) -> dict[str, str]:
    """Write ``<stem>.png`` (grid or scatter), ``<stem>.pt`` (float tensor, model space) and
    ``<stem>.npz`` (images: ``samples`` uint8 NHWC 0-255 as the paper's code; extras under other keys, see
    :func:`~scoresde.evaluation.samples.write_samples_npz`). Rank 0 only; returns the paths."""
    if not is_global_zero():
        return {}
    run_dir.mkdir(parents=True, exist_ok=True)
    png = save_samples_png(x, run_dir / f"{stem}.png", levels=levels, data_range=data_range)
    pt = run_dir / f"{stem}.pt"
    torch.save({"samples": x, "seeds": seeds, "levels": levels, "data_range": list(data_range)}, pt)
    npz = write_samples_npz(run_dir / f"{stem}.npz", x, levels=levels, data_range=data_range, seeds=seeds)
    return {"png": str(png), "pt": str(pt), "npz": str(npz)}


def check_png_export(model: ScoreModel, folder: Path) -> None:
    """Before sampling, that ``export_png=true`` can write ``folder``: image data, no PNG files there."""
    if len(model.data_shape or ()) != 3 or model.hparams.levels is None:
        raise ConfigError(f"export_png=true writes images; this model's data have shape {model.data_shape}: "
                          "leave export_png=false (samples.npz holds the samples)")
    if folder.is_dir() and any(folder.glob("*.png")):
        raise ConfigError(f"export_png=true: {folder} already holds PNG files; choose another hydra.run.dir")


def run_sample(cfg: DictConfig) -> dict[str, Any]:
    """Sample ``num_samples`` (or ``len(sample_seeds)``) images from ``ckpt_path`` with ``solver``."""
    run_dir, model, _ = start_from_checkpoint(cfg, load_data=False)
    solver = solver_from_config(cfg)
    n = len(cfg.sample_seeds) if cfg.sample_seeds is not None else int(cfg.num_samples)
    seeds = per_item_seeds(cfg.sample_seeds, n, cfg.seed)
    if cfg.get("condition") is not None and cfg.condition.kind != "none":  # condition=class|cfg|inpaint|...
        if cfg.get("export_png"):
            raise ConfigError("export_png=true writes unconditional samples; leave it out with condition=...")
        from .condition import run_condition

        metrics = {"task": "sample", "ckpt_path": str(cfg.ckpt_path), "solver": repr(solver),
                   "condition": run_condition(cfg, model, solver, run_dir)}
        write_json(run_dir / "metrics.json", metrics)
        return metrics
    if cfg.get("export_png"):
        check_png_export(model, run_dir / "samples")
    log.info("sampling %d with %r from %s", n, solver, cfg.ckpt_path)
    x, stats = generate(model, solver, seeds, int(cfg.sample_batch_size), progress=show_progress(cfg))
    hp = model.hparams
    paths = save_samples(x, run_dir, levels=hp.levels, data_range=tuple(hp.data_range), seeds=seeds)
    if cfg.get("export_png") and is_global_zero():  # samples/000000.png, ...: the FID tools' folder layout
        write_samples_folder(run_dir / "samples", x, levels=hp.levels, data_range=tuple(hp.data_range))
        paths["folder"] = str(run_dir / "samples")
    metrics = {
        "task": "sample",
        "ckpt_path": str(cfg.ckpt_path),
        "solver": repr(solver),
        "sampling": stats,
        "files": paths,
    }
    write_json(run_dir / "metrics.json", metrics)
    if is_global_zero():
        log.info("wrote %s", paths.get("png"))
    return metrics
