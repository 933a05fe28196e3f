"""``task=likelihood``: bits/dim of a data split under a checkpoint's EMA weights (probability-flow ODE);
also used after training.

Image data: bits/dim of the discrete data under uniform dequantization
(:func:`scoresde.likelihood.bits_per_dim`).
Continuous data (the 2-D toys): the negative log-likelihood in nats (and nats per dimension).
Example ``i`` uses its own seed (dequantization noise and Hutchinson probes), so the result does not
depend on the batch size or on the number of processes, which share the examples.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from scoresde.train import ScoreModel
from scoresde.train.distributed import chunks, gather_objects, is_global_zero, map_sharded, stack_in_order
from scoresde.train.progress import progress_bar

from .common import per_item_seeds, show_progress, write_json
from .launch import start_from_checkpoint
from .settings import LikelihoodSettings

__all__ = ["LikelihoodSettings", "evaluate_likelihood", "run_likelihood", "summarize"]

log = logging.getLogger(__name__)


def evaluate_likelihood(
    model: ScoreModel,
    dm: Any,
    settings: Mapping[str, Any] | LikelihoodSettings,
    seed: int,
    progress: bool = False,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Per-example bits/dim (discrete data) or NLL in nats (continuous data) of ``settings.split``.
    Returns ``(summary, per_example_values)``; see :func:`summarize`."""
    from scoresde.likelihood import bits_per_dim, log_likelihood

    lcfg = LikelihoodSettings.from_config(settings)
    hp = model.hparams
    levels, data_range = hp.levels, tuple(hp.data_range)
    data = dm.examples(lcfg.split)
    n = len(data) if lcfg.num_examples is None else min(int(lcfg.num_examples), len(data))
    seeds = per_item_seeds(lcfg.seeds, n, seed)
    kwargs = lcfg.solver_kwargs()
    nfe: list[int] = []
    t0 = time.perf_counter()

    def work(mine: list[int]) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        batches = chunks(mine, int(lcfg.batch_size))
        for batch in progress_bar(
            batches,
            desc=f"likelihood ({lcfg.split})",
            enabled=progress and is_global_zero(),
            leave=False,
        ):
            x = data[batch].to(model.device)
            s = [seeds[i] for i in batch]
            if model.is_discrete:
                res = bits_per_dim(
                    model.score_fn, model.sde, x, levels=levels, data_range=data_range, seeds=s, **kwargs
                )
                values = res.bpd
            else:
                res = log_likelihood(model.score_fn, model.sde, x.float(), seeds=s, **kwargs)
                values = -res.logp
            nfe.append(int(res.nfe))
            out.update({i: values[j].detach().double().cpu() for j, i in enumerate(batch)})
        return out

    merged = map_sharded(work, n)
    values = stack_in_order(merged, n)
    all_nfe = [v for part in gather_objects(nfe) for v in part]
    summary = summarize(values, levels, int(np.prod(model.data_shape)))
    summary.update(
        split=lcfg.split,
        num_examples=n,
        nfe_per_batch=float(np.mean(all_nfe)) if all_nfe else 0.0,
        seconds=time.perf_counter() - t0,
        **kwargs,
    )
    if lcfg.bound:
        summary["bound"] = evaluate_bound(model, data, seeds, lcfg, progress)
    return summary, values


def evaluate_bound(model: ScoreModel, data: torch.Tensor, seeds: list[int], lcfg: LikelihoodSettings,
                   progress: bool = False) -> dict[str, Any]:
    """The variational bound (:mod:`scoresde.bound`) of the same examples, with the same per-example seeds
    (so the same dequantization) as the ODE's values: mean and standard error, as :func:`summarize`."""
    from scoresde.bound import bound_bits_per_dim, variational_bound

    hp = model.hparams
    kwargs = {"time_samples": int(lcfg.bound_samples), "eps": float(lcfg.eps)}
    t0 = time.perf_counter()

    def work(mine: list[int]) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for batch in progress_bar(chunks(mine, int(lcfg.batch_size)), desc=f"bound ({lcfg.split})",
                                  enabled=progress and is_global_zero(), leave=False):
            x = data[batch].to(model.device)
            s = [seeds[i] for i in batch]
            if model.is_discrete:
                values = bound_bits_per_dim(model.score_fn, model.sde, x, levels=hp.levels,
                                            data_range=tuple(hp.data_range), seeds=s, **kwargs).bpd
            else:
                values = variational_bound(model.score_fn, model.sde, x.float(), seeds=s, **kwargs).nll
            out.update({i: values[j].detach().double().cpu() for j, i in enumerate(batch)})
        return out

    values = stack_in_order(map_sharded(work, len(seeds)), len(seeds))
    summary = summarize(values, hp.levels, int(np.prod(model.data_shape)))
    summary.update(time_samples=kwargs["time_samples"], seconds=time.perf_counter() - t0)
    if is_global_zero():
        key = "bpd" if "bpd" in summary else "nll_nats"
        log.info("%s variational bound: %s <= %.4f (+- %.4f)", lcfg.split, key, summary[key],
                 summary[f"{key}_sem"])
    return summary


def summarize(values: torch.Tensor, levels: int | None, dims: int) -> dict[str, Any]:
    """Mean and standard error over the finite values; the count of non-finite ones is reported (an ODE
    that diverges for some example must not silently poison or vanish from the mean). ``levels``: those of
    discrete data (bits/dim), None for continuous data (nats)."""
    finite = torch.isfinite(values)
    good = values[finite]
    n_bad = int((~finite).sum())
    mean = float(good.mean()) if good.numel() else math.nan
    sem = float(good.std(unbiased=True) / math.sqrt(good.numel())) if good.numel() > 1 else math.nan
    if n_bad:
        log.warning(
            "%d of %d likelihoods are not finite (the ODE diverged); they are left out of the mean",
            n_bad,
            values.numel(),
        )
    if levels is not None:
        return {"bpd": mean, "bpd_sem": sem, "levels": levels, "num_nonfinite": n_bad}
    return {"nll_nats": mean, "nll_nats_sem": sem, "nll_nats_per_dim": mean / dims, "num_nonfinite": n_bad}


def log_summary(summary: dict[str, Any]) -> None:
    """One log line: the split's bits/dim (or nats) with its standard error (rank 0)."""
    if is_global_zero():
        key = "bpd" if "bpd" in summary else "nll_nats"
        log.info("%s %s = %.4f (+- %.4f)", summary["split"], key, summary[key], summary[f"{key}_sem"])


def run_likelihood(cfg: DictConfig) -> dict[str, Any]:
    """Bits/dim (or NLL) of ``likelihood.split`` under ``ckpt_path``."""
    run_dir, model, dm = start_from_checkpoint(cfg)
    settings = LikelihoodSettings.from_config(cfg.likelihood)
    summary, values = evaluate_likelihood(model, dm, settings, int(cfg.seed), progress=show_progress(cfg))
    metrics = {"task": "likelihood", "ckpt_path": str(cfg.ckpt_path), "likelihood": summary}
    write_json(run_dir / "metrics.json", metrics)
    if is_global_zero():
        torch.save({"values": values, "summary": summary}, Path(run_dir) / "likelihood.pt")
    log_summary(summary)
    return metrics
