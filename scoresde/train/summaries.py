"""A run's results in the experiment loggers (TensorBoard, W&B, CSV): the test metrics as scalars at the
final step, and, for TensorBoard's HParams tab, the run's whole config as hyper-parameters with those
metrics attached (so runs of a sweep can be compared side by side)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["log_results", "result_scalars"]


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def result_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``test/bpd`` (and ``test/bpd_sem``), ``test/bound_bpd`` from a run's ``likelihood`` results (nats
    per dimension for continuous data: ``test/nll_per_dim``), and the mean of every sample-quality
    metric of ``quality`` (``test/fid``, ``test/kid``, ...) when the samples were evaluated."""
    out: dict[str, float] = {}
    like = metrics.get("likelihood") or {}
    unit = "bpd" if like.get("levels") is not None or "bpd" in like else "nll_per_dim"
    for key, name in ((unit, unit), (f"{unit}_sem", f"{unit}_sem")):
        if (v := _number(like.get(key))) is not None:
            out[f"test/{name}"] = v
    bound = like.get("bound") or {}
    for key in ("bpd", "nll_per_dim"):
        if (v := _number(bound.get(key))) is not None:
            out[f"test/bound_{key}"] = v
    for key, value in (metrics.get("quality") or {}).items():
        if isinstance(value, Mapping) and (v := _number(value.get("mean"))) is not None:
            out[f"test/{key}"] = v
    return out


def log_results(loggers: list, metrics: Mapping[str, Any], config: Mapping[str, Any], step: int) -> dict:
    """Log :func:`result_scalars` of ``metrics`` at ``step`` to each logger, and ``config`` (the run's
    composed config, nested) as its hyper-parameters with those metrics (TensorBoard: the HParams tab).
    Returns the scalars."""
    scalars = result_scalars(metrics)
    for logger in loggers:
        if type(logger).__name__ == "TensorBoardLogger":
            logger.log_hyperparams(dict(config), metrics=scalars)  # HParams entry + the scalars
        else:
            logger.log_hyperparams(dict(config))
            if scalars:
                logger.log_metrics(scalars, step=int(step))
        logger.save()
    return scalars
