"""What a sweep optimizes: ``optimized_metric`` names one number of a task's metrics (dotted, e.g.
``likelihood.bpd``); the app then returns that number -- what Hydra's Optuna sweeper minimizes or
maximizes -- instead of the metrics dict (lightning-hydra-template's convention)."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .common import ConfigError

__all__ = ["metric_value", "optimized_value"]


def _numbers(metrics: Any, prefix: str = "") -> list[str]:
    if isinstance(metrics, dict):
        return [k for key, v in metrics.items() for k in _numbers(v, f"{prefix}{key}.")]
    return [prefix[:-1]] if isinstance(metrics, int | float) and not isinstance(metrics, bool) else []


def metric_value(metrics: dict[str, Any], key: str) -> float:
    """The number at dotted ``key`` of ``metrics``; a :class:`ConfigError` listing the numeric keys when
    there is none (a NaN value is returned as is: the sweeper records the trial as failed)."""
    value: Any = metrics
    for part in str(key).split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"optimized_metric={key}: the task's metrics have no number there; choose one of "
            + ", ".join(_numbers(metrics))
        )
    return float(value) if math.isfinite(value) else math.nan


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | dict[str, Any]:
    """``metrics`` when ``optimized_metric`` is null, else the value it names."""
    key = OmegaConf.select(cfg, "optimized_metric", default=None)
    return metrics if key is None else metric_value(metrics, key)
