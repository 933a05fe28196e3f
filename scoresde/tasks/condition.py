"""Controllable generation in the app (``condition=class|cfg|inpaint|colorize`` with ``task=sample`` and
``task=evaluate``): the config group ``conf/condition/`` picks what to condition on;
:mod:`scoresde.conditional` does the math.

* ``class``: classifier guidance with a noise-conditional classifier from ``task=train_classifier``
  (``condition.classifier=<run dir>/classifier.pt``); one row of ``per_class`` samples per label.
* ``cfg``: classifier-free guidance of a class-conditional score model (``model.num_classes=K``).
* ``inpaint`` / ``colorize``: the first ``num_images`` images of the data's test split with a mask
  preset (``half``: bottom half unknown, ``center``: the centre square unknown, ``random``: pixels known
  at ``rate``) or a mask file (``.pt``/``.npy``, True where known, ``(H, W)`` or ``(C, H, W)``);
  colorization knows the gray channel of the paper's decoupling. Each grid row: the input, then
  ``per_image`` completions, then the original.

With ``task=evaluate`` (:func:`evaluate_condition`) each of the ``task.seed_sets`` seed sets holds
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

Every value is reported per seed set with its mean and standard deviation.

Outputs in the run directory: ``condition.png`` (the grid), ``condition.pt`` (tensors) and the
``condition`` entry of ``metrics.json``. Every input is checked before sampling starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from scoresde.conditional import (
    IMPUTATION_METHODS,
    cfg_score,
    class_conditional_score,
    classifier_guided_score,
    colorization_transform,
    impute,
    network_classifier,
    over_channels,
)
from scoresde.evaluation import ClassifierFeatureExtractor, SpreadResult
from scoresde.solvers import ProbabilityFlowODE
from scoresde.train.build import plain
from scoresde.train.distributed import is_global_zero
from scoresde.train.images import save_samples_png

from .common import ConfigError, datamodule_from_config, per_item_seeds
from .evaluate import evaluation_seed_sets, feature_network, image_quality, split_images
from .sample import generate

__all__ = ["KINDS", "completion_errors", "evaluate_condition", "make_mask", "run_condition"]

log = logging.getLogger(__name__)

KINDS = ("none", "class", "cfg", "inpaint", "colorize")
MASK_PRESETS = ("half", "center", "random")


def make_mask(spec: str, shape: tuple[int, ...], rate: float = 0.5, seed: int = 0) -> torch.Tensor:
    """A bool mask (True where known) broadcastable to images of ``shape = (C, H, W)``: a preset or a file."""
    c, h, w = shape
    if spec == "half":
        mask = torch.zeros(1, h, w, dtype=torch.bool)
        mask[:, : h // 2] = True
        return mask
    if spec == "center":
        mask = torch.ones(1, h, w, dtype=torch.bool)
        mask[:, h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = False
        return mask
    if spec == "random":
        if not 0 < float(rate) < 1:
            raise ConfigError(f"condition.rate={rate}: the fraction of known pixels must lie in (0, 1)")
        return torch.rand(1, h, w, generator=torch.Generator().manual_seed(int(seed))) < float(rate)
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise ConfigError(f"condition.mask={spec!r}: neither a preset ({', '.join(MASK_PRESETS)}) "
                          "nor a mask file")
    mask = torch.as_tensor(np.load(path) if path.suffix == ".npy" else torch.load(path, weights_only=True))
    if tuple(mask.shape) not in ((h, w), (c, h, w), (1, h, w)):
        raise ConfigError(f"condition.mask={spec}: a mask of shape {tuple(mask.shape)} does not fit the "
                          f"data; expected (H, W) = ({h}, {w}) or (C, H, W) = ({c}, {h}, {w}), "
                          "True where known")
    return mask.bool().reshape(-1, h, w)


def run_condition(cfg: DictConfig, model, solver, run_dir: Path) -> dict[str, Any]:
    """Conditional sampling (``task=sample``) per ``cfg.condition`` with the checkpoint's ``model``;
    returns its metrics."""
    cond, kind = _condition(cfg, model)
    if kind in ("class", "cfg"):
        x, rows, extra = _guided(cfg, cond, kind, model, solver)
    else:
        x, rows, extra = _inverse(cfg, cond, kind, model, solver)
    return {"kind": kind, **_save(x, rows, cond, extra.pop("tensors"), model, run_dir), **extra}


def evaluate_condition(
    cfg: DictConfig, ecfg: dict[str, Any], model, solver, dm, run_dir: Path
) -> dict[str, Any]:
    """``task=evaluate`` with ``condition=...`` (see the module docstring); ``ecfg``: the ``task`` block
    with the feature network resolved. Returns the ``condition`` entry of ``metrics.json``."""
    cond, kind = _condition(cfg, model)
    if ecfg.get("reference_stats"):
        raise ConfigError("task.reference_stats is the unconditional reference; with condition=... the "
                          "references (per class, or the test split) are computed: drop task.reference_stats")
    if cfg.sample_seeds is not None:
        raise ConfigError("condition=... with task=evaluate draws task.seed_sets seed sets of num_samples; "
                          "drop sample_seeds")
    extractor = feature_network(ecfg, dm)  # a missing network or weights: an error before any sampling
    if kind in ("class", "cfg"):
        x, rows, extra = _evaluate_guided(cfg, ecfg, cond, kind, model, solver, dm, extractor)
    else:
        x, rows, extra = _evaluate_inverse(cfg, ecfg, cond, kind, model, solver, dm, extractor)
    return {"kind": kind, **_save(x, rows, cond, extra.pop("tensors"), model, run_dir), **extra}


def _condition(cfg: DictConfig, model) -> tuple[dict[str, Any], str]:
    cond = plain(cfg.condition)
    kind = cond["kind"]
    if kind not in KINDS:
        raise ConfigError(f"condition.kind={kind!r}: valid kinds are {', '.join(KINDS)}")
    if model.data_shape is None or len(model.data_shape) != 3:
        raise ConfigError(f"condition={kind} needs an image model; this one has data shape "
                          f"{model.data_shape}")
    return cond, kind


def _save(x, rows: int, cond, tensors: dict[str, Any], model, run_dir: Path) -> dict[str, Any]:
    """``condition.png`` (the grid ``x``, ``rows`` images a row) and ``condition.pt``; rank 0 only."""
    if not is_global_zero():
        return {"files": {}}
    hp = model.hparams
    run_dir.mkdir(parents=True, exist_ok=True)
    png = save_samples_png(x, run_dir / "condition.png", levels=hp.levels,
                           data_range=tuple(hp.data_range), nrow=rows)
    pt = run_dir / "condition.pt"
    torch.save({"grid": x, "condition": cond, **tensors}, pt)
    log.info("condition=%s: %s", cond["kind"], png)
    return {"files": {"png": str(png), "pt": str(pt)}}


def _values(cond, key: str, many: bool) -> list[Any]:
    """``condition.<key>`` as a list: one value, or (``task=evaluate``) a list of them."""
    value = cond[key]
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values or (len(values) > 1 and not many):
        raise ConfigError(f"condition.{key}={value}: task=sample takes one value (lists: task=evaluate)")
    return values


def _scales(cond, many: bool) -> list[float]:
    scales = [float(w) for w in _values(cond, "scale", many)]
    if any(not w >= 0 for w in scales):
        raise ConfigError(f"condition.scale={cond['scale']}: guidance scales must be >= 0")
    return scales


def _guidance(cond, kind: str, model) -> tuple[list[int], Callable]:
    """The checked labels of ``condition.labels`` and ``score(y, scale)``, the guided score towards the
    labels ``y``: classifier guidance (``class``) or classifier-free guidance (``cfg``)."""
    if kind == "class":
        from scoresde.train.classifier import load_classifier

        if not cond.get("classifier"):
            raise ConfigError("condition=class needs a classifier: "
                              "condition.classifier=<run dir>/classifier.pt "
                              "(train one with task=train_classifier)")
        try:
            clf, _ = load_classifier(cond["classifier"], map_location=model.device)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"condition.classifier: {err}") from None
        num_classes = clf.num_classes
        classifier = network_classifier(clf, model.sde)

        def score(y, scale):
            return classifier_guided_score(model.score_fn, classifier, y, scale)
    else:
        num_classes = int(getattr(model.net, "num_classes", 0))
        if not num_classes:
            raise ConfigError("condition=cfg needs a class-conditional score model, but this checkpoint has "
                              "no class conditioning (train with model.num_classes=K); use condition=class "
                              "with a classifier instead")
        cond_fn = class_conditional_score(model.net, model.sde, model.hparams.parameterization)

        def score(y, scale):
            return cfg_score(cond_fn, y, scale, model.net.null_label)
    labels = list(range(num_classes)) if cond.get("labels") is None else [int(v) for v in cond["labels"]]
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise ConfigError(f"condition.labels: class {bad[0]} is outside the model's labels "
                          f"0..{num_classes - 1}")
    return labels, score


def _guided(cfg, cond, kind, model, solver):
    """Class-guided or classifier-free-guided samples, one row per label."""
    per_class, (scale,) = int(cond["per_class"]), _scales(cond, many=False)
    if per_class < 1:
        raise ConfigError(f"condition.per_class={per_class} must be >= 1")
    labels, score = _guidance(cond, kind, model)
    y = torch.tensor(labels, device=model.device).repeat_interleave(per_class)
    seeds = per_item_seeds(None, len(y), cfg.seed)
    x = solver.sample(score(y, scale), model.sde, (len(y), *model.data_shape), seeds=seeds,
                      device=model.device, progress=True)
    return x.cpu(), per_class, {"labels": labels, "scale": scale, "nfe": solver.nfe,
                                "tensors": {"samples": x.cpu(), "labels": y.cpu(), "seeds": seeds}}


def _evaluate_guided(cfg, ecfg, cond, kind, model, solver, dm, extractor):
    """Per guidance scale: samples of every label over the seed sets, the feature classifier's accuracy
    and per-class FID/KID with their mean over the classes."""
    labels, score = _guidance(cond, kind, model)
    scales = _scales(cond, many=True)
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
        x, stats = generate(model, solver, seeds, int(cfg.sample_batch_size), progress=True,
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
    return SpreadResult(tuple(means), f"{name} (mean over classes)").to_dict()


def _imputation_setup(cfg, cond, kind, model, solver, many: bool):
    """The checked methods, the channel transform (colorization) or None, the mask and the data module."""
    methods = [str(m) for m in _values(cond, "method", many)]
    for method in methods:
        if method not in IMPUTATION_METHODS:
            raise ConfigError(f"condition.method={method!r}: valid methods are "
                              f"{', '.join(IMPUTATION_METHODS)}")
        if method == "smc" and isinstance(solver, ProbabilityFlowODE):
            raise ConfigError("condition.method=smc needs a stochastic sampler: solver=em or solver=pc")
    shape = tuple(model.data_shape)
    transform = None
    if kind == "colorize":
        if shape[0] != 3:
            raise ConfigError(f"condition=colorize needs 3-channel RGB data; this model's data have "
                              f"{shape[0]} channel(s) (use condition=inpaint)")
        transform = colorization_transform()
        mask = torch.tensor([True, False, False])[:, None, None]
    else:
        mask = make_mask(str(cond["mask"]), shape, cond.get("rate", 0.5), int(cfg.seed))
    dm = datamodule_from_config(cfg)
    if tuple(dm.shape) != shape:
        raise ConfigError(f"data={cfg.data.get('name', '?')} has shape {tuple(dm.shape)} but the model was "
                          f"trained on {shape}")
    return methods, transform, mask.to(model.device), dm


def _test_images(dm, n: int, device) -> torch.Tensor:
    """The first ``n`` test images in model space, as the test loader gives them."""
    images = []
    for batch in dm.test_dataloader():
        images.append(batch[0] if isinstance(batch, list | tuple) else batch)
        if sum(len(b) for b in images) >= n:
            break
    return torch.cat(images)[:n].to(device)


def _complete(cond, method, model, solver, originals, per_image, mask, transform, seeds, batch_size):
    """``per_image`` completions of each original (rows in order), imputed in batches of whole images (the
    rows of one image share an observation, which ``method=smc`` pools)."""
    known = originals.repeat_interleave(per_image, dim=0)
    step = max(1, int(batch_size) // per_image) * per_image
    parts = [impute(solver, model.score_fn, model.sde, known[a:a + step], mask, transform=transform,
                    method=method, seeds=seeds[a:a + step], particles=int(cond.get("particles", 16)),
                    progress=True)
             for a in range(0, len(known), step)]
    return torch.cat(parts), known


def completion_errors(x: torch.Tensor, known: torch.Tensor, mask: torch.Tensor,
                      transform: torch.Tensor | None = None) -> dict[str, float]:
    """How far completions ``x`` are from the originals ``known``: ``rms_unknown`` (the unknown coordinates
    of inpainting; every RGB value for colorization), ``known_max_deviation`` (the known coordinates, in the
    transformed space: 0 for inpainting) and for colorization ``rms_unknown_transformed`` (the unknown
    channels of ``U x``)."""
    u = over_channels(transform, x) if transform is not None else x
    u_true = over_channels(transform, known) if transform is not None else known
    m = mask.expand_as(u)
    out = {"known_max_deviation": float((u - u_true)[m].abs().max()) if m.any() else 0.0}
    if transform is None:
        out["rms_unknown"] = float(((x - known)[~m] ** 2).mean().sqrt())
    else:
        out["rms_unknown"] = float(((x - known) ** 2).mean().sqrt())
        out["rms_unknown_transformed"] = float(((u - u_true)[~m] ** 2).mean().sqrt())
    return out


def _completion_grid(x, originals, per_image: int, mask, transform) -> torch.Tensor:
    """Rows: the input (unknown: black, or no chroma), the ``per_image`` completions, the original."""
    n, shape = len(originals), tuple(originals.shape[1:])
    u_true = over_channels(transform, originals) if transform is not None else originals
    blank = torch.full_like(u_true, -1.0 if transform is None else 0.0)
    shown = torch.where(mask, u_true, blank)
    shown = over_channels(transform.T, shown) if transform is not None else shown
    grid = torch.cat([shown[:, None], x.reshape(n, per_image, *shape), originals[:, None]], dim=1)
    return grid.reshape(-1, *shape).cpu()


def _inverse(cfg, cond, kind, model, solver):
    """Inpainting or colorization of test images; the grid shows input, completions, original."""
    (method,), transform, mask, dm = _imputation_setup(cfg, cond, kind, model, solver, many=False)
    n, per_image = int(cond["num_images"]), int(cond["per_image"])
    if n < 1 or per_image < 1:
        raise ConfigError(f"condition.num_images={n} and condition.per_image={per_image} must be >= 1")
    originals = _test_images(dm, n, model.device)
    seeds = per_item_seeds(None, n * per_image, cfg.seed)
    x, known = _complete(cond, method, model, solver, originals, per_image, mask, transform, seeds,
                         int(cfg.sample_batch_size))
    rmse = completion_errors(x, known, mask, transform)
    rmse = rmse.get("rms_unknown_transformed", rmse["rms_unknown"])
    return _completion_grid(x, originals, per_image, mask, transform), per_image + 2, {
        "method": method, "rmse_unknown": rmse, "num_images": n, "per_image": per_image,
        "tensors": {"samples": x.cpu(), "originals": originals.cpu(), "mask": mask.cpu(), "seeds": seeds}}


def _evaluate_inverse(cfg, ecfg, cond, kind, model, solver, dm, extractor):
    """Per method: completions of the first ``num_samples // per_image`` test images over the seed sets,
    their distance to the originals, the known coordinates' deviation and FID/KID against the test split."""
    methods, transform, mask, _ = _imputation_setup(cfg, cond, kind, model, solver, many=True)
    per_image = int(cond["per_image"])
    n = int(cfg.num_samples) // max(per_image, 1)
    available = dm.num_examples("test")
    if per_image < 1 or not 1 <= n <= available:
        raise ConfigError(f"num_samples={cfg.num_samples} with condition.per_image={per_image} completes "
                          f"{n} test image(s); need 1..{available} (the test split of data={dm.name})")
    originals = _test_images(dm, n, model.device)
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
            x, known = _complete(cond, method, model, solver, originals, per_image, mask, transform, seeds,
                                 int(cfg.sample_batch_size))
            sets.append(x.cpu())
            errors.append(completion_errors(x, known, mask, transform))
        first[method] = sets[0]
        grid.append(_completion_grid(sets[0][: shown * per_image], originals[:shown], per_image, mask,
                                     transform))
        if not is_global_zero():
            continue
        result: dict[str, Any] = {
            "known_max_deviation": max(e["known_max_deviation"] for e in errors),
            **{k: SpreadResult(tuple(e[k] for e in errors), k).to_dict() for k in errors[0]
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
