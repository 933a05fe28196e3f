"""What the task functions share: validating the config, building the data module, the model and the solver
from it, threads, seeds and writing results (the Lightning trainer: :mod:`scoresde.tasks.trainer`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from scoresde.train import ScoreModel
from scoresde.train.build import adapt_network_config, instantiate, plain
from scoresde.train.distributed import is_global_zero

__all__ = [
    "ConfigError",
    "build_datamodule",
    "build_score_model",
    "build_solver",
    "data_info",
    "output_dir",
    "per_item_seeds",
    "set_threads",
    "validate_config",
    "write_json",
]

log = logging.getLogger(__name__)

#: seeds of item i (sample or example) default to seed * SEED_STRIDE + i
SEED_STRIDE = 1_000_000


class ConfigError(ValueError):
    """An invalid config value (the message names the key)."""


# ---------------------------------------------------------------------------------------------- config
def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def validate_config(cfg: DictConfig) -> None:
    """Fail fast, before anything runs, on values that would fail later or silently misbehave."""
    problems: list[str] = []

    def need(key: str, ok, what: str, allow_none: bool = False) -> None:
        value = _get(cfg, key)
        if value is None and allow_none:
            return
        try:
            good = value is not None and ok(value)
        except (TypeError, ValueError):
            good = False
        if not good:
            problems.append(f"{key}={value!r}: {what}")

    need("module.lr", lambda v: float(v) > 0, "the learning rate must be > 0")
    need("module.warmup_steps", lambda v: int(v) >= 0, "must be >= 0")
    need("module.adam_eps", lambda v: float(v) > 0, "must be > 0")
    need("module.weight_decay", lambda v: float(v) >= 0, "must be >= 0")
    need("ema.decay", lambda v: 0 <= float(v) < 1, "the EMA decay must lie in [0, 1)", allow_none=True)
    need("trainer.max_steps", lambda v: int(v) >= 1, "the number of training steps must be >= 1")
    need(
        "trainer.gradient_clip_val",
        lambda v: float(v) >= 0,
        "must be >= 0 (0 or null: no clipping)",
        allow_none=True,
    )
    need("trainer.val_check_interval", lambda v: float(v) > 0, "must be > 0", allow_none=True)
    need("trainer.devices", lambda v: v == "auto" or int(v) >= 1, "must be >= 1 or auto")
    need("checkpoint.every_n_steps", lambda v: int(v) >= 1, "must be >= 1")
    need("num_samples", lambda v: int(v) >= 1, "must be >= 1")
    need("sample_batch_size", lambda v: int(v) >= 1, "must be >= 1")
    need("likelihood.batch_size", lambda v: int(v) >= 1, "must be >= 1")
    need("likelihood.num_examples", lambda v: int(v) >= 1, "must be >= 1 (null: all)", allow_none=True)
    need("likelihood.rtol", lambda v: float(v) > 0, "must be > 0")
    need("likelihood.atol", lambda v: float(v) > 0, "must be > 0")
    need("likelihood.split", lambda v: v in ("train", "val", "test"), "must be train, val or test")
    need("validation.num_samples", lambda v: int(v) >= 1, "must be >= 1")
    need("validation.sample_every", lambda v: int(v) >= 1, "must be >= 1")
    need("validation.bpd_examples", lambda v: int(v) >= 0, "must be >= 0")
    need("threads", lambda v: int(v) >= 1, "must be >= 1 (null: automatic)", allow_none=True)
    need("progress_bar_refresh_rate", lambda v: int(v) >= 0, "must be >= 0")
    need("solver.steps", lambda v: int(v) >= 1, "the number of solver steps must be >= 1", allow_none=True)
    need("validation.solver.steps", lambda v: int(v) >= 1, "must be >= 1", allow_none=True)
    if _get(cfg, "task.name") == "evaluate":
        need("task.seed_sets", lambda v: int(v) >= 1, "must be >= 1 (>= 2 to measure the spread)")
        need("task.kid_subset_size", lambda v: int(v) >= 2, "must be >= 2")
        need("task.kid_subsets", lambda v: int(v) >= 1, "must be >= 1")
        need("task.memorization_percentile", lambda v: 0 < float(v) < 100, "must lie in (0, 100)")
        need("task.reference_split", lambda v: v in ("train", "val", "test"), "must be train, val or test")
        need("task.batch_size", lambda v: int(v) >= 1, "must be >= 1")
    seeds = _get(cfg, "sample_seeds")
    if seeds is not None and (not OmegaConf.is_list(seeds) or len(seeds) == 0):
        problems.append(f"sample_seeds={seeds!r}: must be a non-empty list of integers, e.g. [3, 17]")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def output_dir(cfg: DictConfig) -> Path:
    """The run directory (Hydra's ``runtime.output_dir``; the working directory outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except ImportError:  # pragma: no cover
        pass
    return Path(_get(cfg, "output_dir") or os.getcwd())


def set_threads(cfg: DictConfig, processes: int = 1) -> int:
    """``torch.set_num_threads``: ``threads`` if set, else the cores divided among the local processes."""
    n = _get(cfg, "threads")
    if n is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n = max(1, cores // max(1, processes))
    torch.set_num_threads(int(n))
    return int(n)


def local_processes(cfg: DictConfig) -> int:
    """How many processes this node runs (``trainer.devices`` for DDP)."""
    devices = _get(cfg, "trainer.devices", 1)
    strategy = str(_get(cfg, "trainer.strategy", "auto"))
    if devices == "auto" or not strategy.startswith("ddp"):
        return 1
    return int(devices)


def per_item_seeds(explicit: Any, n: int | None, seed: int) -> list[int]:
    """Per-item seeds: the explicit list, else ``seed * 1_000_000 + i`` for ``i < n``."""
    if explicit is not None:
        seeds = [int(s) for s in explicit]
        if n is not None and len(seeds) != n:
            raise ConfigError(f"got {len(seeds)} explicit seeds for {n} items")
        return seeds
    return [int(seed) * SEED_STRIDE + i for i in range(int(n))]


# ---------------------------------------------------------------------------------------------- building
def build_datamodule(cfg: DictConfig):
    """The configured data module, set up (splits loaded)."""
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm


def data_info(dm) -> dict[str, Any]:
    """Per-example shape, quantization levels (None: continuous) and the model-space range."""
    levels = getattr(dm, "levels", None)
    return {
        "shape": tuple(int(s) for s in dm.shape),
        "levels": None if levels is None else int(levels),
        "data_range": tuple(float(v) for v in getattr(dm, "data_range", (-1.0, 1.0))),
    }


def build_score_model(cfg: DictConfig, info: dict[str, Any]) -> ScoreModel:
    """A fresh ScoreModel for data described by ``info`` (see :func:`data_info`)."""
    m = plain(cfg.module)
    val = plain(cfg.validation)
    return ScoreModel(
        net=adapt_network_config(plain(cfg.model), info["shape"]),
        sde=plain(cfg.sde),
        parameterization=m["parameterization"],
        loss=m["loss"],
        lr=m["lr"],
        betas=m["betas"],
        adam_eps=m["adam_eps"],
        weight_decay=m["weight_decay"],
        warmup_steps=m["warmup_steps"],
        seed=cfg.seed,
        data_shape=info["shape"],
        levels=info["levels"],
        data_range=info["data_range"],
        val_solver=val.get("solver"),
        val_num_samples=val["num_samples"],
        val_sample_every=val["sample_every"],
        val_bpd_examples=val["bpd_examples"],
        val_bpd_rtol=val["bpd_rtol"],
    )


def build_solver(cfg: DictConfig):
    """The configured sampler (``solver`` group)."""
    return instantiate(cfg.solver)


# ---------------------------------------------------------------------------------------------- output
def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (rank 0 only)."""
    if not is_global_zero():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
