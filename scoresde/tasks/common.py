"""What the task functions share: checking the config, building the data module, the model and the
solver from it, threads, seeds and writing results (the Lightning trainer: :mod:`scoresde.tasks.trainer`).

Each object checks its own settings in its constructor (the one place a rule is written);
:func:`config_errors` turns such a failure into a :class:`ConfigError` naming the config block. Only the
app's own keys, which no object takes, are checked here (:func:`validate_config`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from scoresde.train import ScoreModel
from scoresde.train.build import adapt_network_config, instantiate, plain
from scoresde.train.distributed import is_global_zero

from .settings import LikelihoodSettings

__all__ = [
    "SEED_STRIDE",
    "ConfigError",
    "Terminated",
    "check_batch_fits_data",
    "check_keys",
    "config_errors",
    "data_info",
    "datamodule_from_config",
    "output_dir",
    "per_item_seeds",
    "score_model_from_config",
    "sde_from_config",
    "set_threads",
    "show_progress",
    "solver_from_config",
    "terminate_like_ctrl_c",
    "validate_config",
    "write_json",
]

log = logging.getLogger(__name__)

#: seeds of item i (sample or example) default to seed * SEED_STRIDE + i
SEED_STRIDE = 1_000_000


class ConfigError(ValueError):
    """An invalid config value (the message names the key)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler ending the job), raised by the handler that
    :func:`terminate_like_ctrl_c` installs: the run stops as on Ctrl-C (exit status 1, where the last
    checkpoint is and how to resume) instead of Lightning's silent exit with status 0."""


