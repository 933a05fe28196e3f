"""``task=evaluate`` with ``condition=class|cfg|inpaint|colorize|superres|deblur|denoise|sdedit`` (the
conditional building blocks:
:mod:`scoresde.tasks.condition`; the metrics: :mod:`scoresde.tasks.quality`).

Each of the ``task.seed_sets`` seed sets holds
``num_samples`` samples (the seeds of :func:`~scoresde.tasks.evaluate.evaluation_seed_sets`):

* ``class`` / ``cfg``: ``num_samples`` split evenly over the labels, for each guidance scale of
  ``condition.scale`` (one value or a list; the same seeds at every scale). Per scale: the accuracy of the
  data's feature classifier (``data._feature_network_``, e.g. ``digits``) at predicting the requested label,
  and per class FID/KID of that class's samples against that class's ``task.reference_split`` images
  (:func:`~scoresde.tasks.evaluate.image_quality` with ``label``), with their mean over the classes.
* ``inpaint`` / ``colorize``: the first ``num_samples // per_image`` test images, ``per_image`` completions
  each, for each method of ``condition.method`` (one or a list). Per method: the RMS distance of the
  completion to the original (model space, i.e. in units of ``data_range``; over the unknown coordinates
  for inpainting, over all RGB values and, ``rms_unknown_transformed``, over the unknown chroma channels of
  the decoupled space for colorization), the largest deviation of the known coordinates from the
  observation (0 for inpainting; rounding, ~1e-7, through ``U^T`` for colorization) and FID/KID of the
  completions against the test split.

* ``superres`` / ``deblur`` / ``denoise`` / ``sdedit`` (and noisy ``inpaint`` / ``colorize``):
  :func:`~scoresde.tasks.restore.evaluate_restoration` (PSNR, SSIM, measurement consistency, FD/KID).

Every value is reported per seed set with its mean and standard deviation.

Outputs as with ``task=sample``: ``condition.png``, ``condition.pt`` and the ``condition`` entry of
``metrics.json``. Every input is checked before sampling starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from scoresde.evaluation import ClassifierFeatureExtractor
from scoresde.train.distributed import is_global_zero

from .common import ConfigError, show_progress
from .condition import (
    checked_condition,
    complete,
    completion_errors,
    completion_grid,
    guidance,
    guidance_scales,
    imputation_setup,
    save_condition,
    test_images,
)
from .quality import evaluation_seed_sets, feature_network, image_quality, split_images, spread_dict
from .restore import evaluate_restoration, is_restoration
from .sample import generate

__all__ = ["evaluate_condition"]

log = logging.getLogger(__name__)


def evaluate_condition(
    cfg: DictConfig, ecfg: dict[str, Any], model, solver, dm, run_dir: Path
) -> dict[str, Any]:
    """``task=evaluate`` with ``condition=...`` (see the module docstring); ``ecfg``: the ``task`` block
    with the feature network resolved. Returns the ``condition`` entry of ``metrics.json``."""
    cond, kind = checked_condition(cfg, model)
    if ecfg.get("reference_stats"):
        raise ConfigError("task.reference_stats is the unconditional reference; with condition=... the "
                          "references (per class, or the test split) are computed: drop task.reference_stats")
    if cfg.sample_seeds is not None:
        raise ConfigError("condition=... with task=evaluate draws task.seed_sets seed sets of num_samples; "
                          "drop sample_seeds")
    extractor = feature_network(ecfg, dm)  # a missing network or weights: an error before any sampling
    if is_restoration(cond, kind):
        x, rows, extra = evaluate_restoration(cfg, ecfg, cond, kind, model, solver, dm, extractor)
    elif kind in ("class", "cfg"):
        x, rows, extra = _evaluate_guided(cfg, ecfg, cond, kind, model, solver, dm, extractor)
    else:
        x, rows, extra = _evaluate_inverse(cfg, ecfg, cond, kind, model, solver, dm, extractor)
    return {"kind": kind, **save_condition(x, rows, cond, extra.pop("tensors"), model, run_dir), **extra}


def _evaluate_guided(cfg, ecfg, cond, kind, model, solver, dm, extractor):
    """Per guidance scale: samples of every label over the seed sets, the feature classifier's accuracy
    and per-class FID/KID with their mean over the classes."""
    labels, score = guidance(cond, kind, model)
    scales = guidance_scales(cond, many=True)
    per_class = int(cfg.num_samples) // len(labels)
    if per_class < 2:
        raise ConfigError(f"num_samples={cfg.num_samples} split over {len(labels)} label(s) gives "
                          f"{per_class} sample(s) per class; FID needs >= 2: raise num_samples (a seed set)")
    classifies = isinstance(extractor, ClassifierFeatureExtractor)
    if classifies and max(labels) >= extractor.num_classes:
        raise ConfigError(f"condition.labels: class {max(labels)} is outside the labels 0.."
                          f"{extractor.num_classes - 1} of the feature network {extractor.name!r}")
    split = str(ecfg.get("reference_split", "train"))
    if dm.labels(split) is None:
        raise ConfigError(f"data={dm.name} has no class labels: per-class FID needs labelled data")
    few = [c for c in labels if len(split_images(dm, split, c)) < 2]
    if few:
        raise ConfigError(f"class {few[0]} has fewer than 2 images in the {split} split of data={dm.name}")
    seed_sets = evaluation_seed_sets(int(ecfg["seed_sets"]), per_class * len(labels), int(cfg.seed))
    seeds = [s for group in seed_sets for s in group]
    y = torch.tensor(labels).repeat_interleave(per_class).repeat(len(seed_sets))
    cols = min(per_class, max(1, int(cond["per_class"])))
    hp = model.hparams
    results, grid, first = [], [], {}
    for w in scales:
        log.info("condition=%s, scale %g: %d seed set(s) of %d per class for %d label(s)",
                 kind, w, len(seed_sets), per_class, len(labels))
        x, stats = generate(model, solver, seeds, int(cfg.sample_batch_size), progress=show_progress(cfg),
                            score_for=_towards(score, y, w, model.device))
        first[w] = x[: len(seed_sets[0])]
        grid.append(first[w].reshape(len(labels), per_class, *model.data_shape)[:, :cols])
        if not is_global_zero():
            continue
        sets = x.split(len(seed_sets[0]))
        per_label = {
            str(c): image_quality([s[j * per_class:(j + 1) * per_class] for s in sets], dm, ecfg,
                                  levels=hp.levels, data_range=tuple(hp.data_range), seed=int(cfg.seed),
                                  label=c, extractor=extractor)
            for j, c in enumerate(labels)
        }
        result = {"scale": w, **{k: _class_mean(per_label, k) for k in ("accuracy", "fid", "kid")
                                 if k in per_label[str(labels[0])]}}
        results.append({**result, "per_class": per_label, "sampling": stats})
        log.info("scale %g: %s", w,
                 ", ".join(f"{k} {v['mean']:.4g}" for k, v in result.items() if k != "scale"))
    return torch.cat(grid).reshape(-1, *model.data_shape), cols, {
        "labels": labels, "scales": scales, "per_class": per_class, "seed_sets": len(seed_sets),
        "feature_network": extractor.name, "reference_split": split, "results": results,
        **({} if classifies else {"note": f"no accuracy: {extractor.name!r} does not classify the data"}),
        "tensors": {"samples": first, "labels": y[: len(seed_sets[0])], "seeds": seed_sets[0]}}


def _towards(score: Callable, y: torch.Tensor, scale: float, device) -> Callable:
    """``score_for(indices)`` of :func:`~scoresde.tasks.sample.generate`: guided towards those labels."""
    return lambda indices: score(y[indices].to(device), scale)


def _class_mean(per_label: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    """The mean over classes of a per-class metric, per seed set, with its spread over the seed sets."""
    values = [r[key]["values"] for r in per_label.values()]
    means = [sum(v[k] for v in values) / len(values) for k in range(len(values[0]))]
    name = {"fid": "FID", "kid": "KID"}.get(key, key)
    return spread_dict(means, f"{name} (mean over classes)")


def _evaluate_inverse(cfg, ecfg, cond, kind, model, solver, dm, extractor):
    """Per method: completions of the first ``num_samples // per_image`` test images over the seed sets,
    their distance to the originals, the known coordinates' deviation and FID/KID against the test split."""
    methods, transform, mask, _ = imputation_setup(cfg, cond, kind, model, solver, many=True)
    per_image = int(cond["per_image"])
    n = int(cfg.num_samples) // max(per_image, 1)
    available = dm.num_examples("test")
    if per_image < 1 or not 1 <= n <= available:
        raise ConfigError(f"num_samples={cfg.num_samples} with condition.per_image={per_image} completes "
                          f"{n} test image(s); need 1..{available} (the test split of data={dm.name})")
    originals = test_images(dm, n, model.device)
    seed_sets = evaluation_seed_sets(int(ecfg["seed_sets"]), n * per_image, int(cfg.seed))
    shown = min(n, max(1, int(cond["num_images"])))
    hp = model.hparams
    test_ecfg = dict(ecfg, reference_split="test")
    results, grid, first = {}, [], {}
    for method in methods:
        log.info("condition=%s, method %s: %d seed set(s) of %d test image(s) x %d", kind, method,
                 len(seed_sets), n, per_image)
        sets, errors = [], []
        for seeds in seed_sets:
            x, known = complete(cond, method, model, solver, originals, per_image, mask, transform, seeds,
                                 int(cfg.sample_batch_size), progress=show_progress(cfg))
            sets.append(x.cpu())
            errors.append(completion_errors(x, known, mask, transform))
        first[method] = sets[0]
        grid.append(completion_grid(sets[0][: shown * per_image], originals[:shown], per_image, mask,
                                     transform))
        if not is_global_zero():
            continue
        result: dict[str, Any] = {
            "known_max_deviation": max(e["known_max_deviation"] for e in errors),
            **{k: spread_dict([e[k] for e in errors], k) for k in errors[0]
               if k != "known_max_deviation"},
        }
        if n * per_image >= 2:
            result["quality"] = image_quality(sets, dm, test_ecfg, levels=hp.levels,
                                              data_range=tuple(hp.data_range), seed=int(cfg.seed),
                                              extractor=extractor, memorization_check=False)
        results[method] = result
        log.info("method %s: RMS %.4g, known max deviation %.3g", method, result["rms_unknown"]["mean"],
                 result["known_max_deviation"])
    return torch.cat(grid), per_image + 2, {
        "methods": results, "num_images": n, "per_image": per_image, "seed_sets": len(seed_sets),
        "data_range": list(hp.data_range), "feature_network": extractor.name,
        "tensors": {"samples": first, "originals": originals.cpu(), "mask": mask.cpu(),
                    "seeds": seed_sets[0]}}
