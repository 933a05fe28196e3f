"""``task=evaluate``: sample quality (and bits/dim) of a checkpoint's EMA weights.

``task.seed_sets`` disjoint sets of ``num_samples`` per-sample seeds are drawn (set ``k``, sample ``i``:
seed ``seed * SEED_STRIDE + k * num_samples + i``; set 0 is exactly what ``task=sample`` draws), so every
sample is reproducible on its own and the result does not depend on batching or the number of processes.

* Image data: the samples are quantized exactly like the data (``uint8`` in ``[0, levels)``) before any
  feature is computed. FID and KID (torchmetrics) are computed per seed set against the reference statistics
  of ``task.reference_split`` in the feature network's space (cached per reference images -- by their content
  hash, not the data set's name -- and network, recomputed when the network changed); IS and the classifier
  confidence when the network has class logits; memorisation (the fraction of samples closer to a training
  image than the 5th percentile of test-to-train distances) in pixel space. Each metric is reported as its
  values over the seed sets with their mean and standard deviation; ``task.compare_to`` names another run's
  ``metrics.json`` and the output says whether the two differ by more than that spread.
  ``task.reference_stats`` replaces the computed reference by a statistics file (ours, pytorch-fid's
  ``mu``/``sigma`` ``.npz`` or the paper's ``cifar10_stats.npz`` with ``pool_3``) computed with the same
  feature network; KID needs the reference features (ours, ``pool_3``), so with ``mu``/``sigma`` alone only
  FID is reported.
* Continuous data (toy2d): sliced Wasserstein-2 and MMD to fresh draws of the data distribution, beside the
  same distances between two fresh draws (the floor a perfect sampler reaches).
* Bits/dim of ``likelihood.split`` (``task.likelihood``), as ``task=likelihood``.
* ``condition=class|cfg|inpaint|colorize``: conditional samples instead (guidance accuracy and per-class
  FID/KID, or the error and FID/KID of completions), see :mod:`scoresde.tasks.condition_evaluate`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from scoresde.evaluation import SpreadResult, compare, mmd_rbf, sliced_wasserstein
from scoresde.train.build import plain
from scoresde.train.distributed import is_global_zero
from scoresde.train.summaries import log_results

from .common import ConfigError, check_keys, show_progress, solver_from_config, write_json
from .condition_evaluate import evaluate_condition
from .launch import start_from_checkpoint
from .likelihood import LikelihoodSettings, evaluate_likelihood
from .quality import (
    evaluation_seed_sets,
    external_reference,
    feature_network,
    image_quality,
    split_images,
    spread_dict,
)
from .sample import generate, save_samples
from .trainer import build_loggers

__all__ = [
    "check_evaluation_inputs", "compare_to", "evaluation_seed_sets", "feature_network", "image_quality",
    "read_compare_to", "run_evaluate", "split_images", "toy_quality",
]

log = logging.getLogger(__name__)


#: the fresh data draws of seed set k come from the generator seeded
#: ``seed * FRESH_DATA_SEED_STRIDE + 2k + 1``, a stream apart from the samples' seeds
FRESH_DATA_SEED_STRIDE = 7919


#: the ``task`` block of ``task=evaluate`` (no object takes these keys, so they are checked here)
EVALUATE_RULES = (
    ("task.seed_sets", lambda v: int(v) >= 1, "must be >= 1 (>= 2 to measure the spread)"),
    ("task.kid_subset_size", lambda v: int(v) >= 2, "must be >= 2"),
    ("task.kid_subsets", lambda v: int(v) >= 1, "must be >= 1"),
    ("task.memorization_percentile", lambda v: 0 < float(v) < 100, "must lie in (0, 100)"),
    ("task.reference_split", lambda v: v in ("train", "val", "test"), "must be train, val or test"),
    ("task.batch_size", lambda v: int(v) >= 1, "must be >= 1"),
)


def toy_quality(
    sample_sets: list[torch.Tensor], dm: Any, seed: int = 0, num_projections: int = 500
) -> dict[str, Any]:
    """Sliced W2 and MMD of each seed set to fresh data, and the same between two fresh draws (floor)."""
    sw, mmd, sw_floor, mmd_floor = [], [], [], []
    for k, x in enumerate(sample_sets):
        g = torch.Generator().manual_seed(int(seed) * FRESH_DATA_SEED_STRIDE + 2 * k + 1)
        fresh, fresh2 = dm.sample(len(x), g).double(), dm.sample(len(x), g).double()
        x = x.reshape(len(x), -1).double()
        sw.append(sliced_wasserstein(x, fresh, num_projections, torch.Generator().manual_seed(k)))
        sw_floor.append(sliced_wasserstein(fresh2, fresh, num_projections, torch.Generator().manual_seed(k)))
        mmd.append(mmd_rbf(x, fresh))
        mmd_floor.append(mmd_rbf(fresh2, fresh))
    return {
        "sliced_w2": spread_dict(sw, "sliced W2"),
        "sliced_w2_floor": spread_dict(sw_floor, "sliced W2 floor"),
        "mmd": spread_dict(mmd, "MMD"),
        "mmd_floor": spread_dict(mmd_floor, "MMD floor"),
        "note": "floor: the same distance between two fresh draws of the data (a perfect sampler's value)",
    }


def read_compare_to(path: str | Path) -> dict[str, Any]:
    """The metrics of ``task.compare_to`` (another evaluate run's ``metrics.json``); a :class:`ConfigError`
    when the file is missing or not such a file."""
    path = Path(path).expanduser()
    try:
        other = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"task.compare_to: no such file {path} (give the metrics.json of an evaluate run)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"task.compare_to: {path} is not a readable JSON file ({err})") from None
    if not isinstance(other, dict) or "quality" not in other:
        raise ConfigError(f"task.compare_to: {path} holds no 'quality' results (give the metrics.json of an "
                          "evaluate run)")
    return other


def check_evaluation_inputs(ecfg: dict[str, Any], dm: Any) -> Any:
    """The files ``task=evaluate`` reads after sampling, checked before the first score evaluation:
    ``task.compare_to`` and ``task.reference_stats`` (readable, FID keys, the feature network's width).
    Returns the feature network for image data (built once), None for continuous data."""
    if ecfg.get("compare_to"):
        read_compare_to(ecfg["compare_to"])
    if not dm.is_discrete:
        if ecfg.get("reference_stats"):
            raise ConfigError(f"task.reference_stats is for image data; data={dm.name} is scored by sliced "
                              "W2 and MMD against fresh draws: drop task.reference_stats")
        return None
    extractor = feature_network(ecfg, dm)
    if ecfg.get("reference_stats"):
        external_reference(ecfg["reference_stats"], extractor, int(extractor.num_features))
    return extractor


def compare_to(metrics: dict[str, Any], other_path: str | Path, num_std: float = 1.0) -> dict[str, Any]:
    """For each metric with a spread in both runs: the difference, the spread of the difference and whether
    the difference is within it (then the two results cannot be ranked)."""
    path = Path(other_path).expanduser()
    other = read_compare_to(path)
    out: dict[str, Any] = {"other": str(path)}
    for key in ("fid", "kid", "inception_score", "sliced_w2", "mmd"):
        a, b = metrics.get("quality", {}).get(key), other.get("quality", {}).get(key)
        if not (a and b):
            continue
        ra, rb = SpreadResult(tuple(a["values"]), key), SpreadResult(tuple(b["values"]), key)
        try:
            c = compare(ra, rb, num_std)
        except ValueError as err:  # fewer than two seed sets on a side
            out[key] = {"message": str(err)}
            continue
        out[key] = {"difference": c.difference, "spread": c.spread, "within": c.within, "message": c.message}
    return out


def run_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Samples over seed sets from ``ckpt_path`` with ``solver``, their quality metrics and bits/dim."""
    check_keys(cfg, EVALUATE_RULES)
    ecfg = plain(cfg.task)
    if ecfg.get("feature_network") in (None, "auto"):  # the data set's default
        ecfg["feature_network"] = cfg.data.get("_feature_network_")
    run_dir, model, dm = start_from_checkpoint(cfg)
    solver = solver_from_config(cfg)
    if cfg.get("condition") is not None and cfg.condition.kind != "none":  # condition=class|cfg|inpaint|...
        metrics = {"task": "evaluate", "ckpt_path": str(cfg.ckpt_path), "solver": repr(solver),
                   "condition": evaluate_condition(cfg, ecfg, model, solver, dm, run_dir)}
        write_json(run_dir / "metrics.json", metrics)
        return metrics
    seed_sets = evaluation_seed_sets(
        int(ecfg["seed_sets"]), int(cfg.num_samples), int(cfg.seed), cfg.sample_seeds
    )
    extractor = check_evaluation_inputs(ecfg, dm)  # before hours of sampling
    seeds = [s for group in seed_sets for s in group]
    log.info(
        "evaluating %s: %d seed set(s) of %d samples with %r",
        cfg.ckpt_path,
        len(seed_sets),
        len(seed_sets[0]),
        solver,
    )
    x, stats = generate(model, solver, seeds, int(cfg.sample_batch_size), progress=show_progress(cfg))
    hp = model.hparams
    levels, data_range = hp.levels, tuple(hp.data_range)
    bounds = [0]
    for group in seed_sets:
        bounds.append(bounds[-1] + len(group))
    sets = [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    lik = None
    if ecfg.get("likelihood", True):
        lik, _ = evaluate_likelihood(model, dm, LikelihoodSettings.from_config(cfg.likelihood), int(cfg.seed),
                                     progress=show_progress(cfg))
    metrics: dict[str, Any] = {
        "task": "evaluate",
        "ckpt_path": str(cfg.ckpt_path),
        "solver": repr(solver),
        "sampling": dict(stats, seed_sets=len(seed_sets), samples_per_set=len(seed_sets[0])),
    }
    if not is_global_zero():
        return metrics
    if dm.is_discrete:
        metrics["quality"] = image_quality(
            sets, dm, ecfg, levels=levels, data_range=data_range, seed=int(cfg.seed), extractor=extractor
        )
    else:
        metrics["quality"] = toy_quality(sets, dm, seed=int(cfg.seed))
    if lik is not None:
        metrics["likelihood"] = lik
    if ecfg.get("compare_to"):
        metrics["comparison"] = compare_to(metrics, ecfg["compare_to"])
    metrics["files"] = save_samples(
        sets[0], run_dir, levels=levels, data_range=data_range, seeds=seed_sets[0]
    )
    write_json(run_dir / "metrics.json", metrics)
    log_results(build_loggers(cfg, run_dir), metrics, plain(cfg), step=0)  # FID, KID, bits/dim; config
    for line in _summary_lines(metrics):
        log.info("%s", line)
    return metrics


def _summary_lines(metrics: dict[str, Any]) -> list[str]:
    q = metrics.get("quality", {})
    lines = []
    for key in ("fid", "kid", "inception_score", "sliced_w2", "mmd"):
        r = q.get(key)
        if r:
            std = "n/a (one seed set)" if r["std"] is None else f"{r['std']:.4g}"
            lines.append(f"{r['name']}: {r['mean']:.4g} +- {std} over {len(r['values'])} seed set(s)")
    if "memorization" in q:
        m = q["memorization"]
        lines.append(
            f"memorisation: {m['fraction']:.3f} of samples (expected {m['expected']:.3f} for fresh data)"
        )
    if "likelihood" in metrics and "bpd" in metrics["likelihood"]:
        lines.append(f"test bits/dim: {metrics['likelihood']['bpd']:.4f}")
    for c in metrics.get("comparison", {}).values():
        if isinstance(c, dict) and "message" in c:
            lines.append(c["message"])
    return lines