def terminate_like_ctrl_c() -> bool:
    """Make SIGTERM raise :class:`Terminated` -- only where SIGTERM has its default action (under
    submitit, which handles SIGTERM and requeues on SIGUSR2 itself, nothing changes); True if installed."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False

    def raise_terminated(signum, frame):
        raise Terminated(f"terminated (signal {signum}, SIGTERM)")

    signal.signal(signal.SIGTERM, raise_terminated)
    return True


# ---------------------------------------------------------------------------------------------- config
def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


@contextmanager
def config_errors(block: str) -> Iterator[None]:
    """Turn the error of a constructor that rejects its settings (``ValueError``/``TypeError``, or
    Lightning's ``MisconfigurationException``) into a :class:`ConfigError` naming the config ``block``."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from scoresde.data.errors import DataFormatError, DataNotFoundError

    try:
        yield
    except (ConfigError, DataFormatError, DataNotFoundError):
        raise
    except (ValueError, TypeError, MisconfigurationException) as err:
        raise ConfigError(f"invalid configuration: {block}: {err}") from err


def _int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


#: a rule for :func:`check_keys`: ``(key, ok(value) -> bool, what is required[, None allowed])``
Rule = tuple

#: the app's own keys (no object takes them), and the Lightning Trainer arguments that its constructor does
#: not check (a negative clipping norm would flip the gradients, a zero interval fails mid-training)
APP_RULES: tuple[Rule, ...] = (
    ("seed", lambda v: _int(v) >= 0, "the seed must be an integer >= 0"),
    ("trainer.max_steps", lambda v: _int(v) >= 1, "the number of training steps must be >= 1"),
    ("trainer.gradient_clip_val", lambda v: float(v) >= 0, "must be >= 0 (0 or null: no clipping)", True),
    ("trainer.val_check_interval", lambda v: float(v) > 0, "must be > 0", True),
    ("num_samples", lambda v: _int(v) >= 1, "must be >= 1"),
    ("sample_batch_size", lambda v: _int(v) >= 1, "must be >= 1"),
    ("threads", lambda v: _int(v) >= 1, "must be >= 1 (null: automatic)", True),
    ("progress_bar_refresh_rate", lambda v: _int(v) >= 0, "must be >= 0"),
    (
        "sample_seeds",
        lambda v: OmegaConf.is_list(v) and len(v) > 0 and all(_int(s) >= 0 for s in v),
        "must be a non-empty list of integer seeds >= 0, e.g. [3, 17]",
        True,
    ),
)


def check_keys(cfg: DictConfig, rules: tuple[Rule, ...]) -> None:
    """A :class:`ConfigError` listing every key of ``cfg`` that breaks its rule."""
    problems = []
    for key, ok, what, *none_allowed in rules:
        value = _get(cfg, key)
        if value is None and none_allowed and none_allowed[0]:
            continue
        try:
            good = value is not None and ok(value)
        except (TypeError, ValueError):
            good = False
        if not good:
            problems.append(f"{key}={value!r}: {what}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def validate_config(cfg: DictConfig) -> None:
    """Fail fast on the app's own keys (those no object takes), on required keys left unset (``???``) and
    on the settings of the cheap objects a run builds (SDE, samplers, likelihood, data module); the
    network and the trainer are checked when the training task builds them, before the first step."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not str(k).startswith("hydra"))
    if missing:
        raise ConfigError(
            "required setting(s) not given: "
            + ", ".join(missing)
            + "; set them on the command line, e.g. "
            + " ".join(f"{k}=<value>" for k in missing)
            + (" (data.root: the directory of the data set)" if "data.root" in missing else "")
        )
    check_keys(cfg, APP_RULES)
    check_global_batch(cfg)
    with config_errors("likelihood"):
        LikelihoodSettings.from_config(cfg.likelihood)
    sde_from_config(cfg)
    if _get(cfg, "solver") is not None:
        solver_from_config(cfg)
    if _get(cfg, "validation.solver") is not None:
        solver_from_config(cfg, "validation.solver")
    with config_errors("data"):
        instantiate(cfg.data)


def check_global_batch(cfg: DictConfig) -> None:
    """``data.batch_size`` (and ``data.eval_batch_size``) are global: under DDP they must divide evenly."""
    from scoresde.data.base import per_process_batch_size

    try:
        world = local_processes(cfg) * int(_get(cfg, "trainer.num_nodes", 1) or 1)
    except (TypeError, ValueError):
        return  # an invalid trainer.devices / num_nodes is reported on its own
    for key in ("data.batch_size", "data.eval_batch_size"):
        value = _get(cfg, key)
        if isinstance(value, int) and value >= 1:
            try:
                per_process_batch_size(value, world, key)
            except ValueError as err:
                raise ConfigError(f"invalid configuration:\n  {err}") from None


def show_progress(cfg: DictConfig) -> bool:
    """Whether the run shows progress bars: ``progress_bar_refresh_rate`` > 0 (0 silences every bar: training,
    sampling, likelihood)."""
    return int(_get(cfg, "progress_bar_refresh_rate", 20) or 0) > 0


def check_batch_fits_data(dm) -> None:
    """A training batch larger than the training split is an error (each step would silently see only the
    whole split, a smaller batch than configured)."""
    n = dm.num_examples("train")
    if int(dm.batch_size) > n:
        raise ConfigError(
            f"invalid configuration:\n  data.batch_size={dm.batch_size} is larger than the training split "
            f"({n} examples); use data.batch_size <= {n} or more training data"
        )


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
    """Per-item seeds: the explicit list, else ``seed * SEED_STRIDE + i`` for ``i < n``."""
    if explicit is not None:
        seeds = [int(s) for s in explicit]
        if n is not None and len(seeds) != n:
            raise ConfigError(f"got {len(seeds)} explicit seeds for {n} items")
        return seeds
    return [int(seed) * SEED_STRIDE + i for i in range(int(n))]


# ---------------------------------------------------------------------------------------------- building
def sde_from_config(cfg: DictConfig):
    """The SDE of the ``sde`` block."""
    with config_errors("sde"):
        return instantiate(cfg.sde)


def solver_from_config(cfg: DictConfig, key: str = "solver"):
    """The sampler of the ``solver`` block (or of another block, e.g. ``validation.solver``)."""
    with config_errors(key):
        return instantiate(OmegaConf.select(cfg, key))


def datamodule_from_config(cfg: DictConfig):
    """The data module of the ``data`` block, set up (splits loaded)."""
    with config_errors("data"):
        dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm


def data_info(dm) -> dict[str, Any]:
    """Per-example shape, quantization levels (None: continuous) and the model-space range."""
    return {
        "shape": tuple(int(s) for s in dm.shape),
        "levels": int(dm.levels) if dm.is_discrete else None,
        "data_range": tuple(float(v) for v in getattr(dm, "data_range", (-1.0, 1.0))),
    }


def score_model_from_config(cfg: DictConfig, info: dict[str, Any]) -> ScoreModel:
    """A fresh ScoreModel from the ``module`` block (``_target_``) with the ``model``, ``sde`` and
    ``validation`` blocks, for data described by ``info`` (see :func:`data_info`)."""
    with config_errors("model"):
        net = adapt_network_config(plain(cfg.model), info["shape"])
    with config_errors("module"):
        return instantiate(
            cfg.module,
            net=net,
            sde=plain(cfg.sde),
            validation=plain(cfg.validation),
            seed=int(cfg.seed),
            data_shape=info["shape"],
            levels=info["levels"],
            data_range=info["data_range"],
        )


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
